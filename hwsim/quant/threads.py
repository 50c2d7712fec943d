"""Thread policy of hwsim's quantization code (issue 17): degrade gracefully on shared cores.

Two thread pools meet in every quantized forward pass: torch's intra-op pool (matmuls) and numba's
(the activation codecs of ``hwsim.formats``, run in every ``QLinear``). With numba's default
OpenMP layer, the OpenMP workers of a parallel codec call keep spinning after it returns and
starve torch's threads when the cores are shared: 3 SmolLM2 blocks of GPTQ took 137.6 s by
default against 51.7 s with ``NUMBA_NUM_THREADS=1`` with two other busy processes (no
difference on an idle machine). The policy:

- **numba layer ``workqueue``** (``prefer_workqueue``, applied when ``hwsim.quant`` or the CLI is
  imported, unless ``NUMBA_THREADING_LAYER`` is set or numba already launched its threads): its
  workers sleep on a semaphore instead of spinning. hwsim calls numba's parallel kernels only from
  the main thread (the matmul's worker threads run serial kernels), which is what workqueue needs.
  Measured on 2 shared cores (load 5): an mxint8 fake-quant of [1024, 576] takes 4-7 ms on 2
  OpenMP threads, 1.6 ms on one, 0.9-1.3 ms with workqueue; a matmul right after it runs 1.7×
  faster with workqueue than after the OpenMP layer.
- **one knob**: ``configure_threads(n)`` sets torch's and numba's thread counts together.
- **per call**: numba kernels on fewer than ``SMALL_CALL`` elements run on one thread
  (``numba_threads(numba_threads_for(size))``; the GPTQ sweep's per-column and per-group calls
  always run on one); GPTQ's factorisations and sweep on inputs up to ``SMALL_DIM`` run on one
  torch thread (``torch_threads(torch_threads_for(dim))``), except Cholesky factorisations from
  ``CHOLESKY_THREADS_DIM`` up (``cholesky_threads_for``); the sweep splits its rows over as many
  Python threads as torch has (``sweep_workers``), each running one-thread kernels and GEMMs with
  no barrier between them; the LAPACK calls hwsim makes through
  scipy (QERA's eigensolver, GPTQ's triangular inverse) run on one BLAS thread
  (``single_thread_blas``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

#: numba codec calls on fewer elements than this run single-threaded (the launch costs more)
SMALL_CALL = 1 << 16

__all__ = ["configure_threads", "numba_threads", "numba_threads_for", "prefer_workqueue", "policy", "SMALL_CALL",
           "SMALL_DIM", "CHOLESKY_THREADS_DIM", "cholesky_threads_for", "SWEEP_ROWS_PER_THREAD", "sweep_workers",
           "single_thread_blas", "torch_threads", "torch_threads_for"]


def _numba():
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return numba


def _launched(numba) -> bool:
    try:
        from numba.np.ufunc import parallel
    except ImportError:  # pragma: no cover
        return True
    return bool(getattr(parallel, "_is_initialized", False))


def prefer_workqueue() -> str | None:
    """Make numba use its ``workqueue`` threading layer (sleeping workers) unless the user chose a
    layer (``NUMBA_THREADING_LAYER``) or numba's threads are already running. Returns the layer
    numba will use (None if unknown)."""
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return os.environ["NUMBA_THREADING_LAYER"]
    numba = _numba()
    if numba is None:
        return None
    if _launched(numba):
        try:
            return numba.threading_layer()
        except ValueError:  # pragma: no cover
            return None
    numba.config.THREADING_LAYER = "workqueue"
    return "workqueue"


def configure_threads(n: int | None = None) -> dict:
    """Use ``n`` threads in torch and numba (default: torch's current count); returns ``policy()``."""
    import torch

    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"threads must be a positive int, got {n!r}")
        torch.set_num_threads(n)
    n = torch.get_num_threads()
    prefer_workqueue()
    numba = _numba()
    if numba is not None:
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    return policy()


