"""Thread policy (hwsim.quant.threads, issue 17): workqueue layer, one knob, one thread for small calls."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hwsim.quant import threads as T


def test_small_calls_run_on_one_numba_thread():
    numba = pytest.importorskip("numba")
    assert T.numba_threads_for(10) == 1
    assert T.numba_threads_for(T.SMALL_CALL - 1) == 1
    big = T.numba_threads_for(T.SMALL_CALL)
    assert 1 <= big <= min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    with T.numba_threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == old


def test_configure_threads_sets_torch_and_numba_together():
    numba = pytest.importorskip("numba")
    n0, m0 = torch.get_num_threads(), numba.get_num_threads()
    try:
        pol = T.configure_threads(1)
        assert pol["torch_threads"] == 1 and pol["numba_threads"] == 1
        with pytest.raises(ValueError):
            T.configure_threads(0)
    finally:
        torch.set_num_threads(n0)
        numba.set_num_threads(m0)


def test_fake_quant_is_unchanged_by_the_thread_policy():
    from hwsim.quant.qlinear import fake_quant

    x = torch.randn(4, 64)  # small: one numba thread
    y = torch.randn(256, 512)  # large: torch's thread count
    import hwsim.formats as F

    for t in (x, y):
        assert torch.equal(fake_quant(t, "mxint8"), torch.from_numpy(F.fake_quant(t.numpy(), "mxint8", axis=-1)))


_SCRIPT = """
import os, sys
from hwsim.quant.threads import prefer_workqueue, policy
import numpy as np, hwsim.formats as F
from hwsim.quant.qlinear import fake_quant
import torch
prefer_workqueue()
fake_quant(torch.randn(512, 512), "mxint8")  # launches numba's threads
print(policy()["numba_layer"])
"""


@pytest.mark.parametrize("env,expected", [({}, "workqueue"), ({"NUMBA_THREADING_LAYER": "omp"}, "omp")])
def test_numba_layer_is_workqueue_unless_the_user_chose(env, expected):
    e = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    e.update(env, NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=e, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("dim,threads", [(64, 1), (T.CHOLESKY_THREADS_DIM - 1, 1), (T.CHOLESKY_THREADS_DIM, 2)])
def test_cholesky_runs_on_one_thread_below_the_large_dimension(monkeypatch, dim, threads):
    import hwsim.quant.algorithms.gptq as G

    seen = []
    real = torch.linalg.cholesky_ex

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", spy)
    n0 = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        G.prepare_hessian(torch.eye(dim, dtype=torch.float64))
        assert seen == [threads] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n0)
    assert T.torch_threads_for(T.SMALL_DIM + 1) == torch.get_num_threads()
