"""FpStatsCache: full-precision statistics computed once and reused give the same quantized model."""

import warnings

import pytest
import torch

from hwsim.quant import get_recipe, quantize_model, with_formats
from hwsim.quant.calibrate import FpStatsCache
from hwsim.quant.testing import tiny_model

CALIB = torch.randint(0, 128, (6, 32), generator=torch.Generator().manual_seed(1))


def quantized(recipe, fp_stats=None):
    m = tiny_model("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = quantize_model(m, recipe, CALIB, progress=False, fp_stats=fp_stats)
    return m, rep


@pytest.mark.parametrize("name", ["l2qer", "qera-approx", "qera-exact"])
def test_cached_statistics_give_bit_identical_models(name):
    cache = FpStatsCache()
    recipe = with_formats(get_recipe(name), rank=8)
    ref, _ = quantized(recipe)
    first, rep1 = quantized(recipe, cache)
    assert cache.kinds() == set(recipe.stat_kinds()) and "fp_stats" not in rep1.calib
    # another format, same statistics: served from the cache, no calibration pass
    other = with_formats(recipe, w="bfp4")
    second, rep2 = quantized(other, cache)
    assert rep2.calib["fp_stats"] == "cached" and "calibrate" not in rep2.timings
    third, _ = quantized(other)
    for a, b in ((ref, first), (second, third)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def test_sequential_recipes_do_not_use_the_cache():
    cache = FpStatsCache()
    quantized(get_recipe("gptq", layer=dict(w="mxint4")), cache)
    assert cache.final == {}
