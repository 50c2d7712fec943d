"""The R lazy-load database reader: hand-built serializations (from the format description in
R Internals) and the real janeaustenr database."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest

from hwsim.eval.rdata import LazyLoadDB, RDataError, RObject, RSymbol, read_rds, unserialize

# --- a tiny XDR writer, independent of the reader -------------------------------------------
NA_INT = -(2**31)


def i32(v):
    return struct.pack(">i", v)


def header(version=2):
    out = b"X\n" + i32(version) + i32(0x040201) + i32(0x020300)
    if version == 3:
        out += i32(5) + b"UTF-8"
    return out


def charsxp(s):
    if s is None:
        return i32(9) + i32(-1)
    b = s.encode("utf-8")
    return i32(9 | (1 << 3) << 12) + i32(len(b)) + b  # UTF8 level bit


def strsxp(vals, attrs=b""):
    flags = 16 | ((1 << 9) if attrs else 0)
    return i32(flags) + i32(len(vals)) + b"".join(charsxp(v) for v in vals) + attrs


def intsxp(vals, attrs=b""):
    flags = 13 | ((1 << 9) if attrs else 0)
    return i32(flags) + i32(len(vals)) + b"".join(i32(v) for v in vals) + attrs


def realsxp(vals):
    return i32(14) + i32(len(vals)) + b"".join(struct.pack(">d", v) for v in vals)


def lglsxp(vals):
    return i32(10) + i32(len(vals)) + b"".join(i32(NA_INT if v is None else int(v)) for v in vals)


def vecsxp(items, attrs=b""):
    flags = 19 | ((1 << 9) if attrs else 0)
    return i32(flags) + i32(len(items)) + b"".join(items) + attrs


NIL = i32(254)


def names_attr(names, first_symbol=True):
    """Attribute pairlist (names = c(...)); the `names` symbol either new or a reference #1."""
    sym = i32(1) + charsxp("names") if first_symbol else i32((1 << 8) | 255)
    return i32(2 | (1 << 10)) + sym + strsxp(names) + NIL


def test_named_int_vector_with_na():
    blob = header() + intsxp([1, NA_INT, -7], attrs=names_attr(["a", "b", "c"]))
    v = unserialize(blob)
    assert isinstance(v, RObject)
    assert v.value == [1, None, -7]
    assert v.attributes == {"names": ["a", "b", "c"]}


def test_version3_list_of_mixed_vectors_and_symbol_reference():
    # `names` is first defined in the inner vector's attributes (read before the outer list's),
    # so the outer list's `names` tag is a REFSXP back to symbol #1
    blob = header(3) + vecsxp([strsxp(["hi", None, "é"]), realsxp([1.5, -2.0]),
                               lglsxp([True, None, False]),
                               intsxp([5, 6], attrs=names_attr(["p", "q"]))],
                              attrs=names_attr(["s", "r", "l", "i"], first_symbol=False))
    v = unserialize(blob)
    assert v.attributes["names"] == ["s", "r", "l", "i"]
    s, r, lg, inner_v = v.value
    assert s == ["hi", None, "é"]
    assert r == [1.5, -2.0]
    assert lg == [True, None, False]
    assert inner_v.value == [5, 6] and inner_v.attributes == {"names": ["p", "q"]}


def test_symbol_and_bad_input():
    assert unserialize(header() + i32(1) + charsxp("x")) == RSymbol("x")
    with pytest.raises(RDataError, match="XDR"):
        unserialize(b"A\n" + header()[2:] + NIL)
    with pytest.raises(RDataError, match="version"):
        unserialize(b"X\n" + i32(9) + i32(0) + i32(0) + NIL)
    with pytest.raises(RDataError, match="truncated"):
        unserialize(header() + i32(9) + i32(100) + b"abc")


def test_lazy_load_db_roundtrip_written_by_hand(tmp_path):
    objs = {"alpha": strsxp(["line one", "", "line three"]), "beta": intsxp([1, 2, 3])}
    rdb = b""
    pos = {}
    for name, ser in objs.items():
        data = header() + ser
        blob = struct.pack(">I", len(data)) + zlib.compress(data)
        pos[name] = (len(rdb), len(blob))
        rdb += blob
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    index = header() + vecsxp(
        [vecsxp([intsxp(list(p)) for p in pos.values()], attrs=names_attr(list(pos))),
         vecsxp([], attrs=b""), lglsxp([True])],
        attrs=names_attr(["variables", "references", "compressed"], first_symbol=False))
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(index))
    db = LazyLoadDB(tmp_path / "Rdata")
    assert db.names() == ["alpha", "beta"]
    assert db.get("alpha") == ["line one", "", "line three"]
    assert db.get("beta") == [1, 2, 3]
    with pytest.raises(KeyError, match="alpha"):
        db.get("gamma")
    # a corrupted blob is detected, not silently decoded
    bad = bytearray(rdb)
    bad[pos["beta"][0] + 3] ^= 0xFF  # the declared length no longer matches
    (tmp_path / "Rdata.rdb").write_bytes(bytes(bad))
    with pytest.raises(RDataError, match="header says"):
        LazyLoadDB(tmp_path / "Rdata").get("beta")


# --- the real janeaustenr database -----------------------------------------------------------
NOVELS = {"emma": 16235, "mansfieldpark": 15349, "northangerabbey": 7856, "persuasion": 8328,
          "prideprejudice": 13030, "sensesensibility": 12624}


def test_real_janeaustenr_database(austen_dir):
    db = LazyLoadDB(austen_dir / "Rdata")
    assert sorted(db.names()) == sorted(NOVELS)
    lines = {n: db.get(n) for n in NOVELS}
    # austen_books() in janeaustenr / tidytext has 73,422 lines in total
    assert sum(len(v) for v in lines.values()) == 73422
    assert {n: len(v) for n, v in lines.items()} == NOVELS
    pp = lines["prideprejudice"]
    assert pp[:3] == ["PRIDE AND PREJUDICE", "", "By Jane Austen"]
    assert pp[9].startswith("It is a truth universally acknowledged, that a single man")
    assert all(isinstance(x, str) for v in lines.values() for x in v)
    index = read_rds(austen_dir / "Rdata.rds")
    assert sorted(index.attributes["names"]) == sorted(NOVELS)
