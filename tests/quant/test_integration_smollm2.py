"""Integration on the real SmolLM2-135M (marked ``model``: needs the offline zoo from
``scripts/setup.sh``; few tokens so it stays cheap in CI).

W4A8 = weights ``mxint4`` (blocks of 32 along in), activations ``mxint8``; the expected ordering on
the evaluation split is fp <= qera-exact, l2qer < rtn.
"""

import warnings

import pytest
from smollm2_fixtures import EVAL, one_thread, zoo  # noqa: F401 (fixtures)

pytestmark = pytest.mark.model


def test_w4a8_perplexity_ordering(zoo):
    from hwsim.eval.perplexity import evaluate
    from hwsim.quant import get_recipe, quantize_model, with_formats

    models, tok, calib = zoo
    ppl = {}
    model, _ = models.load("smollm2-135m", progress=False)
    ppl["fp"] = evaluate(model, tok, "austen", "eval", **EVAL).ppl
    for name in ("rtn", "l2qer", "qera-exact"):
        model, _ = models.load("smollm2-135m", progress=False)
        rec = with_formats(get_recipe(name), w="mxint4", a="mxint8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = quantize_model(model, rec, calib, progress=False)
        assert rep.n_quantized == 30 * 7
        ppl[name] = evaluate(model, tok, "austen", "eval", **EVAL).ppl
        del model
    print("SmolLM2-135M W4A8 (mxint4 / mxint8) token ppl, austen eval, 512 tokens:",
          {k: round(v, 3) for k, v in ppl.items()})
    assert ppl["fp"] <= ppl["qera-exact"] < ppl["rtn"]
    assert ppl["fp"] <= ppl["l2qer"] < ppl["rtn"]
