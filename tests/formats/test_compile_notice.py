"""A compilation of numba kernels is announced once per process, and only when numba compiles (issue 15)."""

import subprocess
import sys

from hwsim.formats.compile_notice import MESSAGE

_SCRIPT = """
from hwsim.formats.compile_notice import announce_compilation
announce_compilation()
announce_compilation()  # idempotent
import numba
{body}
"""


def _stderr(body: str) -> str:
    p = subprocess.run([sys.executable, "-c", _SCRIPT.format(body=body)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stderr


def test_first_compilation_is_announced_once():
    err = _stderr("f = numba.njit(lambda x: x + 1)\nf(1)\nf(2.0)\ng = numba.njit(lambda x: x * 2)\ng(3)")
    assert err.count(MESSAGE) == 1


def test_nothing_is_printed_without_a_compilation():
    assert MESSAGE not in _stderr("pass")
