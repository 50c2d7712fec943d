"""Quantization recipes: stages, target formats, per-layer overrides and the named presets
(docs/spec/algorithms.md §5).

A ``Recipe`` is a pipeline ``[transform]* → rounding → [reconstruction]`` plus the formats a
``QLinear`` gets (``LayerConfig``). Per-layer overrides are ``(pattern, {field: value})`` pairs; a
pattern matches the qualified module name (``model.layers.3.mlp.down_proj``) or its last
component (``down_proj``) with shell wildcards. Layers matching ``skip`` (default ``lm_head``)
stay ``nn.Linear`` unless an override sets ``skip=False``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .stages import KINDS, get_stage, stage_names

__all__ = [
    "AttentionConfig",
    "LayerConfig",
    "Recipe",
    "PRESETS",
    "get_recipe",
    "list_recipes",
    "load_recipe",
    "validate_recipe",
    "with_formats",
]

LOWRANK_AXES = ("code", "reduction")
MODES = ("fake", "exact")
STATS_SOURCES = ("fp", "sequential")


@dataclass(frozen=True)
class LayerConfig:
    """Formats of one ``QLinear`` (names as in ``hwsim.formats``; None = high precision/bypass).

    ``w`` weight (blocks along in), ``x`` dynamic activation quantizer, ``a``/``b`` low-rank
    factors blocked along ``lowrank_axes`` (``"code"``: A along k and B along out, the released
    LQER scripts, fake mode only; ``"reduction"``: A along in and B along k, exact-capable),
    ``xa``/``xab`` branch output quantizers, ``bias`` bias format, ``rank`` k.
    """

    w: str | None = "mxint4"
    x: str | None = None
    a: str | None = None
    b: str | None = None
    xa: str | None = None
    xab: str | None = None
    bias: str | None = None
    rank: int = 0
    lowrank_axes: str = "reduction"
    skip: bool = False


@dataclass(frozen=True)
class AttentionConfig:
    """Attention-side quantizers (docs/spec/algorithms.md §3.3; ``hwsim.quant.attention``), one
    set for every attention module: ``q`` and ``k`` after RoPE, ``v`` (K and V are the KV cache),
    ``p`` the attention probabilities (blocks along the keys); format names as in
    ``hwsim.formats``, None = not quantized. ``axis``: ``"head"`` (a format's slices run along the
    d_h channels of one token in one head: ``int4_tok_asym`` is per token and head,
    ``int4_g128_asym`` with d_h ≤ 128 one group per head) or ``"token"`` (along all heads of one
    token). The o_proj input quantizer is o_proj's ``LayerConfig.x`` (an override)."""

    q: str | None = None
    k: str | None = None
    v: str | None = None
    p: str | None = None
    axis: str = "head"

    @property
    def active(self) -> bool:
        return any(getattr(self, f) is not None for f in ("q", "k", "v", "p"))


#: the sink weight of each statistic when the recipe sets none, chosen by held-out perplexity on
#: SmolLM2 and both shipped corpora (docs/quant_algorithms.md "Attention sink (BOS) weight"):
#: R_xx (GPTQ, QERA-exact, OSTQuant's final GPTQ) 16, best or within 0.2 ppl of the best in all
#: 8 GPTQ / QERA-exact cells; AWQ's activation statistic 1 (its best on SmolLM2 is 0, but 0
#: drops a token from the statistic, so it stays an explicit choice)
SINK_WEIGHT_DEFAULTS = {"rxx": 16.0, "awq": 1.0}


