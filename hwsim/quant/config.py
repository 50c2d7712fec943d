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
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "LayerConfig",
    "Recipe",
    "TRANSFORMS",
    "ROUNDINGS",
    "RECONSTRUCTIONS",
    "STAT_NEEDS",
    "PRESETS",
    "get_recipe",
    "list_recipes",
    "validate_recipe",
    "with_formats",
]

TRANSFORMS = ("fold_norms",)
ROUNDINGS = ("rtn", "gptq")
RECONSTRUCTIONS = ("lqer", "l2qer", "qera-approx", "qera-exact")
#: stages of the spec that this version does not implement (clear error instead of a KeyError)
NOT_IMPLEMENTED = {"ostquant": "transform", "tesseraq": "rounding"}
#: statistics each stage consumes (docs/spec/algorithms.md §2.2)
STAT_NEEDS = {"rtn": (), "gptq": ("rxx",), "lqer": (), "l2qer": ("mean_abs_lqer",), "qera-approx": ("mean_sq",),
              "qera-exact": ("rxx",), "fold_norms": ()}
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
    stats_source: str = "fp"
    calib_batch_size: int = 2
    #: weight of each calibration sequence's first position (BOS, the attention sink) in R_xx
    #: (docs/spec/algorithms.md §2.2 with a position weight; 1 = every token counts once; issue 17)
    sink_weight: float = 1.0
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    seed: int = 0

    # -- stage queries -------------------------------------------------------------------------
    @property
    def transforms(self) -> tuple[str, ...]:
        return tuple(s for s in self.stages if s in TRANSFORMS)

    @property
    def rounding(self) -> str:
        return next(s for s in self.stages if s in ROUNDINGS)

    @property
    def reconstruction(self) -> str | None:
        return next((s for s in self.stages if s in RECONSTRUCTIONS), None)

    def stat_kinds(self) -> tuple[str, ...]:
        kinds: list[str] = []
        for s in self.stages:
            kinds.extend(STAT_NEEDS.get(s, ()))
        return tuple(dict.fromkeys(kinds))

    def stage_options(self, stage: str) -> dict[str, Any]:
        return dict(self.options.get(stage, {}))

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
            "stats_source": self.stats_source,
            "calib_batch_size": self.calib_batch_size,
            "sink_weight": self.sink_weight,
            "options": {k: dict(v) for k, v in self.options.items()},
            "seed": self.seed,
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
            stats_source=d.get("stats_source", "fp"),
            calib_batch_size=int(d.get("calib_batch_size", 2)),
            sink_weight=float(d.get("sink_weight", 1.0)),
            options={k: dict(v) for k, v in d.get("options", {}).items()},
            seed=int(d.get("seed", 0)),
        )


def _match(pattern: str, qualified: str, short: str) -> bool:
    return fnmatch.fnmatchcase(qualified, pattern) or fnmatch.fnmatchcase(short, pattern)


# ------------------------------------------------------------------------------------------------
# Presets (docs/spec/algorithms.md §5)
# ------------------------------------------------------------------------------------------------

_LQER_LAYER = LayerConfig(w="bfp4", x="bfp8", a="bfp8", b="bfp8", xa="bfp8", xab="bfp8", rank=32, lowrank_axes="code")
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
}


def list_recipes() -> list[str]:
    return sorted(PRESETS)


def get_recipe(name_or_recipe: str | Recipe | Mapping[str, Any], **changes: Any) -> Recipe:
    """A preset by name (or a Recipe / its dict), with top-level fields replaced by ``changes``.

    Stage pipelines may also be given directly as ``"gptq+l2qer"`` (stages joined by ``+``), which
    takes the layer formats of the reconstruction's preset (or of ``rtn``/``gptq``).
    """
    if isinstance(name_or_recipe, Recipe):
        recipe = name_or_recipe
    elif isinstance(name_or_recipe, Mapping):
        recipe = Recipe.from_dict(name_or_recipe)
    elif isinstance(name_or_recipe, str):
        key = name_or_recipe.strip().lower()
        if key in PRESETS:
            recipe = PRESETS[key]
        elif "+" in key:
            stages = tuple(s.strip() for s in key.split("+"))
            _check_stage_names(stages)
            base_name = next((s for s in reversed(stages) if s in PRESETS), "rtn")
            base = PRESETS[base_name]
            recipe = dataclasses.replace(base, name=key, stages=stages,
                                         stats_source="sequential" if "gptq" in stages else "fp")
        else:
            hint = ""
            import difflib

            close = difflib.get_close_matches(key, list(PRESETS), n=1)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
            if key in NOT_IMPLEMENTED:
                raise ValueError(f"recipe: {name_or_recipe!r} ({NOT_IMPLEMENTED[key]}) is not implemented in this "
                                 f"version; available: {', '.join(list_recipes())}")
            raise ValueError(f"recipe: unknown recipe {name_or_recipe!r}{hint}; available: "
                             f"{', '.join(list_recipes())}, or stages joined by '+' from "
                             f"{', '.join(TRANSFORMS + ROUNDINGS + RECONSTRUCTIONS)}")
    else:
        raise ValueError(f"recipe: expected a name, a Recipe or a dict, got {type(name_or_recipe).__name__}")
    if changes:
        if "layer" in changes and isinstance(changes["layer"], Mapping):
            changes["layer"] = dataclasses.replace(recipe.layer, **changes["layer"])
        recipe = dataclasses.replace(recipe, **changes)
    return recipe


