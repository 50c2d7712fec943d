"""The stage registry (hwsim.quant.stages), pipelines of registered stages, and TOML recipe files
(issue 10; docs/spec/algorithms.md §5)."""

import warnings

import pytest
import torch

import hwsim.formats as F
from hwsim.quant import get_recipe, quantize_model, validate_recipe
from hwsim.quant.config import load_recipe
from hwsim.quant.stages import Option, all_stages, get_stage, register_stage, stage_names, unregister_stage
from hwsim.quant.testing import tiny_model

IDS = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
BUILTIN = {"fold_norms": "transform", "rtn": "rounding", "gptq": "rounding", "lqer": "reconstruction",
           "l2qer": "reconstruction", "qera-approx": "reconstruction", "qera-exact": "reconstruction"}


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def test_every_builtin_stage_is_registered_once_with_its_kind():
    stages = all_stages()
    for name, kind in BUILTIN.items():
        assert stages[name].kind == kind
    assert len(stages) == len(set(stages))
    # the registry orders stages by kind: every transform before every rounding before every reconstruction
    kinds = [s.kind for s in stages.values()]
    assert kinds == sorted(kinds, key=("transform", "rounding", "reconstruction").index)
    with pytest.raises(ValueError, match="'rtn' is already registered"):
        register_stage("rtn", kind="rounding")(lambda *a, **k: None)
    assert get_stage("gptq").stats == ("rxx",) and get_stage("gptq").stats_source == "sequential"
    assert get_stage("qera-exact").stats == ("rxx",) and get_stage("l2qer").stats == ("mean_abs_lqer",)


def test_list_recipes_shows_every_stage_and_its_options():
    from hwsim.cli.quant_cmd import list_recipes_text

    text = list_recipes_text()
    for name in all_stages():
        assert f"\n  {name} " in text
    assert "act_order='auto'" in text and "factor='cholesky'" in text


def test_unknown_stage_option_and_bad_value_name_stage_option_and_valid_choices():
    with pytest.raises(ValueError, match=r"stage 'gptq' has no option 'act_ordr' \(did you mean 'act_order'\?\); "
                                         r"valid options: block_size, damp, act_order"):
        validate_recipe(get_recipe("gptq", options={"gptq": {"act_ordr": True}}))
    with pytest.raises(ValueError, match=r"stage 'qera-exact' option 'factor': 'qr' is not valid; valid: "
                                         r"'cholesky', 'eigh', 'sqrtm'"):
        validate_recipe(get_recipe("qera-exact", options={"qera-exact": {"factor": "qr"}}))
    with pytest.raises(ValueError, match=r"option 'damp': -1 is not valid; valid: a number in \[0, 1\)"):
        validate_recipe(get_recipe("gptq", options={"gptq": {"damp": -1}}))
    with pytest.raises(ValueError, match="stage 'rtn' has no option 'x'; valid options: none"):
        validate_recipe(get_recipe("rtn", options={"rtn": {"x": 1}}))
    with pytest.raises(ValueError, match="options given for stage 'gptq', which is not in the pipeline"):
        validate_recipe(get_recipe("rtn", options={"gptq": {}}))
    # the defaults are filled in for the stage call
    assert get_recipe("qera-exact").stage_options("qera-exact") == {"factor": "cholesky", "svd_dtype": "float64",
                                                                      "solver": None}


@pytest.fixture
def test_stages():
    """A per-linear rounding stage and a block-reconstruction stage defined here, in a test file."""
    calls = {"round": 0, "blocks": []}

    @register_stage("test-round", kind="rounding", options=(Option("bump", 0, "codes added", choices=(0, 1)),))
    def test_round(W, fmt, stats, *, layer, cache, bump):
        """RTN, counting its calls"""
        calls["round"] += 1
        return F.quantize(W.numpy(), fmt, axis=-1), {"bump": bump}

    def block_fn(data, *, scale):
        calls["blocks"].append(data)
        return {name: (F.quantize(lin.weight.detach().numpy(), data.weight_formats[name], axis=-1), {})
                for name, lin in data.linears.items()}

    @register_stage("test-block", kind="rounding", block_data=True, block_fn=block_fn,
                    options=(Option("scale", 1.0, "unused"),))
    def test_block_per_linear(W, fmt, stats, *, layer, cache, scale):
        """RTN for linears outside the blocks"""
        return F.quantize(W.numpy(), fmt, axis=-1), {}

    yield calls
    unregister_stage("test-round")
    unregister_stage("test-block")


