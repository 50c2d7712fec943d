"""The fixed-point accumulator on the CPU GEMM path (issue 14): the same bits as the numba reference
kernel for case P (vectorized float64 epilogue) and case G (integer epilogue), saturate and wrap,
truncate and RNE, decode and prefill shapes, with and without an operand cache; events complete."""

from __future__ import annotations

import numpy as np
import pytest

import hwsim.formats as F
from hwsim.matmul import AccEvents, OperandCache, matmul, parse_accumulator
from hwsim.matmul import gemm
from hwsim.matmul.operands import prepare

PAIRS = [("mxint8", "mxint4"), ("mxfp8_e4m3", "mxint4"), ("int8_tok", "int4_g128"), ("int8_tok", "int8_ch")]
ACCS = ["fixed:24:8", "fixed:24:8:rne", "fixed:10:2", "fixed:10:2:wrap", "fixed:12:14:wrap:rne", "fixed:40:20"]


@pytest.mark.parametrize("fa,fb", PAIRS)
@pytest.mark.parametrize("acc", ACCS)
@pytest.mark.parametrize("M", [1, 300])
def test_gemm_fixed_equals_reference(fa, fb, acc, M):
    rng = np.random.default_rng(M)
    K, N = 256, 40
    xq = F.quantize((rng.standard_normal((M, K)) * 20).astype(np.float32), fa, axis=-1)
    wq = F.quantize(rng.standard_normal((N, K)).astype(np.float32), fb, axis=-1)
    b = wq.T
    assert gemm.covers(prepare(xq, b), parse_accumulator(acc))
    ref = np.asarray(matmul(xq, b, accumulator=acc, backend="numba"))
    cache, ev = OperandCache(), AccEvents()
    for _ in range(2):
        y = np.asarray(matmul(xq, b, accumulator=acc, operand_cache=cache, events=ev))
        assert np.array_equal(ref.view(np.uint32), y.view(np.uint32))
    assert ev.complete and ev.calls == 2 and ev.outputs == 2 * M * N and ev.adds > 0


def test_nan_scale_gives_nan_outputs_and_counts_them():
    rng = np.random.default_rng(0)
    xq = F.quantize(rng.standard_normal((4, 64)).astype(np.float32), "mxint8", axis=-1)
    wq = F.quantize(rng.standard_normal((8, 64)).astype(np.float32), "mxint4", axis=-1)
    xq.scales[1, 0] = 255          # E8M0 NaN
    ref = np.asarray(matmul(xq, wq.T, accumulator="fixed:24:8", backend="numba"))
    ev = AccEvents()
    y = np.asarray(matmul(xq, wq.T, accumulator="fixed:24:8", events=ev))
    assert np.array_equal(ref.view(np.uint32), y.view(np.uint32))
    assert np.isnan(y[1]).all() and not np.isnan(y[0]).any() and ev.nan_outputs == 8
