"""ArrayBatch: many arrays (rows x cols x dataflow) costed in one vectorised pass, element by element
exactly equal (==, same Python types after .tolist()) to each SystolicArray alone."""

import itertools

import numpy as np
import pytest

from hwsim.cost_models import (
    ArrayBatch, LinearSpec, ModelSpec, SystolicArray, Technology, cost_model, from_config,
)
from hwsim.cost_models.workload import BANDWIDTH_BOUND

ROWS, COLS, DATAFLOWS = (1, 3, 16, 33, 256), (1, 5, 32, 256), ("ws", "os", "is")
GRID = list(itertools.product(ROWS, COLS, DATAFLOWS))


def _batch(base: SystolicArray, grid=GRID) -> ArrayBatch:
    rows, cols, dfs = zip(*grid)
    return base.batch(rows, cols, dfs)


def _element(v, i):
    """Element i of a batch value as a Python number (numbers shared by all arrays as they are)."""
    return v.tolist()[i] if isinstance(v, np.ndarray) else v


def _same(batch_value, i, value, where):
    got = _element(batch_value, i)
    assert got == value and type(got) is type(value), f"{where}: batch {got!r} != one array {value!r}"


def _assert_equal(batch_res, i, res, where):
    for part in ("totals", "area", "area_components", "energy_components"):
        one, many = getattr(res, part), getattr(batch_res, part)
        assert one.keys() == many.keys()
        for k, v in one.items():
            _same(many[k], i, v, f"{where} {part}[{k}]")
    assert batch_res.warnings[i] == res.warnings, where
    assert len(batch_res.rows) == len(res.rows)
    for r_many, r_one in zip(batch_res.rows, res.rows):
        for k, v in r_one.items():
            _same(r_many[k], i, v, f"{where} row {r_one['layer']} {r_one['linear']}[{k}]")


def test_gemm_and_area_equal_each_array():
    base = SystolicArray(8, 8, node="7nm", sram=None)
    b = _batch(base)
    for (m, k, n, a, w, acc, qin) in [(512, 576, 1536, "mxint8", "mxint4", None, True),
                                      (1, 1536, 576, "fp16", "mxint3", None, False),
                                      (7, 64, 3, "int8", "int8", "int24", True),
                                      (64, 96, 200, "mxfp8_e4m3", "mxfp4", None, True)]:
        g = b.gemm(m, k, n, a, w, acc=acc, quantize_input=qin)
        area = b.area(a, w, acc)
        for i, (r, c, d) in enumerate(GRID):
            arr = base.with_(rows=r, cols=c, dataflow=d)
            one = arr.gemm(m, k, n, a, w, acc=acc, quantize_input=qin)
            for f in ("compute_cycles", "stall_cycles", "cycles", "energy_pj", "dram_total_bytes", "macs"):
                _same(getattr(g, f), i, getattr(one, f), f"gemm {f} on {arr}")
            for f in ("energy_breakdown", "dram_bytes"):
                for key, v in getattr(one, f).items():
                    _same(getattr(g, f)[key], i, v, f"gemm {f}[{key}] on {arr}")
            assert (g.a_format, g.w_format) == (one.a_format, one.w_format)
            one_area = arr.area(a, w, acc)
            _same(area.total_um2, i, one_area.total_um2, f"area on {arr}")
            for key, v in one_area.breakdown.items():
                _same(area.breakdown[key], i, v, f"area[{key}] on {arr}")
    assert b.point(7).rows == GRID[7][0] and b.point(7).dataflow == GRID[7][2]
    with pytest.raises(ValueError, match="read-only"):
        g.cycles[0] = 0  # results are read-only: a cached GEMM cannot be changed in place


@pytest.mark.parametrize("spec_kw, cost_kw", [
    ({}, {}),
    ({"phase": "decode", "context": 2048}, {}),
    ({"lowrank": 32}, {}),
    ({"lowrank": 32}, {"lowrank_placement": "shared"}),
    ({"lowrank": 32}, {"lowrank_placement": "shared", "shared_mode": "split"}),
    ({"lowrank": 16, "phase": "decode", "hadamard_down": True}, {}),
    ({"hadamard_down": True}, {"hadamard_impl": "gemm"}),
    ({"hadamard_down": True, "acc": "int24"}, {"overlap_transforms": True, "vector_lanes": 8}),
], ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
@pytest.mark.parametrize("node", ["7nm", "45nm"])
def test_cost_model_on_a_batch_equals_each_array(spec_kw, cost_kw, node):
    spec = from_config("smollm2-135m", "mxint4", "mxint8", include_attention=True, **spec_kw)
    base = SystolicArray(32, 32, node=node)
    many = cost_model(spec, _batch(base), **cost_kw)
    for i, (r, c, d) in enumerate(GRID):
        _assert_equal(many, i, cost_model(spec, base.with_(rows=r, cols=c, dataflow=d), **cost_kw),
                      f"{spec_kw} {cost_kw} {r}x{c} {d}")


def test_widest_pair_is_chosen_per_array():
    """Layers in int8 x int8 (per-column rescalers) and MXINT8 x MXINT8: which PE sizes the array
    depends on its shape, so the batch picks the pair per array (and its area breakdown)."""
    lin = lambda name, K, N, w, x: LinearSpec(name, K, N, w, x)  # noqa: E731
    layers = ((lin("q_proj", 64, 64, "int8", "int8"),), (lin("q_proj", 64, 64, "mxint8", "mxint8"),))
    spec = ModelSpec("two", 2, 64, 128, 4, 4, 16, layers, seq=16)
    base = SystolicArray(4, 4, "ws", sram=None)
    many = cost_model(spec, _batch(base))
    winners = set()
    for i, (r, c, d) in enumerate(GRID):
        arr = base.with_(rows=r, cols=c, dataflow=d)
        _assert_equal(many, i, cost_model(spec, arr), f"{r}x{c} {d}")
        winners.add(arr.area("int8", "int8").total_um2 > arr.area("mxint8", "mxint8").total_um2)
    assert len(winners) == 2, "the grid should hold arrays where each pair is the widest"


def test_bandwidth_bound_warning_per_array():
    spec = from_config("smollm2-135m", "mxint4", "mxint8", phase="decode")
    base = SystolicArray(8, 8, "ws", tech=Technology(dram_bandwidth_gbps=10))
    grid = [(1, 1, "ws"), (64, 64, "os")]
    many = cost_model(spec, _batch(base, grid))
    assert many.warnings == [cost_model(spec, base.with_(rows=r, cols=c, dataflow=d)).warnings for r, c, d in grid]
    assert many.warnings == [[], [BANDWIDTH_BOUND]]


def test_bad_batches():
    base = SystolicArray(4, 4)
    with pytest.raises(ValueError, match="rows"):
        base.batch([4, 0], [4, 4])
    with pytest.raises(ValueError, match="cols"):
        base.batch([4, 4], [4.5, 4])
    with pytest.raises(ValueError, match="dataflow"):
        base.batch([4, 4], [4, 4], ["ws", "xs"])
    with pytest.raises(ValueError, match="length"):
        base.batch([4, 4], [4, 4, 4])
    assert base.batch([4, 8], [4, 8]).dataflows == ("ws", "ws")
    assert len(base.batch([4, 8], [4, 8], "os").with_(rows=2)) == 2
