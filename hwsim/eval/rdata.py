"""A small reader for R's lazy-load databases (``*.rdb`` + ``*.rdx``) — no R needed.

Format (R Internals, "Serialization Formats" and "Lazy loading"):

* ``NAME.rdx`` is a gzip file holding one serialized R list with elements ``variables`` (a named
  list: for each object an integer pair ``(offset, length)`` into the ``.rdb``), ``references``
  and ``compressed`` (TRUE/1 = zlib, 2 = bzip2, 3 = xz).
* ``NAME.rdb`` is the concatenation of the serialized objects. Each blob is a 4-byte big-endian
  uncompressed length, (for types 2 and 3 one byte with the method), then the compressed bytes.
* A serialization is ``"X\\n"`` (XDR, big-endian) followed by three ints (format version, writer
  R version, minimal reader version), for version 3 the native-encoding name, then one item.
  Every item starts with an int of flags: bits 0-7 the SEXP type, bit 8 "is object", bit 9 "has
  attributes", bit 10 "has tag", bits 12-31 the "levels" (CHARSXP encoding bits).

R values map to Python as: character/logical/integer/double/complex/raw vectors -> ``list`` (NA
-> ``None``), lists -> ``list``, pairlists -> ``dict`` keyed by tag, symbols -> ``RSymbol``. A
vector carrying attributes is wrapped in ``RObject(value, attributes)``; ``names`` etc. are in
``attributes``. Enough for data objects (vectors, lists, data frames, factors); closures,
environments and byte code are read structurally only.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RSymbol", "RObject", "RDataError", "unserialize", "read_rds", "LazyLoadDB"]

# SEXP types (R Internals, "SEXPTYPEs") and the serialization pseudo-types.
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP = 7, 8, 9, 10, 13, 14, 15
STRSXP, DOTSXP, VECSXP, EXPRSXP, BCODESXP, EXTPTRSXP, WEAKREFSXP = 16, 17, 19, 20, 21, 22, 23
RAWSXP, S4SXP = 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP = 255, 254, 253, 252, 251
BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP, PERSISTSXP = 250, 249, 248, 247
EMPTYENV_SXP, BASEENV_SXP, ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 242, 241, 240, 239, 238

_NA_INT = -(2**31)
_UTF8_MASK, _LATIN1_MASK, _BYTES_MASK, _ASCII_MASK = 1 << 3, 1 << 2, 1 << 1, 1 << 6


class RDataError(ValueError):
    """The bytes are not a serialization this reader understands."""


@dataclass(frozen=True)
class RSymbol:
    name: str


@dataclass
class RObject:
    """An R value with attributes (e.g. a named vector, a data frame, a factor)."""

    value: Any
    attributes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Special:
    what: str  # "NULL"-like singletons: globalenv, emptyenv, missing arg, ...


class _Reader:
    def __init__(self, data: bytes, persistent=None):
        self.buf = memoryview(data)
        self.pos = 0
        self.refs: list[Any] = []
        self.persistent = persistent

    # -- primitives (XDR = big-endian) --
    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.buf, self.pos)
        self.pos += 4
        return v

    def bytes(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise RDataError(f"truncated serialization: need {n} bytes at offset {self.pos}")
        b = self.buf[self.pos:self.pos + n].tobytes()
        self.pos += n
        return b

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints
            hi, lo = self.int(), self.int()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        if n < 0:
            raise RDataError(f"negative vector length {n}")
        return n

    def string(self) -> str:
        return self.bytes(self.int()).decode("utf-8", "replace")

    # -- header --
    def header(self) -> int:
        magic = self.bytes(2)
        if magic != b"X\n":
            raise RDataError(f"only XDR serializations are supported, got magic {magic!r}")
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            self.string()  # native encoding
        elif version != 2:
            raise RDataError(f"unsupported serialization version {version}")
        return version

    # -- items --
    def item(self) -> Any:
        flags = self.int()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        levels = flags >> 12

        if t == NILVALUE_SXP:
            return None
        if t in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP,
                 BASENAMESPACE_SXP):
            return _Special({EMPTYENV_SXP: "emptyenv", BASEENV_SXP: "baseenv",
                             GLOBALENV_SXP: "globalenv", UNBOUNDVALUE_SXP: "unbound",
                             MISSINGARG_SXP: "missingarg",
                             BASENAMESPACE_SXP: "basenamespace"}[t])
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            if not 1 <= idx <= len(self.refs):
                raise RDataError(f"bad reference index {idx}")
            return self.refs[idx - 1]
        if t == PERSISTSXP:
            names = self.item_strsxp_body()
            obj = self.persistent(names) if self.persistent else _Special(f"persistent:{names}")
            self.refs.append(obj)
            return obj
        if t == SYMSXP:
            sym = RSymbol(self.item() or "")
            self.refs.append(sym)
            return sym
        if t in (NAMESPACESXP, PACKAGESXP):
            names = self.item_strsxp_body()
            obj = _Special(f"{'namespace' if t == NAMESPACESXP else 'package'}:{names}")
            self.refs.append(obj)
            return obj
        if t == ENVSXP:
            env: dict = {}
            self.refs.append(env)  # registered before the contents (they may refer to it)
            self.int()  # locked
            enclos = self.item()
            frame = self.item()
            hashtab = self.item()
            attrs = self.item()
            env.update({"__enclos__": enclos, "__frame__": frame, "__hashtab__": hashtab,
                        "__attributes__": attrs})
            return env
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP):
            return self.pairlist(flags)
        if t == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.bytes(n)
            if levels & _LATIN1_MASK:
                return raw.decode("latin-1")
            if levels & _BYTES_MASK:
                return raw
            return raw.decode("utf-8", "replace")
        if t in (SPECIALSXP, BUILTINSXP):
            return _Special(f"builtin:{self.bytes(self.int()).decode()}")
        if t == ALTREP_SXP:
            info = self.item()
            state = self.item()
            attr = self.item()
            value = _expand_altrep(info, state)
            return self._with_attributes(value, attr) if attr is not None else value

        if t in (LGLSXP, INTSXP):
            n = self.length()
            vals = struct.unpack_from(f">{n}i", self.buf, self.pos)
            self.pos += 4 * n
            if t == LGLSXP:
                value = [None if v == _NA_INT else bool(v) for v in vals]
            else:
                value = [None if v == _NA_INT else v for v in vals]
        elif t == REALSXP:
            n = self.length()
            value = list(struct.unpack_from(f">{n}d", self.buf, self.pos))
            self.pos += 8 * n
        elif t == CPLXSXP:
            n = self.length()
            v = struct.unpack_from(f">{2 * n}d", self.buf, self.pos)
            self.pos += 16 * n
            value = [complex(v[2 * i], v[2 * i + 1]) for i in range(n)]
        elif t == RAWSXP:
            value = self.bytes(self.length())
        elif t == STRSXP:
            value = [self.item() for _ in range(self.length())]
        elif t in (VECSXP, EXPRSXP):
            value = [self.item() for _ in range(self.length())]
        elif t == S4SXP:
            value = _Special("S4")
        elif t in (EXTPTRSXP, WEAKREFSXP):
            obj = _Special("extptr" if t == EXTPTRSXP else "weakref")
            self.refs.append(obj)
            if t == EXTPTRSXP:
                self.item()  # prot
                self.item()  # tag
            value = obj
        elif t == BCODESXP:
            raise RDataError("byte code (BCODESXP) is not supported by this reader")
        else:
            raise RDataError(f"unsupported SEXP type {t} at offset {self.pos - 4}")
        if has_attr:
            return self._with_attributes(value, self.item())
        return value

    def item_strsxp_body(self) -> list:
        if self.int() != 0:
            raise RDataError("malformed persistent/namespace name")
        return [self.item() for _ in range(self.int())]

    def pairlist(self, flags: int) -> Any:
        """Pairlist-shaped items (LISTSXP, LANGSXP, CLOSXP, ...) as a dict keyed by tag."""
        out: dict = {}
        attrs_all: dict = {}
        index = 0
        while True:
            t = flags & 0xFF
            if flags & (1 << 9):
                attrs_all.update(_as_dict(self.item()))
            tag = self.item() if flags & (1 << 10) else None
            car = self.item()
            key = tag.name if isinstance(tag, RSymbol) else (tag if tag is not None else index)
            out[key] = car
            index += 1
            # the CDR: iterate instead of recursing when it is another cell of the same list
            flags = self.int()
            t2 = flags & 0xFF
            if t2 == NILVALUE_SXP:
                break
            if t2 not in (LISTSXP, LANGSXP, DOTSXP) or t != t2:
                self.pos -= 4
                out["__cdr__"] = self.item()
                break
        return RObject(out, attrs_all) if attrs_all else out

    def _with_attributes(self, value: Any, attrs: Any) -> RObject:
        return RObject(value, _as_dict(attrs))


def _as_dict(pl: Any) -> dict:
    if isinstance(pl, RObject):
        pl = pl.value
    return dict(pl) if isinstance(pl, dict) else {}


def _expand_altrep(info: Any, state: Any) -> Any:
    """Expand the ALTREP classes R writes for plain vectors (compact sequences, wrappers)."""
    cls = None
    if isinstance(info, dict) and info:
        first = next(iter(info.values()))
        cls = first.name if isinstance(first, RSymbol) else None
    if cls == "compact_intseq":
        n, start, step = (int(x) for x in state)
        return list(range(start, start + n * step, step))
    if cls == "compact_realseq":
        n, start, step = state
        return [start + i * step for i in range(int(n))]
    if cls in ("wrap_integer", "wrap_real", "wrap_logical", "wrap_string", "wrap_complex",
               "wrap_raw", "wrap_list") and isinstance(state, dict):
        return next(iter(state.values()))
    if cls == "deferred_string" and isinstance(state, dict):
        vals = next(iter(state.values()))
        if isinstance(vals, RObject):
            vals = vals.value
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else
                (str(int(v)) if isinstance(v, (int, float)) and float(v).is_integer() else str(v))
                for v in vals]
    raise RDataError(f"unsupported ALTREP class {cls!r}")


def unserialize(data: bytes, persistent=None) -> Any:
    """Decode one R serialization (XDR format, version 2 or 3) into Python values."""
    r = _Reader(data, persistent)
    r.header()
    return r.item()


def read_rds(path: str | Path) -> Any:
    """Read an ``.rds`` file (serialization, possibly gzip/bzip2/xz compressed)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:3] == b"BZh":
        raw = bz2.decompress(raw)
    elif raw[:6] == b"\xfd7zXZ\x00":
        raw = lzma.decompress(raw)
    return unserialize(raw)


