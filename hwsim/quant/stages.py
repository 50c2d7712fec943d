"""The stage registry: every transform, rounding and reconstruction stage of a recipe, registered once.

A stage is one decorated function in one file under ``hwsim/quant/algorithms/`` (the way llmc's
``@ALGO_REGISTRY`` makes a new method one file)::

    from hwsim.quant.stages import Option, register_stage

    @register_stage("my-round", kind="rounding", stats=("rxx",),
                    options=(Option("alpha", 0.5, "blend factor", check=lambda v: 0 <= v <= 1,
                                    valid="a number in [0, 1]"),))
    def my_round(W, fmt, stats, *, layer, cache, alpha):
        ...                                        # -> (QTensor, info dict)

after which ``"my-round+qera-exact"`` is a valid pipeline everywhere (``quantize_model``,
``hwsim quantize --recipe``, study files). What a stage declares is all the pipeline, recipe
validation and ``--list-recipes`` know about it:

- ``kind``: ``"transform"`` (changes the model before rounding), ``"rounding"`` (defines W̃ and
  the codes; exactly one per recipe) or ``"reconstruction"`` (a low-rank correction of that
  rounding's error; at most one, after the rounding) — docs/spec/algorithms.md §5;
- ``stats``: the calibration statistics it reads (names of docs/spec/algorithms.md §2.2);
- ``options``: keyword options with defaults and documentation; anything else is rejected;
- ``block_data``: a rounding stage that reconstructs whole decoder blocks (TesseraQ) gets each
  block's quantized-trajectory inputs and full-precision targets instead of per-linear calls;
- ``calib``: a transform that needs calibration token ids (e.g. one that trains);
- ``stats_source``: where a pipeline string built around this stage takes its statistics from
  (``"sequential"`` for GPTQ, whose Hessian sees the already quantized earlier blocks).

Call contracts by kind (the pipeline passes every option, defaults filled in):

- transform: ``fn(model, adapter, ctx, **options) -> None`` (in place; ``ctx`` a
  :class:`TransformContext`: the recipe, the calibration token ids when the stage declares
  ``calib=True``, recorded events, and the online transforms it leaves for the QLinears);
- rounding: ``fn(W, fmt, stats, *, layer, cache, **options) -> (QTensor, info)`` with W the
  float32 weight [out, in], ``stats`` the layer's statistics dict, ``cache`` a dict shared by the
  linears of one input (None outside the pipeline); optionally ``group_fn(items, fmt, stats,
  cache, **options) -> {name: (QTensor, info)}`` for the linears of one input together
  (``items``: ``[(name, W)]``), and for ``block_data`` stages ``block_fn(data, **options) ->
  {name: (QTensor, info)}`` with ``data`` a :class:`BlockData`;
- reconstruction: ``fn(W, Wq, stats, rank, *, fmt_a, fmt_b, axes, layer, **options) ->
  Reconstruction`` (A [in, k], B [k, out]).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["KINDS", "Option", "Stage", "BlockData", "TransformContext", "register_stage", "unregister_stage", "get_stage",
           "all_stages", "stage_names"]

#: stage kinds in pipeline order (docs/spec/algorithms.md §5)
KINDS = ("transform", "rounding", "reconstruction")
STATS_SOURCES = ("fp", "sequential")
#: the package whose modules register the built-in stages on import
BUILTIN_PACKAGE = "hwsim.quant.algorithms"

_REGISTRY: dict[str, "Stage"] = {}
_builtins_loaded = False


@dataclass(frozen=True)
class Option:
    """One keyword option of a stage: name, default, one line of documentation, and what is valid
    (``choices``, or a ``check`` predicate with ``valid`` describing it for error messages)."""

    name: str
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    valid: str = ""

    def validate(self, value: Any, stage: str) -> Any:
        if self.choices is not None and not any(_same(value, c) for c in self.choices):
            raise ValueError(f"stage {stage!r} option {self.name!r}: {value!r} is not valid; valid: "
                             f"{', '.join(repr(c) for c in self.choices)}")
        if self.check is not None:
            try:
                ok = bool(self.check(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"stage {stage!r} option {self.name!r}: {value!r} is not valid; valid: "
                                 f"{self.valid or 'see the stage documentation'}")
        return value

    def describe(self) -> str:
        what = f"one of {', '.join(repr(c) for c in self.choices)}" if self.choices else self.valid
        return f"{self.name}={self.default!r}: {self.doc}" + (f" ({what})" if what else "")


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and not isinstance(a, bool)
                                              and isinstance(b, (int, float)) and not isinstance(b, bool) and a == b)


@dataclass(frozen=True)
class Stage:
    """A registered stage (see the module docstring for the call contracts)."""

    name: str
    kind: str
    fn: Callable[..., Any]
    doc: str = ""
    stats: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    block_data: bool = False
    stats_source: str = "fp"
    group_fn: Callable[..., Any] | None = None
    block_fn: Callable[..., Any] | None = None
    calib: bool = False

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def resolve_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults with ``given`` applied; an unknown option or a bad value raises ValueError
        naming the stage, the option and what is valid."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.option_names))
        if unknown:
            valid = ", ".join(self.option_names) or "none (this stage takes no options)"
            hint = difflib.get_close_matches(unknown[0], self.option_names, n=1)
            raise ValueError(f"stage {self.name!r} has no option {unknown[0]!r}"
                             f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; valid options: {valid}")
        out = {}
        for opt in self.options:
            out[opt.name] = opt.validate(given[opt.name], self.name) if opt.name in given else opt.default
        return out

    def summary(self) -> str:
        """One line for ``--list-recipes``: name, kind, statistics, options."""
        extra = []
        if self.stats:
            extra.append(f"stats: {', '.join(self.stats)}")
        if self.block_data:
            extra.append("block reconstruction")
        if self.calib:
            extra.append("trains on calibration data")
        if self.options:
            extra.append("options: " + ", ".join(f"{o.name}={o.default!r}" for o in self.options))
        first = self.doc.strip().splitlines()[0] if self.doc.strip() else ""
        return f"{self.name:14s} {self.kind:14s} {first}" + (f" [{'; '.join(extra)}]" if extra else "")


@dataclass
class BlockData:
    """What a block-reconstruction rounding stage gets for one decoder block.

    ``block_fn(x)`` runs the block on hidden states x [b, T, d] with whatever its linears compute at
    the time of the call; ``linears`` maps qualified names to the block's ``nn.Linear`` modules to
    quantize, ``weight_formats`` / ``act_quant`` their weight format and their input's fake
    quantizer (None: not quantized); ``inputs`` (mini-batches [b, T, d], N sequences in all) are
    the block's inputs on the quantized trajectory (outputs of the already quantized blocks) and
    ``targets`` (the same shapes) the full-precision block's outputs on the full-precision
    trajectory; ``events`` collects recorded
    fall-backs; ``index`` is the block's position, ``block`` the block module (its own parameters
    must not train) and ``progress`` whether to show progress.
    """

    index: int
    block_fn: Callable[[Any], Any]
    linears: Mapping[str, Any]
    weight_formats: Mapping[str, Any]
    act_quant: Mapping[str, Callable[[Any], Any] | None]
    inputs: Any
    targets: Any
    events: list[dict[str, Any]] = field(default_factory=list)
    progress: bool = False
    block: Any = None


@dataclass
class TransformContext:
    """What a transform stage gets besides the model: the ``recipe`` (its layer formats are the
    targets a training transform fake-quantizes with), ``calib`` token ids [N, T] (None unless the
    stage declares ``calib=True``), ``events`` to record fall-backs in, ``progress``, and
    ``pre_transforms``, which the transform fills with the online transforms it leaves in the
    model: ``{qualified linear name: (T [in, in], kind)}`` (e.g. ``(H_m, "hadamard")`` for
    down_proj); each becomes that QLinear's ``pre_transform`` (``x' = x·T`` before its activation
    quantizer) and is recorded for the cost model. Until the QLinear replaces the linear, the
    transform keeps the model's function by its own means (e.g. a forward pre-hook)."""

    recipe: Any
    calib: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)
    progress: bool = False
    pre_transforms: dict[str, tuple[Any, str]] = field(default_factory=dict)


