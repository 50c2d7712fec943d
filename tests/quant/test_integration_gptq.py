"""GPTQ beats RTN on the real SmolLM2-135M (issue 17; marked ``model``, CI-sized).

Calibrated on austen (8 x 256 tokens), evaluated on brown: text the calibration never saw. W4A8 =
weights ``mxint4``, activations ``mxint8``; W3 = weights ``mxint3``, activations in full precision.
GPTQ runs with the defaults (act_order "auto": on for these static block scales).
"""

import time
import warnings

import pytest
from smollm2_fixtures import CALIB_LEN, EVAL, N_CALIB, one_thread, zoo  # noqa: F401 (fixtures)

pytestmark = pytest.mark.model


@pytest.mark.parametrize("w,a", [("mxint4", "mxint8"), ("mxint3", None)])
def test_gptq_beats_rtn_on_held_out_text(zoo, w, a):
    from hwsim.eval.perplexity import evaluate
    from hwsim.quant import get_recipe, quantize_model, with_formats

    models, tok, calib = zoo
    ppl, secs = {}, {}
    for name in ("rtn", "gptq"):
        model, _ = models.load("smollm2-135m", progress=False)
        rec = with_formats(get_recipe(name), w=w, a=a or "none")
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = quantize_model(model, rec, calib if name == "gptq" else None, progress=False)
        secs[name] = round(time.perf_counter() - t, 1)
        assert rep.n_quantized == 30 * 7
        if name == "gptq":
            assert rep.resolved["gptq"]["act_order"] == {"true": 210}
        ppl[name] = evaluate(model, tok, "brown", "eval", **EVAL).ppl
        del model
    print(f"SmolLM2-135M W={w} X={a}: calib austen {N_CALIB}x{CALIB_LEN}, brown eval 512 tokens: "
          f"ppl {({k: round(v, 3) for k, v in ppl.items()})}, quantize s {secs}")
    assert ppl["gptq"] < ppl["rtn"]
