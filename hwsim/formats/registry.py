"""Named presets and the name grammar (docs/spec/formats.md §4): ``get(name)`` and ``format_name(spec)``."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache

from .spec import (_IEEE, _MINI, _SCALE_TYPES, BFP_SCALE, E2M1, E8M0, UE4M3, BlockSpec, ExpScale, FloatElem,
                   FloatScale, FormatNameError, IntElem, Rounding, Rule, ScaledIntSpec, format_name)

PRESETS = (
    "mxint8", "mxint6", "mxint4", "mxint3", "mxint2",
    "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1",
    "nvfp4",
    "bfp2", "bfp3", "bfp4", "bfp5", "bfp6", "bfp7", "bfp8",
    "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1",
    "bf16", "fp16", "fp32",
    "int4_g128", "int4_g128_asym", "int8_ch", "int8_tok", "int8",
)
ALIASES = {"mxfp4": "mxfp4_e2m1", "fp4": "fp4_e2m1"}

GRAMMAR = """\
name   := mx | bfp | "nvfp4" [round] | mini | "bf16" | "fp16" | "fp32" | sint
mx     := "mx" ("int" W | "fp8_e4m3" | "fp8_e5m2" | "fp6_e3m2" | "fp6_e2m3" | "fp4_e2m1" | "fp4")
          ["_b" N] ["_floor" | "_ceil" | "_rceil"] ["_se" N] ["_full"] ["_ftz"] [round]
