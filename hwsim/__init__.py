"""hwsim: hardware/ML co-design toolkit for quantized LLMs.

Layers (see docs and docs/spec/architecture.md): formats -> matmul / cost_models -> quant
-> eval -> dse -> report -> cli.  Sub-packages are imported lazily by their users.
"""

__version__ = "0.1.0"
