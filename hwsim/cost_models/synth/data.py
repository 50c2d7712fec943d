"""The two data files of the gate-level check (one job: read and write them, with provenance).

- ``data/synth_counts.toml``: every synthesized unit (family, parameters, transistors, cells by
  type, test vectors), with the generator version, yosys version, gate set and script;
- ``data/gate_laws.toml``: the law shapes fitted to those counts (``synth.fit``), which
  ``tech.Technology`` reads: the analytic model runs no synthesis.

Both are written by ``hwsim cost synth --refit`` (``write_counts`` / ``write_laws``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
COUNTS_FILE = DATA_DIR / "synth_counts.toml"
LAWS_FILE = DATA_DIR / "gate_laws.toml"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").isalnum() and k.isascii() else _value(k)


def _table(name: str, d: dict) -> list[str]:
    return [f"[{name}]"] + [f"{_key(k)} = {_value(v)}" for k, v in d.items()] + [""]


def provenance() -> dict[str, Any]:
    from . import yosys
    from .catalog import EXHAUSTIVE_BITS, GENERATOR_VERSION, RANDOM_VECTORS

    return {"generator_version": GENERATOR_VERSION, "yosys": yosys.version(), "gates": yosys.GATES,
            "script": yosys.SCRIPT.format(verilog="<unit>.v", top="<unit>", stat="<stat>", netlist="<json>"),
            "transistors": "yosys stat -tech cmos (CMOS transistor estimate per cell type)",
            "self_check": f"gate netlist simulated against the unit's arithmetic: exhaustive up to "
                          f"{EXHAUSTIVE_BITS} input bits, {RANDOM_VECTORS} random vectors above"}


def write_counts(results, path: Path = COUNTS_FILE, prov: dict | None = None) -> None:
    """``results``: flow.UnitResult list (in the catalog's order)."""
    lines = ["# Gate-level counts of the unit families hwsim prices: structural Verilog from",
             "# hwsim.cost_models.synth, synthesized by yosys, every netlist checked against its arithmetic.",
             "# Written by `hwsim cost synth --refit`; do not edit by hand.", ""]
    lines += _table("provenance", prov or provenance())
    for r in results:
        lines += ["[[unit]]", f"name = {_value(r.spec.name)}", f"family = {_value(r.spec.family)}",
                  f"params = {_value(dict(r.spec.params))}", f"transistors = {r.transistors}",
                  f"cells = {r.cell_count}", f"cell_types = {_value(r.cells)}", f"vectors = {r.vectors}",
                  f"exhaustive = {_value(r.exhaustive)}", ""]
    path.write_text("\n".join(lines))


def read_counts(path: Path = COUNTS_FILE) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def write_laws(laws: dict[str, dict], prov: dict, path: Path = LAWS_FILE) -> None:
    lines = ["# Law shapes fitted to the gate-level counts of data/synth_counts.toml (hwsim.cost_models.synth.fit),",
             "# in transistors (yosys `stat -tech cmos`) or dimensionless ratios. tech.Technology scales them to",
             "# um^2 and pJ with the published reference points. Written by `hwsim cost synth --refit`.", ""]
    lines += _table("provenance", prov)
    for name, d in laws.items():
        lines += _table(name, d)
    path.write_text("\n".join(lines))


def read_laws(path: Path = LAWS_FILE) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)