bfp    := "bfp" W ["_b" N] ["_floor"] [round]
mini   := ("fp8_e4m3" | "fp8_e5m2" | "fp6_e3m2" | "fp6_e2m3" | "fp4_e2m1" | "fp4") ["_nosat"] [round]
sint   := "int" W ["_t" | "_ch" | "_tok" | "_g" N] ["_asym"] ["_hr"] ["_c" P] ["_sf16" | "_sbf16" | "_sf32"] [round]
round  := "_rne" | "_rna" | "_rtz" | "_rdn" | "_sr"        W := 2..8   N >= 1   P := 1..100 (clip = P/100)"""


# Modifier slots: (slot name, regex). Each slot may be filled at most once.
_ROUND = ("round", r"(rne|rna|rtz|rdn|sr)")
_MX_MODS = (("block", r"b(\d+)"), ("rule", r"(floor|ceil|rceil)"), ("se", r"se(\d+)"),
            ("full", r"(full)"), ("ftz", r"(ftz)"), _ROUND)
_BFP_MODS = (("block", r"b(\d+)"), ("rule", r"(floor)"), _ROUND)
_MINI_MODS = (("nosat", r"(nosat)"), _ROUND)
_SINT_MODS = (("gran", r"(t|ch|tok|g\d+)"), ("asym", r"(asym)"), ("hr", r"(hr)"), ("clip", r"c(\d+)"),
              ("stype", r"(sf16|sbf16|sf32)"), _ROUND)


def _error(name: str, token: str, why: str) -> FormatNameError:
    candidates = list(PRESETS) + list(ALIASES)
    close = difflib.get_close_matches(str(name).lower(), candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return FormatNameError(
        f"unknown format name {name!r}: {why} (at {token!r}).{hint}\n"
        f"Presets: {', '.join(PRESETS)} (aliases: "
        f"{', '.join(f'{a}={b}' for a, b in ALIASES.items())}).\nGrammar:\n{GRAMMAR}")


def _parse_mods(name: str, tokens: list[str], slots) -> dict[str, str]:
    found: dict[str, str] = {}
    for tok in tokens:
        for slot, pattern in slots:
            m = re.fullmatch(pattern, tok)
            if m:
                if slot in found:
                    raise _error(name, tok, f"modifier slot '{slot}' given twice")
                found[slot] = m.group(1)
                break
        else:
            raise _error(name, tok, "modifier not allowed here")
    return found


def _int_in(name: str, text: str, lo: int, hi: int | None, what: str) -> int:
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise _error(name, text, f"{what} must be {rng}")
    return value


def _rounding(mods) -> Rounding:
    return Rounding(mods.get("round", "rne"))


@lru_cache(maxsize=None)
def parse(name: str):
    """Parse a format name (case-insensitive) into a spec. Raises FormatNameError."""
    if not isinstance(name, str) or not name:
        raise _error(name, str(name), "expected a non-empty string")
    low = name.strip().lower()
    tokens = low.split("_")
    head = tokens[0]
    if low in _IEEE:
        return _IEEE[low]

    def split_elem(prefix: str):
        """Element part of mx*/fp* names: returns (canonical elem key, remaining tokens)."""
        fam = head[len(prefix):]
        if fam in ("fp8", "fp6"):
            if len(tokens) < 2 or f"{fam}_{tokens[1]}" not in _MINI:
                variants = [k for k in _MINI if k.startswith(fam)]
                raise _error(name, head, f"'{prefix}{fam}' is ambiguous or incomplete: "
                             f"use one of {[prefix + v for v in variants]}")
            return f"{fam}_{tokens[1]}", tokens[2:]
        if fam == "fp4":
            if len(tokens) > 1 and tokens[1] == "e2m1":
                return "fp4_e2m1", tokens[2:]
            return "fp4_e2m1", tokens[1:]
        raise _error(name, head, "unknown element type")

    if head.startswith("mxint"):
        w = head[5:]
        if not w.isdigit():
            raise _error(name, head, "expected mxint<W>")
        bits = _int_in(name, w, 2, 8, "W")
        mods = _parse_mods(name, tokens[1:], _MX_MODS)
        elem = IntElem(bits, symmetric="full" not in mods)
        return _mx(name, elem, mods)
    if head.startswith("mxfp"):
        key, rest = split_elem("mx")
        mods = _parse_mods(name, rest, _MX_MODS)
        if "full" in mods:
            raise _error(name, "full", "'_full' applies to MX integer elements only")
        return _mx(name, _MINI[key], mods)
    if head.startswith("bfp"):
        w = head[3:]
        if not w.isdigit():
            raise _error(name, head, "expected bfp<W>")
        bits = _int_in(name, w, 2, 8, "W")
        mods = _parse_mods(name, tokens[1:], _BFP_MODS)
        block = _int_in(name, mods["block"], 1, None, "block size N") if "block" in mods else 16
        rule = Rule.FLOOR if "rule" in mods else Rule.CEIL
        return BlockSpec(IntElem(bits, encoding="signmag", implicit_exp=-(bits - 1)), block,
                         BFP_SCALE, rule, _rounding(mods))
    if head == "nvfp4":
        mods = _parse_mods(name, tokens[1:], (_ROUND,))
        return BlockSpec(E2M1, 16, UE4M3, Rule.RATIO, _rounding(mods), tensor_scale="fp32")
    if head.startswith("fp"):
        key, rest = split_elem("")
        mods = _parse_mods(name, rest, _MINI_MODS)
        base = _MINI[key]
        return FloatElem(base.ebits, base.mbits, base.bias, base.specials,
                         saturate="nosat" not in mods, rounding=_rounding(mods))
    if head.startswith("int"):
        w = head[3:]
        if not w.isdigit():
            raise _error(name, head, "expected int<W>")
        bits = _int_in(name, w, 2, 8, "W")
        mods = _parse_mods(name, tokens[1:], _SINT_MODS)
        gran, group = "tensor", None
        g = mods.get("gran", "t")
        if g == "ch":
            gran = "channel"
        elif g == "tok":
            gran = "token"
        elif g.startswith("g"):
            gran, group = "group", _int_in(name, g[1:], 1, None, "group size N")
        clip = _int_in(name, mods["clip"], 1, 100, "clip percentage P") / 100.0 if "clip" in mods else 1.0
        scale = FloatScale(_SCALE_TYPES[mods.get("stype", "sf16")])
        return ScaledIntSpec(bits, gran, group, symmetric="asym" not in mods,
                             divisor="half" if "hr" in mods else "max", scale=scale,
                             clip_ratio=clip, rounding=_rounding(mods))
    raise _error(name, head, "unknown format family")


def _mx(name: str, elem, mods) -> BlockSpec:
    block = _int_in(name, mods["block"], 1, None, "block size N") if "block" in mods else 32
    rule = Rule(mods.get("rule", "floor"))
    if "se" in mods:
        n = _int_in(name, mods["se"], 2, 8, "scale bits")
        scale = ExpScale(n, (1 << (n - 1)) - 1, True)
    else:
        scale = E8M0
    return BlockSpec(elem, block, scale, rule, _rounding(mods), input_ftz="ftz" in mods)


def get(name_or_spec):
    """Return the spec for a name (docs/spec/formats.md §4 grammar) or a spec object unchanged."""
    if isinstance(name_or_spec, (BlockSpec, FloatElem, ScaledIntSpec)):
        return name_or_spec
    if isinstance(name_or_spec, str):
        return parse(ALIASES.get(name_or_spec.strip().lower(), name_or_spec))
    raise FormatNameError(f"expected a format name or spec, got {type(name_or_spec).__name__} "
                          f"{name_or_spec!r}; presets: {', '.join(PRESETS)}")


def list_formats() -> list[str]:
    """Canonical names of every preset."""
    return list(PRESETS)


__all__ = ["PRESETS", "ALIASES", "GRAMMAR", "get", "parse", "list_formats", "format_name"]