@dataclass(frozen=True)
class Recipe:
    """A validated-on-use quantization recipe; build presets with ``get_recipe(name, ...)``.

    ``options`` holds per-stage keyword arguments, e.g. ``{"gptq": {"percdamp": 0.01}}`` or
    ``{"qera-exact": {"factor": "eigh"}}``.
    """

    name: str
    stages: tuple[str, ...]
    layer: LayerConfig = LayerConfig()
    overrides: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    skip: tuple[str, ...] = ("lm_head",)
    mode: str = "fake"
    #: exact mode's accumulator, in ``hwsim.matmul``'s grammar ("fp32", "fixed:24:8:saturate:rne", "exact")
    accumulator: str = "fp32"
    stats_source: str = "fp"
    calib_batch_size: int = 2
    #: weight of each calibration sequence's first position (BOS, the attention sink) in the
    #: statistics (docs/spec/algorithms.md §2.2 with a position weight; 1 = every token counts
    #: once; issue 17). None: each statistic's measured default (``SINK_WEIGHT_DEFAULTS``).
    sink_weight: float | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    seed: int = 0
    #: attention-side quantizers (Q/K after RoPE, V, P), installed on the quantized model
    attention: AttentionConfig = AttentionConfig()

    def sink_weight_for(self, use: str) -> float:
        """The sink weight of statistic ``use`` ("rxx", "awq"): the recipe's, else its default."""
        if self.sink_weight is not None:
            return float(self.sink_weight)
        if use not in SINK_WEIGHT_DEFAULTS:
            raise ValueError(f"sink_weight_for: use {use!r} is not valid; valid: {', '.join(SINK_WEIGHT_DEFAULTS)}")
        return SINK_WEIGHT_DEFAULTS[use]

    # -- stage queries -------------------------------------------------------------------------
    def _of_kind(self, kind: str) -> tuple[str, ...]:
        return tuple(s for s in self.stages if get_stage(s).kind == kind)

    @property
    def transforms(self) -> tuple[str, ...]:
        return self._of_kind("transform")

    @property
    def rounding(self) -> str:
        return self._of_kind("rounding")[0]

    @property
    def reconstruction(self) -> str | None:
        return next(iter(self._of_kind("reconstruction")), None)

    def stat_kinds(self) -> tuple[str, ...]:
        """The calibration statistics the stages read, in stage order, each once."""
        kinds: list[str] = []
        for s in self.stages:
            kinds.extend(get_stage(s).stats)
        return tuple(dict.fromkeys(kinds))

    @property
    def needs_calibration(self) -> bool:
        """Whether a run needs calibration token ids: a stage reads statistics, the rounding
        reconstructs blocks on calibration data (TesseraQ) or a transform trains (OSTQuant)."""
        return bool(self.stat_kinds()) or any(get_stage(s).block_data or get_stage(s).calib for s in self.stages)

    def stage_options(self, stage: str) -> dict[str, Any]:
        """The options of ``stage``: its registered defaults with the recipe's values applied."""
        return get_stage(stage).resolve_options(self.options.get(stage, {}))

    # -- per-layer configuration -----------------------------------------------------------------
    def layer_config(self, qualified_name: str) -> LayerConfig | None:
        """The LayerConfig of a linear, or None when it stays in high precision."""
        short = qualified_name.rpartition(".")[2]
        cfg = self.layer
        explicit_skip = None
        for pattern, upd in self.overrides:
            if _match(pattern, qualified_name, short):
                upd = dict(upd)
                if "skip" in upd:
                    explicit_skip = bool(upd["skip"])
                cfg = dataclasses.replace(cfg, **upd)
        skipped = explicit_skip if explicit_skip is not None else (
            any(_match(p, qualified_name, short) for p in self.skip) or cfg.skip)
        return None if skipped else cfg

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stages": list(self.stages),
            "layer": dataclasses.asdict(self.layer),
            "overrides": [[p, dict(u)] for p, u in self.overrides],
            "skip": list(self.skip),
            "mode": self.mode,
            "accumulator": self.accumulator,
            "stats_source": self.stats_source,
            "calib_batch_size": self.calib_batch_size,
            "sink_weight": self.sink_weight,
            "options": {k: dict(v) for k, v in self.options.items()},
            "seed": self.seed,
            "attention": dataclasses.asdict(self.attention),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        d = dict(d)
        return cls(
            name=d["name"],
            stages=tuple(d["stages"]),
            layer=LayerConfig(**d.get("layer", {})),
            overrides=tuple((p, dict(u)) for p, u in d.get("overrides", ())),
            skip=tuple(d.get("skip", ("lm_head",))),
            mode=d.get("mode", "fake"),
            accumulator=d.get("accumulator", "fp32"),
            stats_source=d.get("stats_source", "fp"),
            calib_batch_size=int(d.get("calib_batch_size", 2)),
            sink_weight=None if d.get("sink_weight") is None else float(d["sink_weight"]),
            options={k: dict(v) for k, v in d.get("options", {}).items()},
            seed=int(d.get("seed", 0)),
            attention=AttentionConfig(**d.get("attention", {})),
        )


def _match(pattern: str, qualified: str, short: str) -> bool:
    return fnmatch.fnmatchcase(qualified, pattern) or fnmatch.fnmatchcase(short, pattern)


