"""Run the open-source synthesizer yosys on one module (one job: Verilog text -> gate netlist + counts).

Script (yosys 0.23 and later)::

    read_verilog <file>; synth -flatten -top <top>; abc -g <GATES>; opt_clean
    stat -tech cmos; write_json <netlist>

``synth`` elaborates, optimises and maps to yosys' internal gates; ``abc -g`` re-maps the logic
onto the two-input gate set ``GATES`` (NOT always included) plus the 2:1 mux; ``stat -tech cmos``
counts cells by type and estimates transistors with yosys' CMOS cost table (e.g. NAND/NOR 4,
AND/OR 6, XOR/XNOR/MUX 12, DFF 16). yosys is the Debian package ``yosys``; nothing here runs at
cost-model time, only when units are synthesized (``hwsim cost synth``, ``--refit``, tests).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"
SCRIPT = ("read_verilog {verilog}; synth -flatten -top {top}; abc -g " + GATES + "; opt_clean; "
          "tee -q -o {stat} stat -tech cmos; write_json {netlist}")


class YosysMissing(RuntimeError):
    """yosys is not installed (the message says how to install it)."""


class YosysFailed(RuntimeError):
    """yosys ran and failed (the message holds the end of its log)."""


def yosys_path() -> str:
    """Path of the ``yosys`` executable, or YosysMissing naming the Debian package."""
    path = shutil.which("yosys")
    if path is None:
        raise YosysMissing("yosys is not installed (not on PATH): install the Debian package `yosys` "
                           "(apt-get install -y yosys; scripts/setup.sh installs it) to synthesize units; "
                           "the cost model itself needs no synthesis (it reads data/synth_counts.toml)")
    return path


def available() -> bool:
    return shutil.which("yosys") is not None


@functools.lru_cache(maxsize=1)
def version() -> str:
    """``yosys -V`` without the build hash, e.g. 'Yosys 0.23'."""
    out = subprocess.run([yosys_path(), "-V"], capture_output=True, text=True, check=True).stdout.strip()
    m = re.match(r"(Yosys \S+)", out)
    return m.group(1) if m else out


@dataclass
class Synthesis:
    """What yosys made of one module: cells by type, transistor estimate, the JSON netlist."""

    top: str
    cells: dict[str, int]
    transistors: int
    netlist: dict = field(repr=False)

    @property
    def cell_count(self) -> int:
        return sum(self.cells.values())


_CELL_LINE = re.compile(r"^\s+(\$\S+)\s+(\d+)\s*$")
_TRANSISTORS = re.compile(r"Estimated number of transistors:\s+(\d+)")


def parse_stat(text: str) -> tuple[dict[str, int], int]:
    """(cells by type, transistors) from the text of ``stat -tech cmos``."""
    cells = {m.group(1): int(m.group(2)) for ln in text.splitlines() if (m := _CELL_LINE.match(ln))}
    t = _TRANSISTORS.search(text)
    if t is None:
        raise YosysFailed("stat -tech cmos printed no transistor estimate:\n" + text[-2000:])
    return dict(sorted(cells.items())), int(t.group(1))


def synthesize(verilog: str, top: str, keep: Path | None = None, timeout: float = 600) -> Synthesis:
    """Synthesize ``verilog`` (module ``top``) with the script above; ``keep``: a directory that
    receives the .v, the JSON netlist, the stat text and the log."""
    exe = yosys_path()
    with tempfile.TemporaryDirectory(prefix="hwsim-yosys-") as tmp:
        d = Path(tmp)
        v, stat, net, log = d / f"{top}.v", d / f"{top}.stat.txt", d / f"{top}.json", d / f"{top}.log"
        v.write_text(verilog)
        script = SCRIPT.format(verilog=v, top=top, stat=stat, netlist=net)
        proc = subprocess.run([exe, "-q", "-l", str(log), "-p", script], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0 or not stat.exists():
            tail = (log.read_text() if log.exists() else proc.stdout + proc.stderr)[-3000:]
            raise YosysFailed(f"yosys failed on module {top} (exit {proc.returncode}):\n{tail}")
        cells, transistors = parse_stat(stat.read_text())
        netlist = json.loads(net.read_text())
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for f in (v, stat, net, log):
                shutil.copy(f, keep / f.name)
    return Synthesis(top, cells, transistors, netlist)