def with_formats(recipe: Recipe, *, w: str | None = None, a: str | None = None, lowrank: str | None = None,
                 rank: int | None = None, mode: str | None = None) -> Recipe:
    """CLI-style format changes: ``w`` weight; ``a`` activations (X, and the branch outputs XA/XAB
    and the factors A/B where the preset quantizes them); ``lowrank`` A and B only; ``rank`` k.
    ``"none"`` (or ``"hp"``) as a value means high precision / bypass."""
    lay = recipe.layer
    upd: dict[str, Any] = {}

    def val(v):
        return None if str(v).lower() in ("none", "hp", "fp", "bypass") else v

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
    return dataclasses.replace(recipe, **changes)


# ------------------------------------------------------------------------------------------------
# Validation (docs/spec/algorithms.md §5: before anything runs)
# ------------------------------------------------------------------------------------------------


def _check_stage_names(stages) -> None:
    known = TRANSFORMS + ROUNDINGS + RECONSTRUCTIONS
    for s in stages:
        if s in NOT_IMPLEMENTED:
            raise ValueError(f"recipe stage {s!r} ({NOT_IMPLEMENTED[s]}) is not implemented in this version; "
                             f"implemented stages: {', '.join(known)}")
        if s not in known:
            raise ValueError(f"recipe stage {s!r} is unknown; valid stages: {', '.join(known)}")


def validate_recipe(recipe: Recipe) -> Recipe:
    """Check stage order, options and the formats of the base layer and every override.

    Raises ValueError naming the offending stage or field. Returns the recipe unchanged.
    """
    stages = tuple(recipe.stages)
    _check_stage_names(stages)
    kinds = ["transform" if s in TRANSFORMS else "rounding" if s in ROUNDINGS else "reconstruction" for s in stages]
    n_round = kinds.count("rounding")
    if n_round != 1:
        raise ValueError(f"recipe {recipe.name!r}: stages {list(stages)} must contain exactly one rounding stage "
                         f"({', '.join(ROUNDINGS)}), found {n_round}")
    r_idx = kinds.index("rounding")
    if any(k == "transform" for k in kinds[r_idx:]):
        raise ValueError(f"recipe {recipe.name!r}: stages {list(stages)}: no transform may follow the rounding "
                         "stage (it would invalidate the codes)")
    n_rec = kinds.count("reconstruction")
    if n_rec > 1:
        raise ValueError(f"recipe {recipe.name!r}: stages {list(stages)}: at most one reconstruction stage")
    if n_rec and kinds.index("reconstruction") < r_idx:
        raise ValueError(f"recipe {recipe.name!r}: stages {list(stages)}: the reconstruction must come after the "
                         "rounding stage (it corrects that rounding's error)")
    if recipe.mode not in MODES:
        raise ValueError(f"recipe {recipe.name!r}: mode {recipe.mode!r} is not valid; valid: {', '.join(MODES)}")
    if recipe.stats_source not in STATS_SOURCES:
        raise ValueError(f"recipe {recipe.name!r}: stats_source {recipe.stats_source!r} is not valid; valid: "
                         f"{', '.join(STATS_SOURCES)}")
    sw = recipe.sink_weight
    if isinstance(sw, bool) or not isinstance(sw, (int, float)) or not sw >= 0 or sw != sw or sw == float("inf"):
        raise ValueError(f"recipe {recipe.name!r}: sink_weight must be a finite number >= 0, got {sw!r}")
    if int(recipe.calib_batch_size) < 1:
        raise ValueError(f"recipe {recipe.name!r}: calib_batch_size must be >= 1, got {recipe.calib_batch_size}")
    for st in recipe.options:
        if st not in stages:
            raise ValueError(f"recipe {recipe.name!r}: options given for stage {st!r}, which is not in {list(stages)}")
    check_layer_config(recipe.layer, recipe, "layer")
    for pattern, upd in recipe.overrides:
        bad = set(upd) - {f.name for f in dataclasses.fields(LayerConfig)}
        if bad:
            raise ValueError(f"recipe {recipe.name!r}: override {pattern!r} has unknown field(s) {sorted(bad)}; "
                             f"valid: {[f.name for f in dataclasses.fields(LayerConfig)]}")
        check_layer_config(dataclasses.replace(recipe.layer, **dict(upd)), recipe, f"override {pattern!r}")
    return recipe


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
                         f"stage ({', '.join(RECONSTRUCTIONS)})")
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