# ------------------------------------------------------------------------------------------------
# Presets (docs/spec/algorithms.md §5)
# ------------------------------------------------------------------------------------------------

_LQER_LAYER = LayerConfig(w="bfp4", x="bfp8", a="bfp8", b="bfp8", xa="bfp8", xab="bfp8", rank=32, lowrank_axes="code")
_OST_KV4 = AttentionConfig(k="int4_g128_asym", v="int4_g128_asym")
_QERA_LAYER = LayerConfig(w="mxint4", x=None, a=None, b=None, xa=None, xab=None, rank=32)

PRESETS: dict[str, Recipe] = {
    "rtn": Recipe("rtn", ("rtn",), LayerConfig(w="mxint4")),
    # act_order "auto": on where the scales are static (block formats, channel scales, static
    # groups), off for lazy integer groups (issue 17); the resolved value is in QuantReport.resolved
    "gptq": Recipe("gptq", ("gptq",), LayerConfig(w="int4_g128_asym"), stats_source="sequential",
                   options={"gptq": {"act_order": "auto"}}),
    "lqer": Recipe("lqer", ("rtn", "lqer"), _LQER_LAYER),
    "l2qer": Recipe("l2qer", ("rtn", "l2qer"), _LQER_LAYER),
    "l2qer-w4a6": Recipe("l2qer-w4a6", ("rtn", "l2qer"), dataclasses.replace(
        _LQER_LAYER, x="bfp6", a="bfp6", b="bfp6", xa="bfp6", xab="bfp6")),
    "l2qer-hw": Recipe("l2qer-hw", ("rtn", "l2qer"), LayerConfig(
        w="mxint4_b16", x="mxint8", a="mxint8", b="mxint8", xa="mxint8", xab="mxint8", rank=32,
        lowrank_axes="reduction")),
    "qera-approx": Recipe("qera-approx", ("rtn", "qera-approx"), _QERA_LAYER),
    "qera-exact": Recipe("qera-exact", ("rtn", "qera-exact"), _QERA_LAYER),
    "qera-approx-3bit": Recipe("qera-approx-3bit", ("rtn", "qera-approx"),
                               dataclasses.replace(_QERA_LAYER, w="mxint3", rank=64)),
    "qera-exact-3bit": Recipe("qera-exact-3bit", ("rtn", "qera-exact"),
                              dataclasses.replace(_QERA_LAYER, w="mxint3", rank=64)),
    # OSTQuant (docs/spec/algorithms.md §4.5, §5): W4A4KV4 = INT4 sym per-channel weights (GPTQ),
    # INT4 asym per-token activations, o_proj input in groups of 128, K and V INT4 asym g128 (one
    # group per head for d_h <= 128); the training budget is the stage's "budget" option ("cpu")
    # TesseraQ (docs/spec/algorithms.md §4.6): block reconstruction with the stage's "cpu" budget by
    # default (option budget="paper" for the paper's)
    "tesseraq": Recipe("tesseraq", ("tesseraq",), LayerConfig(w="int4_g128_asym")),
    # the paper's W2 setting (§5): AWQ scaling + clip search (the awq stage), then TesseraQ
    "tesseraq-w2g128": Recipe("tesseraq-w2g128", ("awq", "tesseraq"), LayerConfig(w="int2_g128_asym")),
    "ostquant-w4a4kv4": Recipe("ostquant-w4a4kv4", ("ostquant", "gptq"),
                               LayerConfig(w="int4_ch", x="int4_tok_asym"),
                               overrides=(("o_proj", {"x": "int4_g128_asym"}),), stats_source="sequential",
                               options={"gptq": {"act_order": "auto"}},
                               attention=_OST_KV4),
    "ostquant-w4a16": Recipe("ostquant-w4a16", ("ostquant", "gptq"), LayerConfig(w="int4_ch", x=None),
                             stats_source="sequential", options={"gptq": {"act_order": "auto"}}),
    # MX variant: W4A4 in mxint4 (blocks of 32 along the reduction axis, exact-mode capable) with
    # an mxint8 KV cache
    "ostquant-mx-w4a4kv8": Recipe("ostquant-mx-w4a4kv8", ("ostquant", "gptq"), LayerConfig(w="mxint4", x="mxint4"),
                                  stats_source="sequential", options={"gptq": {"act_order": "auto"}},
                                  attention=AttentionConfig(k="mxint8", v="mxint8")),
}


def list_recipes() -> list[str]:
    return sorted(PRESETS)


