"""Every bad input of issue 15 through the real entry point: exit status 2 (usage) or 1 (error), no
traceback, a message naming the argument and, where there is a list, the valid values; and every
sub-command's --help has examples and a help text for each option."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from hwsim.cli import build_parser


def _not_a_checkpoint(tmp_path) -> str:
    d = tmp_path / "not-a-checkpoint"
    d.mkdir()
    return str(d)


def _under_a_file(tmp_path) -> str:
    f = tmp_path / "a-file"
    f.write_text("")
    return str(f / "q")


# (argv, exit status, what stderr must contain: the argument, then the valid values where a list exists)
CASES = [
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--acc", "3"], 1, ["acc='3' (int3)", "17..128"]),
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--acc", "window(2)"], 1, ["acc='window(2)' (int2)", "17..128"]),
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--acc", "-1"], 1, ["accumulator='-1'", "2..128"]),
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--acc", "wide"], 1, ["accumulator='wide'", "'fixed:W[:F]", "window(<W>)"]),
    (["cost", "gemm", "--M", "0", "--K", "64", "--N", "8"], 2, ["--M", "'0'", ">= 1"]),
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--dataflow", "zz"], 1, ["dataflow='zz'", "'ws'"]),
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--node", "0nm"], 1, ["node='0nm'", "range"]),
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--a", "mxint9"], 1, ["mxint9", "mxint8"]),
    (["cost", "model", "--phase", "decode", "--rank", "100000"], 1, ["rank=100000", "1..576"]),
    (["cost", "model", "--phase", "decode", "--rank", "-1"], 2, ["--rank", ">= 0"]),
    (["cost", "lqer-table", "--acc-bits", "0"], 2, ["--acc-bits", "16..64"]),
    (["cost", "lqer-table", "--acc-bits", "1000"], 2, ["--acc-bits", "16..64"]),
    (["cost", "units", "--w", "mxint4"], 2, ["--a"]),
    (["eval", "ppl", "--model", "no-such-model"], 1, ["model='no-such-model'", "smollm2-135m", "gemma3-270m"]),
    (["eval", "ppl", "--model", _not_a_checkpoint], 1, ["not-a-checkpoint", "not a checkpoint", "smollm2-135m"]),
    (["eval", "ppl", "--threads", "-1"], 2, ["--threads", ">= 0"]),
    (["eval", "ppl", "--corpus", "nope"], 1, ["nope", "austen"]),
    (["matmul", "--shape", "100000,100000,100000"], 1, ["--shape", "TiB", "available"]),
    (["matmul", "--shape", "1,2"], 1, ["--shape", "M,K,N"]),
    (["matmul", "--shape", "0,16,16"], 1, ["--shape", ">= 1"]),
    (["formats", "demo", "--rows", "0"], 2, ["--rows", ">= 1"]),
    (["formats", "demo", "--cols", "-3"], 2, ["--cols", ">= 1"]),
    (["demo", "--rows", "0"], 2, ["--rows"]),
    (["formats", "show", "mxint9"], 1, ["mxint9", "mxint8"]),
    (["report", "no-such.db", "--out", "unused"], 1, ["no-such.db"]),
    (["study", "no-such-study.toml"], 1, ["no-such-study.toml"]),
    # hwsim quantize: every argument is checked before the model is loaded
    (["quantize", "--recipe", "l2qer", "--rank", "0"], 1, ["rank=0", "'l2qer'", "valid ranks: 1..min(in, out)"]),
    (["quantize", "--recipe", "l2qer", "--rank", "-2"], 2, ["--rank", ">= 0"]),
    (["quantize", "--model", "no-such-model"], 1, ["no-such-model", "smollm2-135m"]),
    (["quantize", "--eval", "nope"], 1, ["--eval 'nope'", "austen"]),
    (["quantize", "--calib", "nope"], 1, ["--calib 'nope'", "austen"]),
    (["quantize", "--save", _under_a_file], 1, ["a-file"]),
    (["quantize", "--json", "/no/such/dir/out.json"], 1, ["--json", "/no/such/dir"]),
    (["quantize", "--threads", "0"], 2, ["--threads", ">= 1"]),
    (["quantize", "--n-calib", "0"], 2, ["--n-calib", ">= 1"]),
    (["quantize", "--recipe", "gptq", "--opt", "gptq.act_ordr=true"], 1, ["'gptq' has no option 'act_ordr'",
                                                                          "act_order"]),
    (["quantize", "--recipe", "gptq+foo"], 1, ["stage 'foo' is unknown", "rounding:"]),
    (["quantize", "--recipe", "no-such-recipe.toml"], 1, ["no-such-recipe.toml", "does not exist"]),
]


def _id(argv: list) -> str:
    return " ".join(a if isinstance(a, str) else "<dir>" for a in argv)


@pytest.mark.parametrize("argv,code,expect", CASES, ids=[_id(c[0]) for c in CASES])
def test_bad_input(run_cli, tmp_path, argv, code, expect):
    argv = [a(tmp_path) if callable(a) else a for a in argv]
    rc, out, err = run_cli(argv)
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    for e in expect:
        assert e in err, f"{e!r} missing from stderr of `hwsim {' '.join(argv)}`:\n{err}"


@pytest.mark.parametrize("argv,stdout,stderr", [
    (["formats", "show", "int4_g128_asym"], ["divisor 15 ("], []),
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--node", "1nm"], ["energy"],
     ["hwsim: warning: --node 1nm", "below the table (7 nm)", "extrapolated"]),
    (["cost", "units", "--w", "mxint4", "--a", "none"], ["DequantToFP16", "FPMAC"], []),
    (["cost", "units", "--fmt-w", "mxint4", "--fmt-a", "mxint8"], ["BlockDotInt"], []),  # the old spelling
    (["cost", "model", "--phase", "decode", "--a", "none", "--seq", "16"],
     ["totals", "workload: 30 x (q/k/v/o/gate/up/down linears + attention QK^T and PV at fp16, KV-cache reads)",
      "+ lm_head at fp16 on every position (1 row, --head); not costed: embeddings", " ms\n", "mJ\n", " mm²\n",
      "MiB\n"], []),
    (["cost", "model", "--phase", "prefill", "--seq", "16", "--no-attention"],
     ["+ lm_head at fp16 on each sequence's last position (1 row, --head); "
      "not costed: attention (--no-attention), embeddings"], []),
    (["cost", "gemm", "--M", "512", "--K", "4096", "--N", "4096"],
     ["utilization w/ stalls", "DRAM stalls excluded", " ms\n", " mJ\n", " mm²\n"], []),
    (["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--acc", "17"], ["energy"], []),  # the narrowest valid
])
def test_valid_inputs_that_used_to_fail_or_mislead(run_cli, argv, stdout, stderr):
    rc, out, err = run_cli(argv)
    assert rc == 0, err
    for s in stdout:
        assert s in out
    for s in stderr:
        assert s in err


def test_real_entry_point_has_no_traceback():
    """The console script's module, in a subprocess: an error exits 1 with one line, no traceback."""
    p = subprocess.run([sys.executable, "-m", "hwsim.cli", "cost", "gemm", "--M", "8", "--K", "64", "--N", "8",
                        "--acc", "3"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and p.stderr.startswith("hwsim: error: acc='3' (int3)")


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


PARSERS = list(_parsers(build_parser()))
#: parsers whose help is known to lack examples (none left)
PENDING: set[tuple[str, ...]] = set()


@pytest.mark.parametrize("path,parser", [
    pytest.param(path, parser, marks=pytest.mark.xfail(reason="hwsim quantize: examples pending", strict=False))
    if path in PENDING else (path, parser) for path, parser in PARSERS], ids=[" ".join(p) or "hwsim" for p, _ in PARSERS])
def test_help_has_examples_and_every_option_is_explained(path, parser):
    text = parser.format_help()
    assert "Examples:" in text and "xample" in text, f"hwsim {' '.join(path)} --help has no examples"
    assert "``" not in text, "raw reStructuredText in the help"
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"hwsim {' '.join(path)}: {action.option_strings or action.dest} has no help text"


def test_every_command_is_covered():
    names = {p[0] for p, _ in PARSERS if p}
    assert {"formats", "matmul", "cost", "fetch", "eval", "quantize", "study", "demo", "report"} <= names
