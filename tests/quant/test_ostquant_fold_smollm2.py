"""OSTQuant's exact folds on the real SmolLM2-135M in float64 (docs/spec/algorithms.md §4.5, §7;
marked ``model``: needs the offline zoo, skipped without it)."""

import pytest
import torch
from smollm2_fixtures import one_thread  # noqa: F401 (fixture)
from test_ostquant_fold import SINGLE, norms_in_model_dtype, random_params  # noqa: F401 (fixture)

from hwsim.quant.model import fold_norms
from hwsim.quant.ostquant_fold import add_online_hadamard_hooks, fold_ost

pytestmark = pytest.mark.model


def test_all_transforms_preserve_smollm2_logits():
    """R_res (576 = 36·16, Paley II), S_attn, S_ffn, R_ov/S_ov/S_qk on 3 KV heads of d_h = 64,
    S_up_down and the online Hadamard of 1536 = 12·128 (Paley I) together: logits to 1e-10.
    (~10 s of float64 folding on one thread, mostly the 49152×576 embedding and lm_head.)"""
    models = pytest.importorskip("hwsim.eval.models")
    try:
        model, _ = models.load("smollm2-135m", progress=False)
    except FileNotFoundError as exc:  # MissingResourceError: run scripts/setup.sh
        pytest.skip(f"offline model zoo not available: {exc}")
    model = model.to(torch.float64).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    fold_norms(model)
    ref = model(ids, use_cache=False).logits
    info = fold_ost(model, random_params(model, set(SINGLE), seed=1))
    assert set(info.pre_transforms.values()) == {"hadamard(1536)"} and len(info.pre_transforms) == 30
    hooks = add_online_hadamard_hooks(model, info)
    out = model(ids, use_cache=False).logits
    for h in hooks:
        h.remove()
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-10