def get_recipe(name_or_recipe: "str | os.PathLike | Recipe | Mapping[str, Any]", **changes: Any) -> Recipe:
    """A preset by name, a pipeline string, a TOML recipe file, a Recipe or its dict, with top-level
    fields replaced by ``changes``.

    A pipeline string joins registered stages with ``+`` (``"gptq+l2qer"``, ``"tesseraq+qera-exact"``):
    it takes the layer formats of the last stage that is also a preset (else ``rtn``'s) and its
    statistics from the sequential trajectory when a stage asks for it (GPTQ). A path ending in
    ``.toml`` is read with :func:`load_recipe`.
    """
    if isinstance(name_or_recipe, Recipe):
        recipe = name_or_recipe
    elif isinstance(name_or_recipe, Mapping):
        recipe = Recipe.from_dict(name_or_recipe)
    elif isinstance(name_or_recipe, os.PathLike) or (isinstance(name_or_recipe, str)
                                                      and name_or_recipe.strip().lower().endswith(".toml")):
        recipe = load_recipe(name_or_recipe)
    elif isinstance(name_or_recipe, str):
        recipe = _named(name_or_recipe)
    else:
        raise ValueError(f"recipe: expected a name, a pipeline string, a .toml path, a Recipe or a dict, got "
                         f"{type(name_or_recipe).__name__}")
    if changes:
        if "layer" in changes and isinstance(changes["layer"], Mapping):
            changes["layer"] = dataclasses.replace(recipe.layer, **changes["layer"])
        if "attention" in changes and isinstance(changes["attention"], Mapping):
            changes["attention"] = dataclasses.replace(recipe.attention, **changes["attention"])
        recipe = dataclasses.replace(recipe, **changes)
    return recipe


def _named(text: str) -> Recipe:
    key = text.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    if "+" in key or key in stage_names():
        return pipeline_recipe(key)
    close = difflib.get_close_matches(key, list(PRESETS) + list(stage_names()), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"recipe: unknown recipe {text!r}{hint}; presets: {', '.join(list_recipes())}; or a "
                     f"pipeline of stages joined by '+' ({_stage_listing()}); or a .toml recipe file")


def _stage_listing() -> str:
    return "; ".join(f"{k}: {', '.join(stage_names(k)) or '-'}" for k in KINDS)


def pipeline_recipe(pipeline: str, base: Recipe | None = None) -> Recipe:
    """The recipe of a pipeline string ``"stage+stage+..."`` (see :func:`get_recipe`); ``base``
    overrides the preset its formats and options come from."""
    stages = tuple(s.strip() for s in str(pipeline).strip().lower().split("+"))
    for s in stages:
        get_stage(s)  # unknown names: one clear error listing the valid ones
    if base is None:
        base = PRESETS[next((s for s in reversed(stages) if s in PRESETS), "rtn")]
    options = {k: dict(v) for k, v in base.options.items() if k in stages}
    sequential = any(get_stage(s).stats_source == "sequential" for s in stages)
    name = "+".join(stages)
    return dataclasses.replace(base, name=name, stages=stages, options=options,
                               stats_source="sequential" if sequential else "fp")


#: top-level keys of a TOML recipe file
RECIPE_FILE_KEYS = ("name", "preset", "pipeline", "stages", "layer", "overrides", "skip", "mode", "accumulator",
                    "stats_source", "calib_batch_size", "sink_weight", "options", "seed", "attention")


