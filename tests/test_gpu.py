"""GPU checks (``-m gpu``; skipped without CUDA): the Triton exact GEMM and the torch CUDA paths
of hwsim.formats give the bits of the CPU references. scripts/gpu_check.sh runs them.

Only numpy, torch and pytest are imported here, so that the file runs on a GPU machine that has
none of the test-only dependencies of the other test files.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.matmul import matmul

# HWSIM_GPU_TEST_DEVICE=cpu runs the same checks on CPU tensors (to check this file without a GPU;
# Triton then runs in its interpreter: set TRITON_INTERPRET=1 too)
DEVICE = os.environ.get("HWSIM_GPU_TEST_DEVICE", "cuda")
SIZE = int(os.environ.get("HWSIM_GPU_TEST_SIZE", "512"))   # the GEMM check's M = K = N
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                                  reason="no CUDA GPU")]

GEMM_PAIRS = [("mxint8", "mxint8"), ("mxint4", "mxint8"), ("mxfp4", "mxfp4"), ("nvfp4", "nvfp4"),
              ("bfp4", "bfp8"), ("int4_g128", "int8_tok")]
FORMATS = ["mxint8", "mxint4", "mxfp8_e4m3", "mxfp4_e2m1", "bfp4", "nvfp4", "int8_ch", "int4_g128_asym",
           "fp8_e4m3", "fp8_e5m2", "bf16"]


def _bits(y) -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    u = np.ascontiguousarray(y, np.float32).view(np.uint32)
    return np.where(np.isnan(y), np.uint32(0x7FC00000), u)


@pytest.mark.parametrize("fa,fb", GEMM_PAIRS, ids=[f"{a}x{b}" for a, b in GEMM_PAIRS])
def test_triton_exact_gemm_equals_numba_512(fa, fb):
    """SIZE^3 (512^3): Triton (where it covers the pair; else the CUDA torch path) and the CUDA torch backend
    equal the numba reference bit for bit."""
    from hwsim.matmul import triton_backend
    from hwsim.matmul.operands import prepare

    rng = np.random.default_rng(1)
    x = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    w = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    a, b = F.quantize(x, fa), F.quantize(w, fb).T
    ta, tb = F.quantize(torch.tensor(x, device=DEVICE), fa), F.quantize(torch.tensor(w, device=DEVICE), fb).T
    ref = _bits(matmul(a, b, backend="numba"))
    if fa.startswith("mxint") and fb.startswith("mxint"):
        assert triton_backend.covers(prepare(ta, tb)), "the Triton path must cover MXINT pairs"
    for be in ("triton", "torch", "auto"):
        np.testing.assert_array_equal(_bits(matmul(ta, tb, backend=be)), ref, err_msg=f"{fa}x{fb} {be}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rounding", [None, "sr"])
def test_formats_cuda_equals_cpu(fmt, rounding):
    """quantize / dequantize / fake_quant on CUDA tensors equal the numpy (numba) codec."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((64, 256)) * np.exp2(rng.integers(-20, 20, (64, 1)))).astype(np.float32)
    x[0, :5] = [0.0, -0.0, 1e-40, -3e38, 2.0 ** -130]
    kw = {} if rounding is None else {"rounding": rounding, "seed": 1234}
    q = F.quantize(x, fmt, **kw)
    qc = F.quantize(torch.tensor(x, device=DEVICE), fmt, **kw)
    assert qc.codes.device.type == DEVICE
    np.testing.assert_array_equal(np.asarray(q.codes), qc.codes.cpu().numpy(), err_msg=f"{fmt} codes")
    if q.scales is not None:
        np.testing.assert_array_equal(np.asarray(q.scales), qc.scales.cpu().numpy(), err_msg=f"{fmt} scales")
    np.testing.assert_array_equal(_bits(q.dequantize()), _bits(qc.dequantize()), err_msg=f"{fmt} dequantize")
    np.testing.assert_array_equal(_bits(F.fake_quant(x, fmt, **kw)),
                                  _bits(F.fake_quant(torch.tensor(x, device=DEVICE), fmt, **kw)),
                                  err_msg=f"{fmt} fake_quant")
