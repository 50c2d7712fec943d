"""Integration on the real SmolLM2-135M (marked ``model``: needs the offline zoo from
``scripts/setup.sh``; few tokens so it stays cheap in CI).

W4A8 = weights ``mxint4`` (blocks of 32 along in), activations ``mxint8``; the expected ordering on
the evaluation split is fp <= qera-exact, l2qer < rtn. Default run: the first 4 of the 30 blocks
quantized (every recipe alike; measured austen ppl: fp 18.307, rtn 20.457, l2qer 18.767, qera-exact
18.726; 48 s on 2 shared cores); ``--runslow``: all 30 blocks (rtn 29.054, l2qer 21.854, qera-exact
20.625; about 2 min).
"""

import warnings

import pytest
from smollm2_fixtures import EVAL, one_thread, zoo  # noqa: F401 (fixtures)

pytestmark = pytest.mark.model
N_BLOCKS = 30


@pytest.mark.parametrize("blocks", [4, pytest.param(N_BLOCKS, marks=pytest.mark.slow)])
def test_w4a8_perplexity_ordering(zoo, blocks):
    from hwsim.eval.perplexity import evaluate
    from hwsim.quant import get_recipe, quantize_model, with_formats

    models, tok, calib = zoo
    skip = ("lm_head",) + tuple(f"model.layers.{i}.*" for i in range(blocks, N_BLOCKS))
    ppl = {}
    model, _ = models.load("smollm2-135m", progress=False)
    ppl["fp"] = evaluate(model, tok, "austen", "eval", **EVAL).ppl
    for name in ("rtn", "l2qer", "qera-exact"):
        model, _ = models.load("smollm2-135m", progress=False)
        rec = with_formats(get_recipe(name, skip=skip), w="mxint4", a="mxint8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = quantize_model(model, rec, calib, progress=False)
        assert rep.n_quantized == blocks * 7
        ppl[name] = evaluate(model, tok, "austen", "eval", **EVAL).ppl
        del model
    print(f"SmolLM2-135M W4A8 (mxint4 / mxint8), {blocks} blocks, token ppl, austen eval, 512 tokens:",
          {k: round(v, 3) for k, v in ppl.items()})
    assert ppl["fp"] <= ppl["qera-exact"] < ppl["rtn"]
    assert ppl["fp"] <= ppl["l2qer"] < ppl["rtn"]