class LazyLoadDB:
    """``LazyLoadDB(".../data/Rdata")``: reads ``Rdata.rdx``, fetches objects from ``Rdata.rdb``."""

    def __init__(self, base: str | Path):
        base = Path(base)
        if base.suffix in (".rdb", ".rdx"):
            base = base.with_suffix("")
        self.rdb = base.with_suffix(".rdb")
        self.rdx = base.with_suffix(".rdx")
        for p in (self.rdb, self.rdx):
            if not p.is_file():
                raise FileNotFoundError(f"lazy-load database file {p} does not exist")
        index = read_rds(self.rdx)
        if isinstance(index, RObject):
            names = index.attributes.get("names")
            index = dict(zip(names, index.value))
        self._compressed = index.get("compressed")
        if isinstance(self._compressed, list):
            self._compressed = self._compressed[0]
        variables = index["variables"]
        if not isinstance(variables, RObject):
            raise RDataError("index has no named 'variables' list")
        self.index = {name: tuple(pos) for name, pos in
                      zip(variables.attributes["names"], variables.value)}
        refs = index.get("references")
        self._refs = ({n: tuple(p) for n, p in zip(refs.attributes["names"], refs.value)}
                      if isinstance(refs, RObject) else {})

    def names(self) -> list[str]:
        """Object names in the database, in index order."""
        return list(self.index)

    def _blob(self, offset: int, length: int) -> bytes:
        with open(self.rdb, "rb") as f:
            f.seek(offset)
            blob = f.read(length)
        if len(blob) != length:
            raise RDataError(f"{self.rdb}: truncated at offset {offset}")
        (n,) = struct.unpack(">I", blob[:4])
        method = self._compressed
        if method in (True, 1):
            out = zlib.decompress(blob[4:])
        elif method in (2, 3):
            kind = blob[4:5]
            body = blob[5:]
            out = {b"2": bz2.decompress, b"Z": lzma.decompress,
                   b"0": lambda b: b}.get(kind, zlib.decompress)(body)
        elif method in (False, 0, None):
            out = blob[4:]
        else:
            raise RDataError(f"unknown compression {method!r}")
        if len(out) != n:
            raise RDataError(f"{self.rdb}: blob at {offset} decompressed to {len(out)} bytes, "
                             f"header says {n}")
        return out

    def _persistent(self, names: list) -> Any:
        key = names[0] if names else None
        if key in self._refs:
            return unserialize(self._blob(*self._refs[key]), self._persistent)
        return _Special(f"persistent:{names}")

    def get(self, name: str) -> Any:
        """The object called ``name`` (KeyError listing the valid names otherwise)."""
        if name not in self.index:
            raise KeyError(f"{name!r} is not in {self.rdx.name}; valid: {', '.join(self.index)}")
        return unserialize(self._blob(*self.index[name]), self._persistent)
