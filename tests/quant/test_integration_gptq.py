"""GPTQ beats RTN on the real SmolLM2-135M (issue 17; marked ``model``, CI-sized).

Calibrated on austen (16 x 256 tokens), evaluated on brown: text the calibration never saw. W4A8 =
weights ``mxint4``, activations ``mxint8``; W3 = weights ``mxint3``, activations in full precision.
GPTQ runs with the defaults (act_order "auto": on for these static block scales). Default run:
W4A8 and W3 on the first 4 of the 30 blocks (GPTQ and RTN alike, the other blocks in full
precision). 16 sequences, not the fixture's 8: 2,048 tokens estimate down_proj's 1536-wide R_xx
poorly, and GPTQ's W3 result then hangs on float-level details (8 x 256: rtn 60.234, gptq 55.333
in Session 6 and 60.076 after R_xx's and the linears' summation orders changed in Session 7;
16 x 256: gptq 53.064).
``--runslow``: W4A8 and W3 on all 30 blocks (about 70 s each on 2 shared cores).
"""

import time
import warnings

import pytest
from smollm2_fixtures import CALIB_LEN, EVAL, one_thread, zoo  # noqa: F401 (fixtures)

pytestmark = pytest.mark.model
N_BLOCKS = 30
GPTQ_N_CALIB = 16  # calibration sequences of CALIB_LEN tokens (see the module docstring)


@pytest.mark.parametrize("w,a,blocks", [("mxint4", "mxint8", 4), ("mxint3", None, 4),
                                        pytest.param("mxint4", "mxint8", N_BLOCKS, marks=pytest.mark.slow),
                                        pytest.param("mxint3", None, N_BLOCKS, marks=pytest.mark.slow)])
def test_gptq_beats_rtn_on_held_out_text(zoo, w, a, blocks):
    from hwsim.eval.perplexity import evaluate
    from hwsim.quant import get_recipe, quantize_model, with_formats

    from hwsim.eval import data

    models, tok, _calib = zoo
    calib = data.calibration_set(tok, "austen", n=GPTQ_N_CALIB, seq_len=CALIB_LEN, seed=0)
    skip = ("lm_head",) + tuple(f"model.layers.{i}.*" for i in range(blocks, N_BLOCKS))
    ppl, secs = {}, {}
    for name in ("rtn", "gptq"):
        model, _ = models.load("smollm2-135m", progress=False)
        rec = with_formats(get_recipe(name, skip=skip), w=w, a=a or "none")
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = quantize_model(model, rec, calib if name == "gptq" else None, progress=False)
        secs[name] = round(time.perf_counter() - t, 1)
        assert rep.n_quantized == blocks * 7
        if name == "gptq":
            assert rep.resolved["gptq"]["act_order"] == {"true": blocks * 7}
        ppl[name] = evaluate(model, tok, "brown", "eval", **EVAL).ppl
        del model
    print(f"SmolLM2-135M W={w} X={a}, {blocks} blocks: calib austen {GPTQ_N_CALIB}x{CALIB_LEN}, brown eval 512 tokens: "
          f"ppl {({k: round(v, 3) for k, v in ppl.items()})}, quantize s {secs}")
    assert ppl["gptq"] < ppl["rtn"]
