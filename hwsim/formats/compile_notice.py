"""Say so when numba compiles hwsim's kernels (issue 15): the first call after an install or a code
change compiles them for 25-70 s, which looks like a hang; later runs load them from numba's
on-disk cache and print nothing.

``announce_compilation()`` registers a listener on numba's ``numba:compile`` event, which numba
raises only on a cache miss, and prints one line to stderr at the first one of the process.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["announce_compilation", "MESSAGE"]

MESSAGE = "hwsim: compiling numba kernels (one time, about 30 s; later runs load them from the cache) ..."

_installed = False


def announce_compilation(stream: TextIO | None = None) -> bool:
    """Print ``MESSAGE`` to ``stream`` (default stderr) when numba first compiles in this process.
    Idempotent; returns False where numba's event API is unavailable."""
    global _installed
    if _installed:
        return True
    try:
        from numba.core import event as ev
    except ImportError:  # pragma: no cover - numba is a dependency
        return False

    class _Notice(ev.Listener):
        said = False

        def on_start(self, event) -> None:
            if not self.said:
                self.said = True
                out = stream if stream is not None else sys.stderr
                print(MESSAGE, file=out, flush=True)

        def on_end(self, event) -> None:
            pass

    ev.register("numba:compile", _Notice())
    _installed = True
    return True
