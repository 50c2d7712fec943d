"""Switch a quantized model between fake and exact emulation, and read its accumulator events.

    from hwsim.quant import quantize_model, set_mode, acc_events
    quantize_model(model, "rtn", ...)                             # fake mode
    set_mode(model, "exact", accumulator="fixed:24:8:saturate:rne")
    result = evaluate(model, tok, "brown", "eval", n_tokens=4096)  # hwsim.eval.perplexity
    table = acc_events(model)                                     # {layer: AccEvents.to_dict()}

``accumulator`` takes the grammar of ``hwsim.matmul.parse_accumulator`` (``"fp32"``, ``"exact"``,
``"fixed:W:F[:saturate|:wrap][:truncate|:rne]"``). Events (saturations, wraps, bits lost) are
counted for fixed-point accumulators only (docs/quant.md, "Exact mode").
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["set_mode", "acc_events", "reset_acc_events", "acc_events_total", "format_acc_events"]


def _qlinears(model: nn.Module):
    from .qlinear import QLinear

    return [(n, m) for n, m in model.named_modules() if isinstance(m, QLinear)]


def set_mode(model: nn.Module, mode: str, accumulator: Any = None) -> int:
    """Set every QLinear of ``model`` to ``mode`` ("fake" or "exact") with exact mode's
    ``accumulator`` (None keeps each layer's). Everything is validated before any layer changes;
    the events of every layer are reset when an accumulator is given. Returns the number of QLinears.
    Raises ValueError when the model has none, or naming the layer that cannot run exact mode."""
    from .qlinear import MODES, check_accumulator

    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not valid; valid: {', '.join(MODES)}")
    acc = None if accumulator is None else check_accumulator(accumulator)
    if acc is not None and mode != "exact" and acc.name != "fp32":
        raise ValueError(f"accumulator {acc.name!r} needs mode 'exact' (fake mode sums in fp32)")
    qls = _qlinears(model)
    if not qls:
        raise ValueError("set_mode: the model has no QLinear (quantize it first: hwsim.quant.quantize_model)")
    if mode == "exact":
        for _, m in qls:
            m.check_exact()
    for _, m in qls:
        m.set_mode(mode, accumulator=acc)
    return len(qls)


def acc_events(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{layer name: AccEvents.to_dict()}`` of every QLinear that counted accumulator events."""
    return {n: m.acc_events.to_dict() for n, m in _qlinears(model) if m.acc_events is not None}


def acc_events_total(model: nn.Module) -> dict[str, Any] | None:
    """The events of all layers summed (``AccEvents.to_dict()``), None when none were counted."""
    from hwsim.matmul.events import AccEvents

    tot = None
    for _, m in _qlinears(model):
        if m.acc_events is not None:
            if tot is None:
                tot = AccEvents()
            tot += m.acc_events
    return None if tot is None else tot.to_dict()


def reset_acc_events(model: nn.Module) -> None:
    for _, m in _qlinears(model):
        m.reset_acc_events()


def format_acc_events(events: dict[str, dict[str, Any]], top: int = 0) -> str:
    """Markdown table of per-layer events (``acc_events``); ``top`` > 0 keeps the layers with the most
    saturations + wraps (then rounded adds)."""
    rows = sorted(events.items(), key=lambda kv: (-(kv[1]["saturations"] + kv[1]["wraps"]), -kv[1]["rounded"]))
    if top > 0:
        rows = rows[:top]
    lines = ["| layer | accumulator | adds | saturations | wraps | rounded | max bits lost | flushed |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in rows:
        lines.append(f"| {name} | {e['accumulator']} | {e['adds']} | {e['saturations']} | {e['wraps']} | "
                     f"{e['rounded']} | {e['max_bits_lost']} | {e['flushed']} |")
    return "\n".join(lines)