def test_a_stage_defined_in_a_test_file_works_in_a_pipeline_string(test_stages):
    assert "test-round" in stage_names("rounding")
    ref, model = tiny_model("llama"), tiny_model("llama")
    _quiet(quantize_model, ref, "rtn+qera-exact", IDS, progress=False)
    _quiet(quantize_model, model, "test-round+qera-exact", IDS, progress=False)
    assert test_stages["round"] == 14
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, ref(IDS).logits)
    with pytest.raises(ValueError, match="'bump': 2 is not valid; valid: 0, 1"):
        validate_recipe(get_recipe("test-round", options={"test-round": {"bump": 2}}))


def test_block_reconstruction_stage_gets_quantized_inputs_and_fp_targets(test_stages):
    fp, model = tiny_model("llama"), tiny_model("llama")
    rep = _quiet(quantize_model, model, get_recipe("test-block", layer={"x": "mxint8"}), IDS, progress=False)
    assert rep.n_quantized == 14
    blocks = test_stages["blocks"]
    assert [d.index for d in blocks] == [0, 1]
    # targets: the fp model's block outputs; inputs: the quantized trajectory (block 0: the embeddings)
    hid = {}
    hooks = [blk.register_forward_hook(lambda m, a, out, i=i: hid.__setitem__(i, out[0] if isinstance(out, tuple)
                                                                               else out))
             for i, blk in enumerate(fp.model.layers)]
    with torch.no_grad():
        fp(IDS)
    for h in hooks:
        h.remove()
    assert torch.allclose(torch.cat(blocks[0].targets), hid[0], atol=1e-5)
    assert torch.allclose(torch.cat(blocks[1].targets), hid[1], atol=1e-5)
    assert not torch.allclose(torch.cat(blocks[1].inputs), hid[0], atol=1e-4)  # block 0 is quantized by then
    # block_fn runs the block on any batch size (the training batch), with the block's current linears
    d0 = blocks[1]
    with torch.no_grad():
        x = torch.cat(d0.inputs)
        y1 = d0.block_fn(x[:1])
        y3 = d0.block_fn(x[:3])
    assert y1.shape == (1, 16, 64) and torch.allclose(y3[:1], y1, atol=1e-5)
    assert set(d0.act_quant) == set(d0.linears) and all(q is not None for q in d0.act_quant.values())
    x = torch.randn(2, 64)
    assert torch.equal(d0.act_quant[next(iter(d0.act_quant))](x), torch.from_numpy(F.fake_quant(x.numpy(), "mxint8")))
    # the result equals RTN with the same formats
    ref = tiny_model("llama")
    _quiet(quantize_model, ref, get_recipe("rtn", layer={"x": "mxint8"}), IDS, progress=False)
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, ref(IDS).logits)


def test_block_stage_needs_calibration_data(test_stages):
    with pytest.raises(ValueError, match="calib: recipe 'test-block' needs calibration data"):
        quantize_model(tiny_model("llama"), "test-block", None, progress=False)


RECIPE_TOML = """
name = "w3-gptq-qera"
pipeline = "fold_norms+gptq+qera-exact"
mode = "fake"
sink_weight = 4.0

[layer]
w = "int3_g32_asym"
x = "none"
rank = 8

[options.gptq]
act_order = false

[options.qera-exact]
factor = "eigh"

[[overrides]]
match = "down_proj"
w = "int4_g32_asym"
"""