def load_recipe(path: "str | os.PathLike") -> Recipe:
    """Read a recipe from a TOML file and validate it.

    Keys: ``pipeline`` (``"tesseraq+qera-exact"``) or ``stages`` (a list), optionally ``preset``
    (the preset whose formats and options are the starting point; default: as for a pipeline
    string), ``name`` (default: the file's stem), ``mode``, ``accumulator`` (exact mode's, e.g.
    ``"fixed:24:8:saturate:rne"``), ``stats_source``, ``calib_batch_size``,
    ``sink_weight``, ``seed``, ``skip``; tables ``[layer]`` (LayerConfig fields), ``[options.STAGE]``
    (stage options) and ``[[overrides]]`` (``match = "down_proj"`` plus LayerConfig fields).
    Errors name the file and the key.
    """
    import tomllib

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"recipe file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"recipe file {str(path)!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe file {str(path)!r} is not valid TOML: {exc}") from None
    try:
        return validate_recipe(recipe_from_mapping(data, default_name=p.stem))
    except ValueError as exc:
        raise ValueError(f"recipe file {str(path)!r}: {exc}") from None


def recipe_from_mapping(data: Mapping[str, Any], default_name: str = "recipe") -> Recipe:
    """The recipe a TOML recipe file's table describes (see :func:`load_recipe`); not validated."""
    unknown = sorted(set(data) - set(RECIPE_FILE_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(RECIPE_FILE_KEYS)}")
    if ("pipeline" in data) == ("stages" in data):
        raise ValueError("give exactly one of 'pipeline' (a string such as \"gptq+qera-exact\") or 'stages' "
                         "(a list)")
    stages = data["pipeline"] if "pipeline" in data else data["stages"]
    if not isinstance(stages, str):
        if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
            raise ValueError(f"stages must be a list of stage names, got {stages!r}")
        stages = "+".join(stages)
    base = None
    if "preset" in data:
        if str(data["preset"]).lower() not in PRESETS:
            raise ValueError(f"preset {data['preset']!r} is unknown; presets: {', '.join(list_recipes())}")
        base = PRESETS[str(data["preset"]).lower()]
    recipe = pipeline_recipe(stages, base)
    layer_fields = {f.name for f in dataclasses.fields(LayerConfig)}
    lay = dict(data.get("layer", {}))
    bad = sorted(set(lay) - layer_fields)
    if bad:
        raise ValueError(f"[layer] has unknown field {bad[0]!r}; valid: {', '.join(sorted(layer_fields))}")
    overrides = []
    for i, ov in enumerate(data.get("overrides", ())):
        ov = dict(ov)
        if "match" not in ov:
            raise ValueError(f"[[overrides]] #{i + 1} needs a 'match' pattern (e.g. match = \"down_proj\")")
        pattern = str(ov.pop("match"))
        bad = sorted(set(ov) - layer_fields)
        if bad:
            raise ValueError(f"[[overrides]] {pattern!r} has unknown field {bad[0]!r}; valid: "
                             f"{', '.join(sorted(layer_fields))}")
        overrides.append((pattern, {k: _none_word(v) for k, v in ov.items()}))
    options = {k: dict(v) for k, v in recipe.options.items()}
    for stage, kv in dict(data.get("options", {})).items():
        if not isinstance(kv, Mapping):
            raise ValueError(f"[options.{stage}] must be a table of option = value")
        options.setdefault(str(stage).lower(), {}).update(kv)
    changes: dict[str, Any] = {"name": str(data.get("name", default_name)), "options": options,
                               "layer": dataclasses.replace(recipe.layer, **{k: _none_word(v) for k, v in lay.items()}),
                               "overrides": tuple(overrides)}
    for key in ("mode", "accumulator", "stats_source", "calib_batch_size", "sink_weight", "seed"):
        if key in data:
            changes[key] = data[key]
    if "skip" in data:
        changes["skip"] = tuple(data["skip"])
    if "attention" in data:
        att = dict(data["attention"]) if isinstance(data["attention"], Mapping) else None
        valid = [f.name for f in dataclasses.fields(AttentionConfig)]
        if att is None or set(att) - set(valid):
            bad = "a table" if att is None else repr(sorted(set(att) - set(valid))[0])
            raise ValueError(f"[attention] has unknown field {bad}; valid: {', '.join(valid)}")
        changes["attention"] = dataclasses.replace(recipe.attention, **{k: _none_word(v) for k, v in att.items()})
    return dataclasses.replace(recipe, **changes)


def _none_word(v: Any) -> Any:
    """TOML has no null: the words none/hp/fp/bypass mean high precision."""
    return None if isinstance(v, str) and v.lower() in HP_WORDS else v


#: words meaning "not quantized" (high precision / bypass) in format fields
HP_WORDS = ("none", "hp", "fp", "bypass")


def with_formats(recipe: Recipe, *, w: str | None = None, a: str | None = None, lowrank: str | None = None,
                 rank: int | None = None, mode: str | None = None, accumulator: str | None = None) -> Recipe:
    """CLI-style format changes: ``w`` weight; ``a`` activations (X, and the branch outputs XA/XAB
    and the factors A/B where the preset quantizes them); ``lowrank`` A and B only; ``rank`` k;
    ``mode`` and ``accumulator`` (exact mode's). ``"none"`` (or ``"hp"``) as a format value means
    high precision / bypass."""
    lay = recipe.layer
    upd: dict[str, Any] = {}

    def val(v):
        return None if str(v).lower() in HP_WORDS else v

    if w is not None:
        upd["w"] = val(w)
    if a is not None:
        av = val(a)
        upd["x"] = av
        for f in ("xa", "xab", "a", "b"):
            if getattr(lay, f) is not None:
                upd[f] = av
    if lowrank is not None:
        upd["a"] = upd["b"] = val(lowrank)
    if rank is not None:
        upd["rank"] = int(rank)
    changes: dict[str, Any] = {"layer": dataclasses.replace(lay, **upd)}
    if mode is not None:
        changes["mode"] = mode
    if accumulator is not None:
        changes["accumulator"] = accumulator
    return dataclasses.replace(recipe, **changes)


# ------------------------------------------------------------------------------------------------
# Validation (docs/spec/algorithms.md §5: before anything runs)
# ------------------------------------------------------------------------------------------------


def validate_recipe(recipe: Recipe) -> Recipe:
    """Check stage names, order and options, and the formats of the base layer and every override.

    Raises ValueError naming the offending stage, option or field and what is valid. Returns the
    recipe unchanged.
    """
    stages = tuple(recipe.stages)
    where = f"recipe {recipe.name!r}: pipeline {'+'.join(stages)!r}"
    kinds = [get_stage(s).kind for s in stages]
    if len(set(stages)) != len(stages):
        dup = next(s for s in stages if stages.count(s) > 1)
        raise ValueError(f"{where}: stage {dup!r} appears twice")
    n_round = kinds.count("rounding")
    if n_round != 1:
        raise ValueError(f"{where} must contain exactly one rounding stage ({', '.join(stage_names('rounding'))}), "
                         f"found {n_round}")
    for i in range(1, len(stages)):
        if KINDS.index(kinds[i]) < KINDS.index(kinds[i - 1]):
            why = ("no transform may follow the rounding stage (it would invalidate the codes)"
                   if kinds[i] == "transform" else
                   "the reconstruction must come after the rounding stage (it corrects that rounding's error)")
            raise ValueError(f"{where}: stage {stages[i]!r} ({kinds[i]}) cannot come after {stages[i - 1]!r} "
                             f"({kinds[i - 1]}): {why}; the order is [transform]* -> rounding -> [reconstruction]")
    if kinds.count("reconstruction") > 1:
        raise ValueError(f"{where}: at most one reconstruction stage, found "
                         f"{[s for s, k in zip(stages, kinds) if k == 'reconstruction']}")
    for st, given in recipe.options.items():
        if st not in stages:
            raise ValueError(f"{where}: options given for stage {st!r}, which is not in the pipeline")
        get_stage(st).resolve_options(given)
    if recipe.mode not in MODES:
        raise ValueError(f"recipe {recipe.name!r}: mode {recipe.mode!r} is not valid; valid: {', '.join(MODES)}")
    check_recipe_accumulator(recipe)
    if recipe.stats_source not in STATS_SOURCES:
        raise ValueError(f"recipe {recipe.name!r}: stats_source {recipe.stats_source!r} is not valid; valid: "
                         f"{', '.join(STATS_SOURCES)}")
    sw = recipe.sink_weight
    if sw is not None and (isinstance(sw, bool) or not isinstance(sw, (int, float)) or not sw >= 0 or sw != sw
                           or sw == float("inf")):
        raise ValueError(f"recipe {recipe.name!r}: sink_weight must be a finite number >= 0 (or none: each "
                         f"statistic's default), got {sw!r}")
    if int(recipe.calib_batch_size) < 1:
        raise ValueError(f"recipe {recipe.name!r}: calib_batch_size must be >= 1, got {recipe.calib_batch_size}")
    check_layer_config(recipe.layer, recipe, "layer")
    check_attention_config(recipe.attention, recipe)
    if (recipe.reconstruction is not None and recipe.layer.rank == 0
            and not any(int(u.get("rank", 0) or 0) > 0 for _p, u in recipe.overrides)):
        raise ValueError(f"recipe {recipe.name!r}: rank=0 but the recipe has the reconstruction stage "
                         f"{recipe.reconstruction!r}, which would do nothing; valid ranks: 1..min(in, out) (or a "
                         f"recipe without {recipe.reconstruction!r})")
    for pattern, upd in recipe.overrides:
        bad = set(upd) - {f.name for f in dataclasses.fields(LayerConfig)}
        if bad:
            raise ValueError(f"recipe {recipe.name!r}: override {pattern!r} has unknown field(s) {sorted(bad)}; "
                             f"valid: {[f.name for f in dataclasses.fields(LayerConfig)]}")
        check_layer_config(dataclasses.replace(recipe.layer, **dict(upd)), recipe, f"override {pattern!r}")
    return recipe


def check_recipe_accumulator(recipe: Recipe) -> None:
    """``accumulator`` parses (``hwsim.matmul`` grammar) and is fp32 unless ``mode`` is exact; the
    error names the key, the value and the valid forms."""
    from .qlinear import check_accumulator

    acc = check_accumulator(recipe.accumulator, f"recipe {recipe.name!r}: accumulator")
    if recipe.mode != "exact" and acc.name != "fp32":
        raise ValueError(f"recipe {recipe.name!r}: accumulator {recipe.accumulator!r} needs mode 'exact' (mode is "
                         f"{recipe.mode!r}; fake mode sums in fp32)")


def check_attention_config(att: Any, recipe: Recipe) -> None:
    """Attention quantizers: an AttentionConfig, formats resolvable, axis valid (errors name the field)."""
    from .attention import AXES
    from .qlinear import resolve_format

    if not isinstance(att, AttentionConfig):
        raise ValueError(f"recipe {recipe.name!r}: attention must be an AttentionConfig (fields "
                         f"{', '.join(f.name for f in dataclasses.fields(AttentionConfig))}), got {type(att).__name__}")
    for f in ("q", "k", "v", "p"):
        resolve_format(getattr(att, f), f"recipe {recipe.name!r} attention: {f}")
    if att.axis not in AXES:
        raise ValueError(f"recipe {recipe.name!r} attention: axis {att.axis!r} is not valid; valid: {', '.join(AXES)}")


def check_layer_config(cfg: LayerConfig, recipe: Recipe, where: str) -> None:
    """Formats resolvable, rank sane, exact mode only with reduction-axis blocking."""
    from .qlinear import _is_blocked, resolve_format

    specs = {}
    for f in ("w", "x", "a", "b", "xa", "xab", "bias"):
        specs[f] = resolve_format(getattr(cfg, f), f"recipe {recipe.name!r} {where}: {f}")
    if cfg.skip:
        return
    if specs["w"] is None:
        raise ValueError(f"recipe {recipe.name!r} {where}: w is None but the {recipe.rounding!r} stage needs a weight "
                         "format (skip the layer instead)")
    if cfg.lowrank_axes not in LOWRANK_AXES:
        raise ValueError(f"recipe {recipe.name!r} {where}: lowrank_axes {cfg.lowrank_axes!r} is not valid; valid: "
                         f"{', '.join(LOWRANK_AXES)}")
    if isinstance(cfg.rank, bool) or not isinstance(cfg.rank, int) or cfg.rank < 0:
        raise ValueError(f"recipe {recipe.name!r} {where}: rank must be an int >= 0, got {cfg.rank!r}")
    if cfg.rank > 0 and recipe.reconstruction is None:
        raise ValueError(f"recipe {recipe.name!r} {where}: rank={cfg.rank} but the recipe has no reconstruction "
                         f"stage ({', '.join(stage_names('reconstruction'))})")
    if recipe.mode == "exact":
        for f, tensor in (("w", "W"), ("x", "X")):
            s = specs[f]
            if s is None or not _is_blocked(s):
                raise ValueError(f"recipe {recipe.name!r} {where}: exact mode needs {tensor} ({f}) in a block or "
                                 f"scaled-integer format blocked along the reduction axis, got "
                                 f"{getattr(s, 'name', None)!r}")
        if cfg.rank > 0 and recipe.reconstruction is not None:
            if cfg.lowrank_axes != "reduction":
                raise ValueError(f"recipe {recipe.name!r} {where}: exact mode needs A blocked along in and B along k "
                                 f"(lowrank_axes='reduction'), got lowrank_axes={cfg.lowrank_axes!r}; A and B "
                                 "would be blocked along a non-reduction axis")
            for f, tensor in (("a", "A"), ("b", "B"), ("xa", "XA")):
                s = specs[f]
                if s is None or not _is_blocked(s):
                    raise ValueError(f"recipe {recipe.name!r} {where}: exact mode needs {tensor} ({f}) in a block or "
                                     f"scaled-integer format, got {getattr(s, 'name', None)!r}")