def numba_threads_for(size: int) -> int:
    """Threads for a numba call on ``size`` elements: 1 below ``SMALL_CALL``, else torch's count
    (capped by numba's pool)."""
    numba = _numba()
    if numba is None or size < SMALL_CALL:
        return 1
    import torch

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@contextmanager
def numba_threads(n: int):
    """Run numba's parallel kernels on ``n`` threads inside the block (a thread-local setting)."""
    numba = _numba()
    if numba is None:
        yield
        return
    old = numba.get_num_threads()
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    if n == old:
        yield
        return
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)


#: torch ops on matrices up to this dimension (GPTQ's factorisations, the sweep's GEMMs) run on one
#: thread: their OpenMP barriers cost more than the work when the cores are shared (3 SmolLM2
#: blocks: the factorisations took 59 s on 2 threads at load 6, under 2 s on one)
SMALL_DIM = 2048


@contextmanager
def torch_threads(n: int):
    """Run torch's intra-op work on ``n`` threads inside the block."""
    import torch

    old = torch.get_num_threads()
    n = max(1, int(n))
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_threads_for(dim: int) -> int:
    """Threads for a dense factorisation / GEMM of dimension ``dim``: 1 up to ``SMALL_DIM``."""
    import torch

    return 1 if dim <= SMALL_DIM else torch.get_num_threads()


#: rows per thread below which GPTQ's sweep does not split its rows over threads (``sweep_workers``)
SWEEP_ROWS_PER_THREAD = 256


def sweep_workers(rows: int) -> int:
    """Threads for GPTQ's sweep of ``rows`` weight rows: rows are independent, so each thread
    sweeps a row range with one-thread kernels and GEMMs (no barrier between them); as many as
    torch's threads, each with at least ``SWEEP_ROWS_PER_THREAD`` rows."""
    import torch

    return max(1, min(torch.get_num_threads(), rows // SWEEP_ROWS_PER_THREAD))


#: torch's (MKL's) Cholesky from this dimension up runs on all of torch's threads: a blocked
#: factorisation with few synchronisations, it degrades gracefully on shared cores. Measured at
#: n = 1536 (float64, 2 cores): idle 57 ms on one thread, 32 ms on two; with two other busy
#: processes 116 ms on one, 88 ms on two. (OpenBLAS's ``dtrtri`` on two threads took 1.5 s
#: there, so the triangular inverse stays on one: ``single_thread_blas``.)
CHOLESKY_THREADS_DIM = 1024


def cholesky_threads_for(dim: int) -> int:
    """Threads for torch's Cholesky of a ``dim`` x ``dim`` matrix: 1 below ``CHOLESKY_THREADS_DIM``."""
    import torch

    return torch.get_num_threads() if dim >= CHOLESKY_THREADS_DIM else 1


def policy() -> dict:
    """The thread settings in force: torch threads, numba threads and layer, environment."""
    import torch

    numba = _numba()
    layer = None
    if numba is not None:
        layer = numba.config.THREADING_LAYER
        if _launched(numba):
            try:
                layer = numba.threading_layer()
            except ValueError:  # pragma: no cover
                pass
    return {"torch_threads": torch.get_num_threads(),
            "numba_threads": numba.get_num_threads() if numba is not None else None,
            "numba_layer": layer, "small_call": SMALL_CALL,
            "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER",
                                               "OMP_WAIT_POLICY") if k in os.environ}}


_BLAS_CONTROLLER = None  # threadpoolctl.ThreadpoolController, built on first use


@contextmanager
def single_thread_blas():
    """Run the BLAS libraries loaded in the process (scipy's and numpy's OpenBLAS) with one thread
    inside the block, restored afterwards (threadpoolctl; torch's own pool is untouched).

    Measured on a shared 2-core machine: OpenBLAS worker threads alternating with torch's own
    thread pool made ``dsyevr`` calls 3-10x slower and erratic (up to seconds). One thread is
    stable; on an idle machine it is ~1.6x slower than two (0.63 s vs 0.38 s at 2048).
    """
    global _BLAS_CONTROLLER
    from threadpoolctl import ThreadpoolController

    import scipy.linalg  # noqa: F401  (loads scipy's BLAS before the controller looks)

    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    with _BLAS_CONTROLLER.limit(limits=1, user_api="blas"):
        yield
