"""Shared pieces of the sub-command parsers: integer bounds checked by argparse (a usage error,
exit status 2, naming the option, the value and what is valid) and the "Examples" epilog."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any, Callable

__all__ = ["int_at_least", "int_in", "with_examples", "HelpFormatter"]


def int_in(lo: int, hi: int | None = None, *, note: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``lo..hi`` (``hi=None``: no upper bound).

    argparse reports a bad value as ``argument --rows: invalid value '0': expected an integer >= 1``.
    """
    valid = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
    if note:
        valid += f" ({note})"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {valid}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {valid}")
        return v

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse


def int_at_least(lo: int, note: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``lo``."""
    return int_in(lo, None, note=note)


class HelpFormatter(argparse.HelpFormatter):
    """Fills prose paragraphs like argparse's default, keeps indented lines (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in textwrap.dedent(text).strip("\n").split("\n\n"):
            lines = para.splitlines()
            if any(ln.startswith(" ") for ln in lines) or para.rstrip().endswith(":"):
                out.append("\n".join(indent + ln for ln in lines))
            else:
                out.append(textwrap.fill(" ".join(ln.strip() for ln in lines), width,
                                         initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(out)


def with_examples(*examples: str, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for ``add_parser``: an "Examples:" epilog with one command per line
    (a comment after two spaces and ``#`` stays on its line) and the formatter that keeps it."""
    body = "\n".join(f"  {e}" for e in examples)
    kwargs.setdefault("formatter_class", HelpFormatter)
    kwargs["epilog"] = (kwargs.get("epilog", "") + "\n\n" if kwargs.get("epilog") else "") + f"Examples:\n{body}"
    return kwargs
