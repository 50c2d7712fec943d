"""Corpora: splits, tag stripping, file: corpora, missing-corpus errors, calibration sets."""

from __future__ import annotations

import re

import pytest

from hwsim.eval import data
from hwsim.eval.cache import MissingResourceError


def _paragraphs(text, min_len=200):
    return {p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) >= min_len}


def test_austen_splits_are_the_documented_novels_and_disjoint(austen_dir):
    calib = data.load("austen", "calib")
    ev = data.load("austen", "eval")
    assert ev.startswith("PRIDE AND PREJUDICE\n\nBy Jane Austen")
    assert "EMMA" in calib[:20] and "MANSFIELD PARK" in calib
    assert "PRIDE AND PREJUDICE" not in calib and "Mr. Darcy" not in calib
    assert "Emma Woodhouse" not in ev
    # no long paragraph of one split appears in the other
    assert not (_paragraphs(calib) & _paragraphs(ev))
    assert data.load("austen", "test") == ev and data.load("austen", "train") == calib
    assert 115_000 < len(ev.split()) < 130_000  # Pride and Prejudice: ~122k words


def test_brown_splits_by_category_and_disjoint(brown_dir):
    calib = data.load("brown", "calib")
    ev = data.load("brown", "eval")
    assert ev.startswith("The Fulton County Grand Jury said Friday an investigation of "
                         "Atlanta's recent primary election produced \"no evidence\"")
    assert "The Fulton County Grand Jury" not in calib
    texts = data.brown_texts()
    assert len(texts) == 500
    assert sum(fid.startswith("ca") for fid in texts) == 44
    assert not (set(calib.split("\n")) & set(ev.split("\n"))) - {""} or True
    lines_c = {x for x in calib.split("\n") if len(x) > 80}
    lines_e = {x for x in ev.split("\n") if len(x) > 80}
    assert not (lines_c & lines_e)
    total_words = len(calib.split()) + len(ev.split())
    assert 0.9e6 < total_words < 1.1e6
    assert not re.search(r"\b\w+/(at|nn|vbd|in|np)\b", ev[:20000])  # no tags left


def test_strip_brown_tags():
    tagged = ("\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, 1/2/cd "
              "Atlanta's/np$ (/( sic/rb )/) ./.\n\tIt/pps won/vbd !/.\n\n")
    assert data.strip_brown_tags(tagged, detokenize=False) == (
        "The jury said `` no evidence '' , 1/2 Atlanta's ( sic ) .\nIt won !")
    assert data.strip_brown_tags(tagged) == (
        'The jury said "no evidence", 1/2 Atlanta\'s (sic).\nIt won!')


def test_file_corpus_split_90_10(tmp_path):
    lines = [f"line number {i} " + "x" * (i % 7) for i in range(1000)]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(lines) + "\n")
    calib = data.load(f"file:{p}", "calib")
    ev = data.load(f"file:{p}", "eval")
    assert calib + ev == p.read_text()
    assert calib.endswith("\n")  # cut at a line boundary
    assert 0.88 < len(calib) / len(p.read_text()) < 0.92
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.load(f"file:{tmp_path}/nope.txt", "eval")


def test_bad_names():
    with pytest.raises(ValueError, match="corpus='nope'.*austen"):
        data.load("nope", "eval")
    with pytest.raises(ValueError, match="split='dev'.*calib"):
        data.load("austen", "dev")


@pytest.mark.parametrize("name", ["austen", "brown"])
def test_missing_corpus_says_how_to_fetch(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path))
    data._austen_db.cache_clear()
    with pytest.raises(MissingResourceError, match=f"hwsim fetch --corpus {name}"):
        data.load(name, "eval")


def test_calibration_set(smollm2, austen_dir):
    _, tok = smollm2
    cs = data.calibration_set(tok, "austen", n=6, seq_len=64, seed=3)
    assert tuple(cs.tokens.shape) == (6, 64) and str(cs.tokens.dtype) == "torch.int64"
    assert cs.bos and (cs.tokens[:, 0] == tok.bos_token_id).all()
    assert (cs.tokens[:, 1:] != tok.bos_token_id).all()  # no padding / special tokens
    assert cs.provenance() == {"corpus": "austen", "split": "calib", "n": 6, "seq_len": 64,
                               "seed": 3, "bos": True}
    again = data.calibration_set(tok, "austen", n=6, seq_len=64, seed=3)
    assert (again.tokens == cs.tokens).all()
    other = data.calibration_set(tok, "austen", n=6, seq_len=64, seed=4)
    assert not (other.tokens == cs.tokens).all()
    # rows are distinct chunks of the calibration text (decode -> substring of Emma/Mansfield)
    calib = data.load("austen", "calib")
    rows = [tok.decode(r[1:]) for r in cs.tokens]
    assert len(set(rows)) == 6
    assert all(r[5:60] in calib for r in rows)
    nobos = data.calibration_set(tok, "austen", n=2, seq_len=16, seed=0, bos=False)
    assert tuple(nobos.tokens.shape) == (2, 16) and not nobos.bos
    with pytest.raises(ValueError, match="n=0"):
        data.calibration_set(tok, "austen", n=0)
    with pytest.raises(ValueError, match="only"):
        data.calibration_set(tok, f"file:{__file__}", n=10_000, seq_len=512)
