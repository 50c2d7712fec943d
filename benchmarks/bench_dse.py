"""Study runner overheads (hwsim.dse), model work excluded.

    python benchmarks/bench_dse.py

1. Runner overhead per design point: a study of 50 accuracy points x 1 hardware point whose
   accuracy worker is replaced by a canned result (the records of a real quantized SmolLM2-sized
   model), so what is timed is planning, costing, and the database transaction per point.
   Target (issue): under 50 ms per design point.
2. Adding 1,000 hardware points to a finished accuracy point: cost them from the stored records
   (no model work) and write them. Target: under 5 s in total. The grid (250 rows x 2 cols x 2
   nodes) is costed by ``ModelCoster.many`` (one ArrayBatch per node, one vectorised cost_model
   call per phase); the old path, one ``cost_model`` call per point and phase, is timed in the same
   run (end to end, and costing alone for 1,000 points), and both must give equal metrics.

Threads: one torch / BLAS / numba thread (the runner's own work is single-threaded Python).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from threadpoolctl import threadpool_limits  # noqa: E402

N_HARDWARE = 1000
W_FORMATS = ["mxint4", "mxint3", "mxint2", "bfp4", "bfp3", "bfp2", "mxint6", "mxint8", "bfp6", "bfp8"]
X_FORMATS = ["mxint8", "bfp8", "mxint6", "bfp6", "none"]
#: 250 x 2 x 2 = N_HARDWARE hardware points; it holds the study's first point (32 x 32 at 7 nm)
HARDWARE_GRID = {"rows": list(range(8, 8 + N_HARDWARE // 4)), "cols": [16, 32], "node_nm": [7, 45]}


def canned_result(point) -> dict:
    """What evaluate_accuracy returns, for a SmolLM2-sized model quantized with the point's formats."""
    import torch
    from transformers import LlamaConfig

    from hwsim.quant import model_records, quantize_model

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    quantize_model(model, "rtn", progress=False)
    return {"status": "ok", "metrics": {"ppl": 30.0, "bits_per_byte": 1.2, "fp_ppl": 25.0},
            "records": [asdict(r) for r in model_records(model)], "model_config": model.config.to_dict(),
            "timings": {}, "warnings": [], "versions": {}, "error": "", "traceback": "", "wall_s": 0.0}


@contextlib.contextmanager
def per_point_costing():
    """The old path: ModelCoster.many costs point by point (one cost_model call per point and phase)."""
    from hwsim.dse.costing import ModelCoster

    vectorised = ModelCoster.many
    ModelCoster.many = lambda self, hardware: [self._one(hw) for hw in hardware]
    try:
        yield
    finally:
        ModelCoster.many = vectorised


def add_hardware(base: dict, tmp: Path, name: str) -> float:
    """Seconds to add N_HARDWARE - 1 hardware points to a study with one finished accuracy point."""
    from hwsim.dse import Study

    one = dict(base, study={"name": name, "db": str(tmp / f"{name}.db")},
               accuracy={"recipes": ["rtn"], "w": ["mxint4"], "x": ["mxint8"]})
    Study.from_dict(one).run(progress=False)
    big = Study.from_dict(dict(one, hardware=HARDWARE_GRID))
    assert len(big.hardware_points()) == N_HARDWARE
    with threadpool_limits(1):
        t = time.perf_counter()
        summary = big.run(progress=False)
        dt = time.perf_counter() - t
    assert summary["recosted"] == 1 and summary["design"] == N_HARDWARE  # the first point is in the grid
    return dt


def main() -> int:
    import hwsim.dse.runner as R
    from hwsim.dse import Study

    tmp = Path(tempfile.mkdtemp())
    base = {"study": {"name": "bench", "db": str(tmp / "bench.db")},
            "protocol": {"model": "smollm2-135m", "n_tokens": 256, "seq_len": 128},
            "accuracy": {"recipes": ["rtn"], "w": W_FORMATS, "x": X_FORMATS},
            "hardware": {"rows": 32, "cols": 32, "node_nm": 7}}
    study = Study.from_dict(base)
    n_acc = len(study.accuracy_points())
    canned = canned_result(None)
    R.evaluate_accuracy = lambda point, **kw: canned  # no model work: the runner's own overhead only
    with threadpool_limits(1):
        t = time.perf_counter()
        summary = study.run(progress=False)
        dt = time.perf_counter() - t
    assert summary["evaluated"] == n_acc == summary["design"]
    print(f"runner overhead: {n_acc} design points in {dt:.2f} s = {1e3 * dt / n_acc:.1f} ms per design point "
          f"(plan + cost of a 30-layer model on one array in two phases + one transaction); target < 50 ms")

    dt_new = add_hardware(base, tmp, "bench1k")
    with per_point_costing():
        dt_old = add_hardware(base, tmp, "bench1k_old")
    print(f"adding {N_HARDWARE - 1} hardware points to a finished accuracy point: {dt_new:.2f} s "
          f"({1e3 * dt_new / (N_HARDWARE - 1):.2f} ms per point, one transaction); target < 5 s; "
          f"old per-point path in this run: {dt_old:.2f} s ({1e3 * dt_old / (N_HARDWARE - 1):.2f} ms per point), "
          f"{dt_old / dt_new:.1f}x")

    # costing alone (no database, no keys): the same 1,000 points, vectorised and one by one
    from hwsim.dse.costing import ModelCoster

    hws = Study.from_dict(dict(base, hardware=HARDWARE_GRID)).hardware_points()
    coster = ModelCoster(canned["records"], canned["model_config"])
    coster.many(hws[:2]), coster(hws[0])  # the workload specs are built once, outside the timings
    with threadpool_limits(1):
        t = time.perf_counter()
        vec = coster.many(hws)
        t_vec = time.perf_counter() - t
        t = time.perf_counter()
        one = [coster(hw) for hw in hws]
        t_one = time.perf_counter() - t
    assert vec == one, "the vectorised path must give the per-point metrics exactly"
    print(f"costing {len(hws)} hardware points (2 phases each, no database): vectorised {t_vec:.3f} s "
          f"({1e3 * t_vec / len(hws):.3f} ms per point), per point {t_one:.2f} s "
          f"({1e3 * t_one / len(hws):.2f} ms per point), {t_one / t_vec:.0f}x; metrics equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
