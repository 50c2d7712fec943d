"""Simulate a yosys gate netlist (``write_json``) in Python (one job: evaluate the synthesized cells).

The netlist holds yosys' internal single-bit cells (``$_AND_``, ``$_MUX_``, ... after ``abc -g``)
and ``$_DFF_P_`` flip-flops. Simulation is bit-parallel: every net is one Python integer whose
bit i is the net's value in test vector i, so one pass over the cells evaluates thousands of
vectors (65 536 for an exhaustive 8 x 8 multiplier). Flip-flop outputs are state: the caller gives
their values (by register name) and reads the next state from their D inputs.

Words are numpy integer arrays (one value per vector); ``signed`` ports are two's complement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: cell type -> function of (inputs by pin name, mask) -> output bit-vector
_GATES = {
    "$_BUF_": lambda p, k: p["A"],
    "$_NOT_": lambda p, k: ~p["A"] & k,
    "$_AND_": lambda p, k: p["A"] & p["B"],
    "$_NAND_": lambda p, k: ~(p["A"] & p["B"]) & k,
    "$_OR_": lambda p, k: p["A"] | p["B"],
    "$_NOR_": lambda p, k: ~(p["A"] | p["B"]) & k,
    "$_XOR_": lambda p, k: p["A"] ^ p["B"],
    "$_XNOR_": lambda p, k: ~(p["A"] ^ p["B"]) & k,
    "$_ANDNOT_": lambda p, k: p["A"] & ~p["B"] & k,
    "$_ORNOT_": lambda p, k: (p["A"] | ~p["B"]) & k,
    "$_MUX_": lambda p, k: (p["B"] & p["S"]) | (p["A"] & ~p["S"] & k),
    "$_NMUX_": lambda p, k: ~((p["B"] & p["S"]) | (p["A"] & ~p["S"])) & k,
    "$_AOI3_": lambda p, k: ~((p["A"] & p["B"]) | p["C"]) & k,
    "$_OAI3_": lambda p, k: ~((p["A"] | p["B"]) & p["C"]) & k,
    "$_AOI4_": lambda p, k: ~((p["A"] & p["B"]) | (p["C"] & p["D"])) & k,
    "$_OAI4_": lambda p, k: ~((p["A"] | p["B"]) & (p["C"] | p["D"])) & k,
}
_DFF = ("$_DFF_P_", "$_DFF_N_")


class NetlistError(ValueError):
    """A netlist the simulator cannot evaluate (unknown cell, combinational loop, missing port)."""


@dataclass
class Netlist:
    """A flattened yosys module: ports, gates in evaluation order, flip-flops."""

    name: str
    ports: dict[str, tuple[str, list]]          # name -> (direction, bits)
    gates: list[tuple[str, dict[str, object], object]]   # (type, input pins -> net, output net)
    dffs: list[tuple[object, object]]            # (D net, Q net)
    netnames: dict[str, list]

    @classmethod
    def from_json(cls, data: dict, top: str | None = None) -> "Netlist":
        mods = data["modules"]
        name = top or next(iter(mods))
        mod = mods[name]
        ports = {p: (v["direction"], v["bits"]) for p, v in mod["ports"].items()}
        gates, dffs = [], []
        for cname, cell in mod["cells"].items():
            t, conn = cell["type"], cell["connections"]
            if t in _DFF:
                if t != "$_DFF_P_":
                    raise NetlistError(f"cell {cname}: only positive-edge flip-flops are simulated ({t})")
                dffs.append((conn["D"][0], conn["Q"][0]))
            elif t in _GATES:
                pins = {p: v[0] for p, v in conn.items() if p != "Y"}
                gates.append((t, pins, conn["Y"][0]))
            else:
                raise NetlistError(f"cell {cname}: type {t} is not a single-bit gate the simulator knows")
        netnames = {n: v["bits"] for n, v in mod.get("netnames", {}).items()}
        return cls(name, ports, _topological(gates, ports, dffs), dffs, netnames)

    @property
    def cell_count(self) -> int:
        return len(self.gates) + len(self.dffs)

    def simulate(self, inputs: dict[str, np.ndarray], state: dict[str, np.ndarray] | None = None,
                 n: int | None = None) -> "SimResult":
        """Evaluate all vectors at once. ``inputs``: port -> values (unsigned view of each word);
        ``state``: register name -> values of its outputs. Missing input ports are an error."""
        state = state or {}
        first = next(iter(inputs.values())) if inputs else next(iter(state.values()))
        n = len(first) if n is None else n
        mask = (1 << n) - 1
        val: dict[object, int] = {"0": 0, "1": mask, "x": 0, "z": 0}
        for name, (direction, bits) in self.ports.items():
            if direction != "input":
                continue
            if name not in inputs:
                if name == "clk":
                    continue
                raise NetlistError(f"input port {name!r} has no values")
            for net, vec in zip(bits, _to_bitvectors(inputs[name], len(bits), n)):
                val[net] = vec
        for name, values in state.items():
            bits = self.netnames.get(name)
            if bits is None:
                raise NetlistError(f"register {name!r} is not a net of the netlist")
            for net, vec in zip(bits, _to_bitvectors(values, len(bits), n)):
                val[net] = vec
        for _, q in self.dffs:
            val.setdefault(q, 0)
        for t, pins, out in self.gates:
            val[out] = _GATES[t]({p: val[v] for p, v in pins.items()}, mask)
        return SimResult(self, val, n)


def _topological(gates, ports, dffs):
    """Gates ordered so that every input is computed before use (Kahn's algorithm)."""
    ready = {"0", "1", "x", "z"}
    for direction, bits in ports.values():
        if direction == "input":
            ready.update(bits)
    ready.update(q for _, q in dffs)
    driver = {out: i for i, (_, _, out) in enumerate(gates)}
    waiting: dict[object, list[int]] = {}
    missing = []
    for i, (_, pins, _) in enumerate(gates):
        need = {v for v in pins.values() if v not in ready}
        for v in need:
            if v not in driver:
                raise NetlistError(f"net {v} feeds a gate but nothing drives it")
            waiting.setdefault(v, []).append(i)
        missing.append(len(need))
    order = [i for i, k in enumerate(missing) if k == 0]
    head = 0
    while head < len(order):
        i = order[head]
        head += 1
        for j in waiting.get(gates[i][2], ()):
            missing[j] -= 1
            if missing[j] == 0:
                order.append(j)
    if len(order) != len(gates):
        raise NetlistError(f"combinational loop: {len(gates) - len(order)} gates never become ready")
    return [gates[i] for i in order]


def _to_bitvectors(values, width: int, n: int) -> list[int]:
    """Per bit of a ``width``-bit port: a Python int whose bit i is that bit in vector i.

    ``values``: one integer per vector (a word), or an (n, L) array of L lanes packed LSB first,
    each ``width // L`` bits (a block of elements on one port)."""
    v = np.asarray(values, dtype=np.int64)
    if v.ndim == 1:
        v = v[:, None]
    if v.shape[0] != n or width % v.shape[1]:
        raise NetlistError(f"values of shape {np.shape(values)} do not fit {n} vectors of a {width}-bit port")
    lane_bits = width // v.shape[1]
    if lane_bits > 62:
        raise NetlistError(f"lanes of {lane_bits} bits: at most 62 bits per lane")
    out = []
    for lane in range(v.shape[1]):
        col = v[:, lane] & ((1 << lane_bits) - 1)
        for b in range(lane_bits):
            bits = ((col >> b) & 1).astype(np.uint8)
            out.append(int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little"))
    return out


def _from_bitvector(vec: int, n: int) -> np.ndarray:
    raw = np.frombuffer(vec.to_bytes((n + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(np.int64)


@dataclass
class SimResult:
    netlist: Netlist
    values: dict
    n: int

    def _word(self, bits: list, signed: bool) -> np.ndarray:
        """Values of a word (int64 up to 62 bits, Python ints in an object array above)."""
        wide = len(bits) > 62
        out = np.zeros(self.n, dtype=object if wide else np.int64)
        for b, net in enumerate(bits):
            bit = _from_bitvector(self.values[net], self.n)
            out = out + (bit.astype(object) << b) if wide else out | (bit << b)
        if signed and bits:
            top = 1 << (len(bits) - 1)
            out = np.where(out >= top if wide else (out & top) != 0, out - (top << 1), out)
        return out

    def output(self, name: str, signed: bool = False, lo: int = 0, width: int | None = None) -> np.ndarray:
        """Values of output port ``name`` (bits lo .. lo+width-1)."""
        direction, bits = self.netlist.ports[name]
        bits = bits[lo:lo + width if width is not None else None]
        return self._word(bits, signed)

    def next_state(self, register: str, signed: bool = False) -> np.ndarray:
        """Values at the D inputs of register ``register``'s flip-flops (its next state)."""
        qbits = self.netlist.netnames[register]
        d_of = {q: d for d, q in self.netlist.dffs}
        return self._word([d_of[q] for q in qbits], signed)
