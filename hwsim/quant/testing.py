"""Tiny randomly initialised transformers models for tests (no hub access).

``tiny_model(kind)`` builds the configuration of docs/spec/algorithms.md §7: 2 blocks, d = 64, H = 4,
H_kv = 2, d_h = 16, m = 192, vocabulary 128. Kinds: ``llama``, ``qwen2``, ``mistral``,
``gemma3``, ``opt``.
"""

from __future__ import annotations

import torch

__all__ = ["tiny_model", "TINY_KINDS"]

TINY_KINDS = ("llama", "qwen2", "mistral", "gemma3", "opt")


def tiny_model(kind: str = "llama", *, seed: int = 0, dtype: torch.dtype = torch.float32, vocab: int = 128,
               layers: int = 2):
    """Return a random ``*ForCausalLM`` of the given kind in eval mode."""
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                  max_position_embeddings=256)
    if kind == "llama":
        cfg = tf.LlamaConfig(intermediate_size=192, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                             **common)
        cls = tf.LlamaForCausalLM
    elif kind == "qwen2":
        cfg = tf.Qwen2Config(intermediate_size=192, num_key_value_heads=2, tie_word_embeddings=True, **common)
        cls = tf.Qwen2ForCausalLM
    elif kind == "mistral":
        cfg = tf.MistralConfig(intermediate_size=192, num_key_value_heads=2, head_dim=16, sliding_window=None,
                               tie_word_embeddings=False, **common)
        cls = tf.MistralForCausalLM
    elif kind == "gemma3":
        cfg = tf.Gemma3TextConfig(intermediate_size=192, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                                  sliding_window=8, **common)
        cls = tf.Gemma3ForCausalLM
    elif kind == "opt":
        cfg = tf.OPTConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                           ffn_dim=192, word_embed_proj_dim=64, max_position_embeddings=256, dropout=0.0,
                           attention_dropout=0.0, do_layer_norm_before=True)
        cls = tf.OPTForCausalLM
    else:
        raise ValueError(f"kind: unknown tiny model {kind!r}; valid: {', '.join(TINY_KINDS)}")
    torch.manual_seed(seed)
    model = cls(cfg).to(dtype).eval()
    # Non-trivial norm gains and biases so that folding tests can fail.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or (kind == "opt" and "layer_norm" in name):
                p.copy_(p + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float32).to(dtype))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g, dtype=torch.float32).to(dtype))
    return model
