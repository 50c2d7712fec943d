"""A bit-level circuit builder that writes structural Verilog (one job: text of a netlist).

A :class:`Module` hands out signals (Verilog expressions naming one bit: ``a[3]``, ``pp_2_1``,
``1'b0``) and gates over them. Every gate becomes one ``wire name = expression;`` line, so the
generated Verilog reads as the structure that was drawn: a full adder is two XORs, two ANDs and
an OR, a multiplier row is a row of full adders. Gates with a constant input are folded here
(``a & 1'b0`` is ``1'b0``), so shifting in zeros or adding a constant writes no dead gates.

Words are lists of signals, least significant bit first. ``register`` adds clocked flip-flops
(the accumulator of a dot-product unit); the netlist simulator treats their outputs as state.
"""

from __future__ import annotations

import re

ZERO = "1'b0"
ONE = "1'b1"
CONST = (ZERO, ONE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def const_bits(value: int, width: int) -> list[str]:
    """``width`` constant signals of ``value`` (two's complement, LSB first)."""
    return [ONE if (value >> i) & 1 else ZERO for i in range(width)]


class Module:
    """One Verilog module under construction (ports, gates, registers)."""

    def __init__(self, name: str, doc: str = ""):
        if not _NAME.fullmatch(name):
            raise ValueError(f"module name {name!r} is not a Verilog identifier")
        self.name = name
        self.doc = doc
        self.ports: list[tuple[str, str, int]] = []   # (direction, name, width)
        self.body: list[str] = []
        self.registers: list[tuple[str, int]] = []   # (name, width)
        self._used: set[str] = set()
        self._count = 0
        self.gates = 0

    # ------------------------------------------------------------------ ports
    def input(self, name: str, width: int) -> list[str]:
        """Declare an input port; its bits, LSB first."""
        self._declare("input", name, width)
        return [f"{name}[{i}]" for i in range(width)]

    def output(self, name: str, bits: list[str]) -> None:
        """Declare an output port driven by ``bits`` (LSB first)."""
        self._declare("output", name, len(bits))
        self.body.append(f"  assign {name} = {{{', '.join(reversed(bits))}}};")

    def _declare(self, direction: str, name: str, width: int) -> None:
        if not _NAME.fullmatch(name) or name in self._used:
            raise ValueError(f"port {name!r}: not a fresh Verilog identifier")
        if width < 1:
            raise ValueError(f"port {name!r}: width {width} < 1")
        self._used.add(name)
        self.ports.append((direction, name, width))

    def section(self, text: str) -> None:
        """A comment line in the generated Verilog (what the following gates build)."""
        self.body.append(f"  // {text}")

    # ------------------------------------------------------------------ gates
    def _wire(self, expr: str, hint: str) -> str:
        self._count += 1
        name = f"{hint}_{self._count}"
        self._used.add(name)
        self.body.append(f"  wire {name} = {expr};")
        self.gates += 1
        return name

    def not_(self, a: str, hint: str = "n") -> str:
        if a in CONST:
            return ONE if a == ZERO else ZERO
        return self._wire(f"~{a}", hint)

    def and_(self, a: str, b: str, hint: str = "and") -> str:
        if ZERO in (a, b):
            return ZERO
        if a == ONE:
            return b
        if b == ONE or a == b:
            return a
        return self._wire(f"{a} & {b}", hint)

    def or_(self, a: str, b: str, hint: str = "or") -> str:
        if ONE in (a, b):
            return ONE
        if a == ZERO:
            return b
        if b == ZERO or a == b:
            return a
        return self._wire(f"{a} | {b}", hint)

    def xor(self, a: str, b: str, hint: str = "xor") -> str:
        if a == ZERO:
            return b
        if b == ZERO:
            return a
        if a == ONE:
            return self.not_(b, hint)
        if b == ONE:
            return self.not_(a, hint)
        if a == b:
            return ZERO
        return self._wire(f"{a} ^ {b}", hint)

    def mux(self, sel: str, a0: str, a1: str, hint: str = "mux") -> str:
        """``sel ? a1 : a0``."""
        if sel == ZERO or a0 == a1:
            return a0
        if sel == ONE:
            return a1
        if a0 == ZERO:
            return self.and_(sel, a1, hint)
        if a1 == ZERO:
            return self.and_(self.not_(sel), a0, hint)
        if a1 == ONE:
            return self.or_(sel, a0, hint)
        if a0 == ONE:
            return self.or_(self.not_(sel), a1, hint)
        return self._wire(f"{sel} ? {a1} : {a0}", hint)

    def or_reduce(self, bits: list[str], hint: str = "any") -> str:
        """OR of all ``bits`` as a balanced tree (``1'b0`` for none)."""
        bits = [b for b in bits if b != ZERO]
        if not bits:
            return ZERO
        while len(bits) > 1:
            nxt = [self.or_(bits[i], bits[i + 1], hint) for i in range(0, len(bits) - 1, 2)]
            if len(bits) % 2:
                nxt.append(bits[-1])
            bits = nxt
        return bits[0]

    def and_reduce(self, bits: list[str], hint: str = "all") -> str:
        """AND of all ``bits`` as a balanced tree (``1'b1`` for none)."""
        return self.not_(self.or_reduce([self.not_(b) for b in bits], hint)) if bits else ONE

    def register(self, name: str, d: list[str]) -> list[str]:
        """A ``len(d)``-bit register clocked by the port ``clk``; returns its outputs (LSB first)."""
        if not any(p[1] == "clk" for p in self.ports):
            self._declare("input", "clk", 1)
        if name in self._used:
            raise ValueError(f"register {name!r}: name in use")
        self._used.add(name)
        self.registers.append((name, len(d)))
        self.body.append(f"  always @(posedge clk) {name} <= {{{', '.join(reversed(d))}}};")
        return [f"{name}[{i}]" for i in range(len(d))]

    # ------------------------------------------------------------------ text
    def verilog(self, header: str = "") -> str:
        """The module as Verilog-2001 text."""
        lines = [f"// {ln}" if ln else "//" for ln in header.splitlines()]
        if self.doc:
            lines += [f"// {ln}" for ln in self.doc.splitlines()]
        decl = []
        for direction, name, width in self.ports:
            rng = f"[{width - 1}:0] " if width > 1 or name != "clk" else ""
            decl.append(f"  {direction} wire {rng}{name}")
        lines.append(f"module {self.name} (")
        lines.append(",\n".join(decl))
        lines.append(");")
        lines += [f"  reg [{w - 1}:0] {n};" for n, w in self.registers]
        lines += self.body
        lines.append("endmodule")
        return "\n".join(lines) + "\n"
