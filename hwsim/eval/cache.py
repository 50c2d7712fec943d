"""The hwsim cache directory and atomic directory writes.

The cache (``$HWSIM_CACHE``, default ``~/.cache/hwsim``) holds converted model checkpoints
(``models/<name>/``) and unpacked corpora (``corpora/<name>/``). Every entry is written into a
temporary sibling directory and renamed into place, so an interrupted write never leaves a
half-written entry that a later run would load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cache_dir", "atomic_dir", "MissingResourceError"]


class MissingResourceError(FileNotFoundError):
    """A model or corpus is not available locally; the message says which command fetches it."""


def cache_dir(*parts: str) -> Path:
    """``$HWSIM_CACHE`` (default ``~/.cache/hwsim``) joined with ``parts``; not created."""
    root = os.environ.get("HWSIM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hwsim")
    return Path(root).joinpath(*parts)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; rename it to ``target`` on success.

    On an exception (or interruption) the temporary directory is removed and ``target`` is left
    untouched. If another process created ``target`` meanwhile, its copy is kept and ours dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the entry should not be
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            # lost a race with a concurrent writer: its complete copy stays
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