def register_stage(name: str, *, kind: str, stats: Sequence[str] = (), options: Iterable[Option] = (),
                   block_data: bool = False, stats_source: str = "fp", group_fn: Callable | None = None,
                   block_fn: Callable | None = None, calib: bool = False, doc: str | None = None,
                   replace: bool = False):
    """Decorator registering ``fn`` as the stage ``name`` (see the module docstring).

    A name is registered once: registering it again raises unless ``replace=True``.
    """
    key = str(name).strip().lower()
    if not key or "+" in key or any(c.isspace() for c in key):
        raise ValueError(f"stage name {name!r}: must be non-empty, without '+' or spaces")
    if kind not in KINDS:
        raise ValueError(f"stage {key!r}: kind {kind!r} is not valid; valid: {', '.join(KINDS)}")
    if stats_source not in STATS_SOURCES:
        raise ValueError(f"stage {key!r}: stats_source {stats_source!r} is not valid; valid: "
                         f"{', '.join(STATS_SOURCES)}")
    if block_data and (kind != "rounding" or block_fn is None):
        raise ValueError(f"stage {key!r}: block_data=True needs kind='rounding' and a block_fn")
    if calib and kind != "transform":
        raise ValueError(f"stage {key!r}: calib=True is for transforms (other kinds get statistics or block data)")
    opts = tuple(options)
    names = [o.name for o in opts]
    if len(set(names)) != len(names):
        raise ValueError(f"stage {key!r}: duplicate option names {names}")

    def wrap(fn: Callable) -> Callable:
        if key in _REGISTRY and not replace:
            raise ValueError(f"stage {key!r} is already registered (by {_REGISTRY[key].fn.__module__}); "
                             "pass replace=True to override it")
        _REGISTRY[key] = Stage(name=key, kind=kind, fn=fn, doc=doc if doc is not None else (fn.__doc__ or ""),
                               stats=tuple(stats), options=opts, block_data=block_data,
                               stats_source=stats_source, group_fn=group_fn, block_fn=block_fn, calib=calib)
        return fn

    return wrap


def unregister_stage(name: str) -> None:
    """Remove a stage (for tests that register their own)."""
    _REGISTRY.pop(str(name).strip().lower(), None)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module(BUILTIN_PACKAGE)


def all_stages() -> dict[str, Stage]:
    """Every registered stage by name, built-ins first in pipeline order (transform, rounding,
    reconstruction), then by registration."""
    _load_builtins()
    return {s.name: s for kind in KINDS for s in _REGISTRY.values() if s.kind == kind}


def stage_names(kind: str | None = None) -> tuple[str, ...]:
    return tuple(n for n, s in all_stages().items() if kind is None or s.kind == kind)


def get_stage(name: str) -> Stage:
    """The stage ``name``; an unknown name raises ValueError listing the valid ones by kind."""
    stages = all_stages()
    key = str(name).strip().lower()
    if key in stages:
        return stages[key]
    hint = difflib.get_close_matches(key, list(stages), n=1)
    listing = "; ".join(f"{k}: {', '.join(stage_names(k))}" for k in KINDS)
    raise ValueError(f"recipe stage {name!r} is unknown{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                     f"valid stages — {listing}")