def test_toml_recipe_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE_TOML)
    r = load_recipe(path)
    assert r.name == "w3-gptq-qera" and r.stages == ("fold_norms", "gptq", "qera-exact")
    assert r.layer.w == "int3_g32_asym" and r.layer.x is None and r.layer.rank == 8
    assert r.stats_source == "sequential" and r.sink_weight == 4.0
    assert r.stage_options("gptq")["act_order"] is False and r.stage_options("qera-exact")["factor"] == "eigh"
    assert r.layer_config("model.layers.0.mlp.down_proj").w == "int4_g32_asym"
    assert get_recipe(str(path)) == r
    model = tiny_model("llama")
    rep = _quiet(quantize_model, model, str(path), IDS, progress=False)
    assert rep.recipe["name"] == "w3-gptq-qera"
    assert model.model.layers[1].mlp.down_proj.w_fmt.name == "int4_g32_asym"


@pytest.mark.parametrize("text,match", [
    ('pipeline = "rtn"\ncolour = 1', "unknown key 'colour'; valid keys: name, preset, pipeline"),
    ('pipeline = "rtn"\nstages = ["rtn"]', "exactly one of 'pipeline'"),
    ('pipeline = "rtn+gptq"', "exactly one rounding stage"),
    ('pipeline = "lqer+rtn"', "'rtn' \\(rounding\\) cannot come after 'lqer'"),
    ('pipeline = "rtn+foo"', "stage 'foo' is unknown"),
    ('pipeline = "rtn"\n[layer]\nww = "mxint4"', "\\[layer\\] has unknown field 'ww'"),
    ('pipeline = "gptq"\n[options.gptq]\nact_ordr = true', "stage 'gptq' has no option 'act_ordr'"),
    ('pipeline = "rtn"\n[[overrides]]\nw = "mxint4"', "needs a 'match' pattern"),
    ('pipeline = "rtn"\n[layer]\nw = "mxint99"', "mxint99"),
    ('pipeline = "rtn"\npreset = "nope"', "preset 'nope' is unknown"),
    ('pipeline = "rtn" x', "not valid TOML"),
])
def test_bad_toml_recipe_files_name_the_file_and_the_key(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as exc:
        load_recipe(path)
    assert str(path) in str(exc.value)


def test_a_transform_gets_calibration_ids_and_leaves_an_online_transform_for_the_qlinear():
    from hwsim.quant.hadamard import hadamard_matrix

    seen = {}

    @register_stage("test-rotate-down", kind="transform", calib=True)
    def rotate_down(model, adapter, ctx):
        """W_down <- W_down·H with x <- x·H online (function-preserving)"""
        seen["calib"] = ctx.calib
        for i, block in enumerate(model.model.layers):
            down = block.mlp.down_proj
            H = hadamard_matrix(down.in_features, dtype=torch.float32)
            with torch.no_grad():
                down.weight.copy_(down.weight @ H)
            down.register_forward_pre_hook(lambda m, a, H=H: (a[0] @ H,))
            ctx.pre_transforms[f"model.layers.{i}.mlp.down_proj"] = (H, "hadamard")
        ctx.events.append({"stage": "test-rotate-down", "layer": None, "kind": "rotated", "value": 2})

    try:
        with pytest.raises(ValueError, match="'test-rotate-down' trains on calibration data"):
            quantize_model(tiny_model("llama"), "test-rotate-down+rtn", None, progress=False)
        fp, model = tiny_model("llama"), tiny_model("llama")
        rep = _quiet(quantize_model, model, get_recipe("test-rotate-down+rtn", layer={"w": "fp32"}), IDS,
                     progress=False)
        assert torch.equal(seen["calib"], IDS)
        down = model.model.layers[1].mlp.down_proj
        assert down.pre_transform.shape == (192, 192) and down.record().pre_transform == "hadamard"
        assert model.model.layers[1].mlp.up_proj.pre_transform is None
        assert {"stage": "test-rotate-down", "layer": None, "kind": "rotated", "value": 2} in rep.events
        with torch.no_grad():
            torch.testing.assert_close(model(IDS).logits, fp(IDS).logits, rtol=1e-4, atol=1e-4)
    finally:
        unregister_stage("test-rotate-down")
