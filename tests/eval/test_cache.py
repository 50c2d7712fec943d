"""Atomic cache writes: an interrupted write or conversion leaves nothing that later loads."""

from __future__ import annotations

import json

import pytest

from hwsim.eval import cache, models


def test_atomic_dir_commits_on_success(tmp_path):
    target = tmp_path / "a" / "entry"
    with cache.atomic_dir(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        (tmp / "f.txt").write_text("x")
        assert not target.exists()  # nothing visible until the block ends
    assert (target / "f.txt").read_text() == "x"
    assert sorted(p.name for p in target.parent.iterdir()) == ["entry"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_dir_interrupted_leaves_nothing(tmp_path, exc):
    target = tmp_path / "entry"
    with pytest.raises(exc):
        with cache.atomic_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"\0" * 1000)
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_keeps_a_concurrent_complete_copy(tmp_path):
    target = tmp_path / "entry"
    with cache.atomic_dir(target) as tmp:
        (tmp / "mine").write_text("mine")
        target.mkdir()
        (target / "theirs").write_text("theirs")  # another process finished first
    assert sorted(p.name for p in target.iterdir()) == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path))
    assert cache.cache_dir("models", "x") == tmp_path / "models" / "x"
    monkeypatch.delenv("HWSIM_CACHE")
    assert str(cache.cache_dir()).endswith(".cache/hwsim")


def test_interrupted_model_conversion_then_resumed(tmp_path, monkeypatch, tiny_llama, smollm2):
    """Convert a (stand-in) GGUF model into an empty cache, killing the write half-way: no
    checkpoint appears and models.load() does not pick up debris; the next run converts."""
    _, tok = smollm2
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "gguf_path", lambda name, assemble=True: tmp_path / "x.gguf")
    monkeypatch.setattr(models, "_load_gguf", lambda gguf: (tiny_llama, tok))
    real_save = type(tiny_llama).save_pretrained

    def dying_save(self, directory, **kw):
        real_save(self, directory, **kw)  # weights fully written ...
        raise KeyboardInterrupt  # ... killed before the tokenizer and metadata

    monkeypatch.setattr(type(tiny_llama), "save_pretrained", dying_save)
    with pytest.raises(KeyboardInterrupt):
        models.convert("smollm2-135m", progress=False)
    assert not models.cached_checkpoint("smollm2-135m").exists()
    assert not any((tmp_path / "models").iterdir())  # no temporary debris either
    monkeypatch.setattr(type(tiny_llama), "save_pretrained", real_save)
    ckpt = models.convert("smollm2-135m", progress=False)
    meta = json.loads((ckpt / "hwsim_model.json").read_text())
    assert meta["name"] == "smollm2-135m" and meta["prepend_bos"] is True
    model, tok2 = models.load("smollm2-135m", progress=False)
    assert model.config.hidden_size == 64  # the stand-in, reloaded from the cache
    assert tok2.hwsim_prepend_bos is True
