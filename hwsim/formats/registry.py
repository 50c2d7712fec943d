"""Named presets and the name grammar (formats.md §4): ``get(name)`` and ``format_name(spec)``."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache

from .spec import (BF16_ELEM, BFP_SCALE, E2M1, E2M3, E3M2, E4M3, E5M2, E8M0, FP16_ELEM, FP32_ELEM,
                   UE4M3, BlockSpec, ExpScale, FloatElem, FloatScale, FormatNameError, IntElem,
                   Rounding, Rule, ScaledIntSpec)

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

_MINI = {"fp8_e4m3": E4M3, "fp8_e5m2": E5M2, "fp6_e3m2": E3M2, "fp6_e2m3": E2M3, "fp4_e2m1": E2M1}
_IEEE = {"bf16": BF16_ELEM, "fp16": FP16_ELEM, "fp32": FP32_ELEM}
_SCALE_TYPES = {"sf16": FP16_ELEM, "sbf16": BF16_ELEM, "sf32": FP32_ELEM}
_GRAN_SUFFIX = {"tensor": None, "channel": "ch", "token": "tok"}

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
    """Return the spec for a name (formats.md §4 grammar) or a spec object unchanged."""
    from .spec import BlockSpec as _B, FloatElem as _F, ScaledIntSpec as _S

    if isinstance(name_or_spec, (_B, _F, _S)):
        return name_or_spec
    if isinstance(name_or_spec, str):
        return parse(ALIASES.get(name_or_spec.strip().lower(), name_or_spec))
    raise FormatNameError(f"expected a format name or spec, got {type(name_or_spec).__name__} "
                          f"{name_or_spec!r}; presets: {', '.join(PRESETS)}")


def list_formats() -> list[str]:
    """Canonical names of every preset."""
    return list(PRESETS)


def _round_suffix(spec) -> str:
    return "" if spec.rounding is Rounding.RNE else f"_{spec.rounding.value}"


def _elem_key(elem: FloatElem) -> str | None:
    for key, base in _MINI.items():
        if (base.ebits, base.mbits, base.bias, base.specials, base.subnormals) == (
                elem.ebits, elem.mbits, elem.bias, elem.specials, elem.subnormals):
            return key
    return None


def format_name(spec) -> str:
    """Canonical name of a spec; specs that no name expresses get a descriptive repr."""
    name = _canonical(spec)
    if name is None:
        return f"<{type(spec).__name__} {spec!r}>"
    return name


def _canonical(spec) -> str | None:
    if isinstance(spec, FloatElem):
        for key, base in _IEEE.items():
            if spec == base:
                return key
        key = _elem_key(spec)
        if key is None:
            return None
        return key + ("" if spec.saturate or spec.specials == "none" else "_nosat") + _round_suffix(spec)
    if isinstance(spec, BlockSpec):
        if spec.is_nvfp4:
            return "nvfp4" + _round_suffix(spec) if spec.block_size == 16 and spec.tensor_scale else None
        if spec.tensor_scale is not None:
            return None
        elem = spec.elem
        if isinstance(elem, IntElem) and elem.encoding == "signmag":
            if spec.scale != BFP_SCALE or elem.ie != -(elem.bits - 1) or spec.input_ftz:
                return None
            if spec.rule not in (Rule.CEIL, Rule.FLOOR):
                return None
            return (f"bfp{elem.bits}" + ("" if spec.block_size == 16 else f"_b{spec.block_size}")
                    + ("_floor" if spec.rule is Rule.FLOOR else "") + _round_suffix(spec))
        if isinstance(elem, IntElem):
            if elem.ie != -(elem.bits - 2) or elem.encoding != "twos":
                return None
            base, full = f"mxint{elem.bits}", not elem.symmetric
        else:
            key = _elem_key(elem)
            if key is None or not elem.saturate or elem.rounding is not Rounding.RNE:
                return None
            base, full = "mx" + key, False
        if not isinstance(spec.scale, ExpScale) or not spec.scale.nan:
            return None
        if spec.scale != E8M0:
            if spec.scale.bias != (1 << (spec.scale.bits - 1)) - 1:
                return None
            se = f"_se{spec.scale.bits}"
        else:
            se = ""
        return (base + ("" if spec.block_size == 32 else f"_b{spec.block_size}")
                + ("" if spec.rule is Rule.FLOOR else f"_{spec.rule.value}") + se
                + ("_full" if full else "") + ("_ftz" if spec.input_ftz else "") + _round_suffix(spec))
    if isinstance(spec, ScaledIntSpec):
        stype = {v: k for k, v in _SCALE_TYPES.items()}.get(spec.scale.elem)
        if stype is None or spec.scale.unsigned:
            return None
        gran = f"_g{spec.group_size}" if spec.granularity == "group" else (
            "" if spec.granularity == "tensor" else f"_{_GRAN_SUFFIX[spec.granularity]}")
        clip = ""
        if spec.clip_ratio != 1.0:
            pct = round(spec.clip_ratio * 100)
            if abs(pct / 100.0 - spec.clip_ratio) > 1e-12:
                return None
            clip = f"_c{pct}"
        return (f"int{spec.bits}{gran}" + ("" if spec.symmetric else "_asym")
                + ("_hr" if spec.divisor == "half" else "") + clip
                + ("" if stype == "sf16" else f"_{stype}") + _round_suffix(spec))
    return None
