"""tests/matmul: run Triton kernels in the interpreter when no CUDA GPU is present.

TRITON_INTERPRET must be set before triton compiles anything; hwsim imports triton lazily, so
setting it here (collection time, tests/matmul only) is early enough.
"""

import os

try:
    import torch

    _cuda = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
