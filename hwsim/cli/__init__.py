"""The ``hwsim`` console script: one sub-command group per module (formats, cost, quantize, ...)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines ``register(subparsers)`` and sets ``func`` on the parsers it adds.
_COMMAND_MODULES = (
    "hwsim.cli.formats_cmd",
    "hwsim.cli.matmul_cmd",
    "hwsim.cli.cost_cmd",
    "hwsim.cli.eval_cmd",
    "hwsim.cli.quant_cmd",
    "hwsim.cli.study_cmd",
    "hwsim.cli.report_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    from ._args import with_examples

    parser = argparse.ArgumentParser(
        prog="hwsim", description="Quantized-LLM accuracy and silicon cost co-design: number formats, the exact "
                                  "matmul, the cost model, quantization, evaluation and design-space studies.",
        **with_examples("hwsim demo                      # the main job: the default study and its report",
                        "hwsim formats list", "hwsim cost model --model smollm2-135m --w mxint4 --a mxint8",
                        "hwsim COMMAND --help            # each command's options and examples"))
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from hwsim.quant.threads import prefer_workqueue

    prefer_workqueue()  # before any numba kernel launches its threads (hwsim.quant.threads)
    from hwsim.formats.compile_notice import announce_compilation

    announce_compilation()  # a first-run compilation of the kernels is announced, not silent
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into `head` and closed: exit quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError) as exc:  # user errors (OSError: files and directories), never a traceback
        print(f"hwsim: error: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
