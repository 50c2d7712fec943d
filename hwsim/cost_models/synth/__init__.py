"""hwsim.cost_models.synth: the cost model checked against gate-level synthesis (issue 16).

Structural Verilog of every unit family the cost model prices, synthesized by the open-source
synthesizer yosys (Debian package ``yosys``) to two-input gates, each netlist simulated against its
arithmetic, and the transistor counts used to fit and validate the laws. Nothing here runs when a
model is costed: the counts and the fitted law shapes ship as ``data/synth_counts.toml`` and
``data/gate_laws.toml`` (``hwsim cost synth --refit`` regenerates both).

Modules, one job each (lower layers first):

- ``rtl``: a bit-level circuit builder that writes structural Verilog;
- ``arith``, ``fp``, ``dot``: the structures (adders, multipliers, trees, shifters, comparators,
  leading-zero counters; minifloat multiplier and adder; MAC and block dot-product units);
- ``yosys``: runs the synthesis script, parses ``stat -tech cmos``;
- ``netsim``: evaluates a yosys JSON gate netlist bit-parallel in Python;
- ``reference``: the arithmetic each unit must equal;
- ``catalog``: the unit families (build, test vectors, expected outputs, the model's price);
- ``flow``: synthesize + self-check one unit or all of them (``refit``);
- ``fit``: law shapes from the counts; ``data``: the two data files; ``validate``: the
  validation table; ``report``: its text; ``cli``: ``hwsim cost synth``.
"""

from .catalog import FAMILIES, GENERATOR_VERSION, SelfCheckError, UnitSpec, default_units, unit

__all__ = ["FAMILIES", "GENERATOR_VERSION", "SelfCheckError", "UnitSpec", "default_units", "unit"]
