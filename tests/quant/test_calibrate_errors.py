"""Calibration input errors (issue 15): empty statistics, empty or out-of-vocabulary token ids."""

import pytest
import torch

from hwsim.quant import quantize_model
from hwsim.quant.calibrate import STAT_KINDS, _STAT_CLASSES, as_token_ids, capture_block_inputs, collect_stats
from hwsim.quant.testing import tiny_model


@pytest.mark.parametrize("kind", STAT_KINDS)
def test_every_statistic_refuses_to_finalise_without_tokens(kind):
    stat = _STAT_CLASSES[kind](8)
    with pytest.raises(ValueError, match=rf"{kind}: no tokens were recorded"):
        stat.finalize()
    stat.update(torch.randn(3, 8))
    assert stat.finalize().shape[0] == 8


@pytest.mark.parametrize("shape", [(8, 0), (0, 16)])
def test_empty_token_ids_are_rejected(shape):
    with pytest.raises(ValueError, match=rf"calib: token ids of shape \({shape[0]}, {shape[1]}\) hold no tokens"):
        as_token_ids(torch.zeros(shape, dtype=torch.long))


def test_negative_and_out_of_vocabulary_ids_are_rejected():
    with pytest.raises(ValueError, match=r"calib: token id -1 is negative; valid ids: 0\.\.127"):
        as_token_ids(torch.tensor([[0, -1]]), vocab_size=128)
    with pytest.raises(ValueError, match=r"calib: token id 128 is outside the model's vocabulary of 128 "
                                         r"\(valid ids 0\.\.127; 1 id\(s\) too large\)"):
        as_token_ids(torch.tensor([[0, 128]]), vocab_size=128)
    assert as_token_ids(torch.tensor([[0, 127]]), vocab_size=128).dtype == torch.long


def test_model_entry_points_check_the_vocabulary():
    model = tiny_model("llama", vocab=128)
    bad = torch.full((2, 4), 500, dtype=torch.long)
    with pytest.raises(ValueError, match="vocabulary of 128"):
        collect_stats(model, bad, ["mean_sq"], progress=False)
    with pytest.raises(ValueError, match="vocabulary of 128"):
        capture_block_inputs(model, bad)


@pytest.mark.parametrize("recipe", ["l2qer", "gptq"])
@pytest.mark.parametrize("calib,match", [
    (torch.full((2, 4), 500, dtype=torch.long), "vocabulary of 128"),
    (torch.zeros((8, 0), dtype=torch.long), "hold no tokens"),
    (torch.zeros((0, 8), dtype=torch.long), "hold no tokens"),
])
def test_quantize_model_rejects_bad_calibration(recipe, calib, match):
    model = tiny_model("llama", vocab=128)
    with pytest.raises(ValueError, match=match):
        quantize_model(model, recipe, calib, progress=False)
