"""Study files: a TOML description of a design space, validated up front and expanded into points.

    study = Study.from_toml("studies/default.toml")     # StudyError lists every problem at once
    for dp in study.points():                            # accuracy-major DesignPoints
        ...

A study file has four tables (every list-valued field also accepts a scalar; lists are crossed)::

    [study]      name (required, [A-Za-z0-9_.-]+), description, db, report_dir
    [protocol]   model, eval_corpus, calib_corpus, seq_len, n_tokens, n_calib, calib_len, seed
    [accuracy]   recipes, modes, accumulators, ranks, qsur, and EITHER a grid (w, x, lowrank_fmt) OR
                 [[accuracy.settings]] (name, w, x, lowrank_fmt, rank: zipped bundles);
                 [[accuracy.point]] explicit points (AccuracyPoint fields + an optional name);
                 [[accuracy.exclude]] drops grid points matching all given fields
    [hardware]   rows, cols, dataflow, node_nm, library, sram_kib, dram, dram_gbps, clock_mhz, acc,
                 prefill_seq, decode_context, batch; [[hardware.point]], [[hardware.exclude]]

Accuracy points are ``protocol x recipes x (settings | w x x x lowrank_fmt) x ranks x modes x
accumulators`` (exact mode's accumulator, ``hwsim.matmul`` grammar, stored under its canonical name;
a fake-mode point keeps "fp32"), then
the explicit points; exclusions prune the expanded grid only (an explicit point is kept as
written). A recipe without a reconstruction stage ignores rank and lowrank_fmt: both are set to
None for its points, and the duplicates this creates collapse. Explicit accuracy points take
their protocol fields from the first [protocol] value, explicit hardware points every field from
the first [hardware] value. Format values "none" (or "hp", "fp", "bypass") mean high precision and
are stored as "none"; an accumulator given as a width (24 or "24") is stored as "int24".

Validation runs before any model or corpus is loaded: types (pydantic), unknown keys (with a
did-you-mean), format names (``hwsim.formats``), recipes (``hwsim.quant``; each expanded point is
checked with ``validate_recipe``), corpora, models, and each distinct technology
(``hwsim.cost_models.Technology``). Checking recipes imports ``hwsim.quant`` and so torch.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Iterable, Mapping, Sequence, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from hwsim.dse.points import AccuracyPoint, DesignPoint, HardwarePoint

__all__ = ["Study", "StudyError", "PROTOCOL_FIELDS", "HARDWARE_FIELDS", "DEFAULT_REPORTS"]

#: AccuracyPoint fields set by [protocol]
PROTOCOL_FIELDS = ("model", "eval_corpus", "calib_corpus", "seq_len", "n_tokens", "n_calib", "calib_len", "seed")
#: HardwarePoint fields, all crossed from [hardware]
HARDWARE_FIELDS = tuple(f.name for f in fields(HardwarePoint))
#: parent of the default report directory (relative to the working directory)
DEFAULT_REPORTS = Path("reports")

_HP_WORDS = ("none", "hp", "fp", "bypass")  # with_formats' spellings of "high precision"
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


class StudyError(ValueError):
    """Every problem of a study file; ``problems`` holds one ``"key.path[i]: message"`` per line."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = str(source)
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__("\n".join([f"study {self.source}: {n} problem{'s' if n != 1 else ''}"]
                                   + [f"  {p}" for p in self.problems]))


# ------------------------------------------------------------------------------------------------
# item checks (run inside pydantic, so a bad list item is reported at its index)
# ------------------------------------------------------------------------------------------------

def _one_line(msg: str, limit: int = 600) -> str:
    """First line of an error message, or its lines up to a grammar dump, joined; capped."""
    lines = [ln.strip() for ln in str(msg).strip().splitlines() if ln.strip()]
    if not lines:
        return str(msg)
    keep = []
    for ln in lines:
        if ln.lower().startswith("grammar"):
            keep.append("(grammar: hwsim formats list)")
            break
        keep.append(ln)
    text = " ".join(keep)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hint(value: str, choices: Iterable[str], valid: Iterable[str] | None = None) -> str:
    """``"; did you mean 'x'? valid: a, b"`` (the question only where a choice is close)."""
    choices = list(choices)
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    shown = ", ".join(choices if valid is None else valid)
    return (f"; did you mean {close[0]!r}? valid: " if close else "; valid: ") + shown


def _check_format(v: str) -> str:
    s = v.strip()
    if s.lower() in _HP_WORDS:
        return "none"
    from hwsim import formats

    try:
        formats.get(s)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(_one_line(str(exc))) from None
    return s


def _quant():
    from hwsim.quant import config

    return config


def _check_recipe(v: str) -> str:
    cfg = _quant()
    key = "+".join(s.strip() for s in v.strip().lower().split("+"))
    try:
        cfg.validate_recipe(cfg.get_recipe(key))
    except ValueError as exc:
        raise ValueError(_one_line(str(exc)).removeprefix("recipe: ")) from None
    return key


def _check_mode(v: str) -> str:
    modes = _quant().MODES
    if v not in modes:
        raise ValueError(f"{v!r} is not valid{_hint(v, modes)}")
    return v


def _check_model(v: str) -> str:
    from hwsim.eval.models import ZOO, list_models

    if v in ZOO or Path(v).expanduser().is_dir():
        return v
    raise ValueError(f"model {v!r} is neither an existing directory nor a zoo model{_hint(v, list_models())}")


def _check_corpus(v: str) -> str:
    from hwsim.eval import data

    try:
        data.check_corpus(v)
    except ValueError:
        named = [c for c in data.CORPORA if ":" not in c]
        raise ValueError(f"corpus {v!r} is not valid{_hint(v, named, data.CORPORA)}") from None
    if v.startswith("file:") and not Path(v[5:]).expanduser().is_file():
        raise ValueError(f"corpus {v!r}: {Path(v[5:]).expanduser()} is not a file")
    return v


def _check_dataflow(v: str) -> str:
    from hwsim.cost_models.array import DATAFLOWS

    if v not in DATAFLOWS:
        raise ValueError(f"{v!r} is not valid{_hint(v, DATAFLOWS)}")
    return v


def _check_library(v: str) -> str:
    from hwsim.cost_models.tech import LIBRARIES

    if v not in LIBRARIES:
        raise ValueError(f"library {v!r} is unknown{_hint(v, LIBRARIES)}")
    return v


def _check_dram(v: str) -> str:
    from hwsim.cost_models.tech import _dram_types

    types = sorted(_dram_types())
    if v not in types:
        raise ValueError(f"DRAM type {v!r} is unknown{_hint(v, types)}")
    return v


def _check_node(v: float) -> float:
    from hwsim.cost_models.tech import parse_node

    try:
        return float(parse_node(v))
    except ValueError as exc:
        raise ValueError(_one_line(str(exc))) from None


def _check_acc(v: Any) -> str | None:
    """A hardware accumulator of the one grammar (``hwsim.matmul.datapath.parse_accumulator``), stored
    under its canonical name: 24, "24", "int24" and "window(24)" all become "int24"."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"expected an accumulator string or an integer width, got {type(v).__name__} {v!r}")
    from hwsim.cost_models.units import accumulator

    try:
        return accumulator(v).name
    except ValueError as exc:
        raise ValueError(_one_line(str(exc))) from None


def _check_datapath_acc(v: Any) -> str:
    """Exact mode's accumulator (``hwsim.matmul`` grammar), stored under its canonical name."""
    if not isinstance(v, str):
        raise ValueError(f"expected an accumulator string, got {type(v).__name__} {v!r}")
    from hwsim.quant.qlinear import check_accumulator

    try:
        return check_accumulator(v, "accumulator").name
    except ValueError as exc:
        raise ValueError(_one_line(str(exc)).removeprefix("accumulator: ")) from None


def _check_name(v: str) -> str:
    if not _NAME_RE.fullmatch(v):
        raise ValueError(f"{v!r} is not a valid study name; use letters, digits, '_', '.', '-'")
    return v


_SCALAR = (str, int, float, bool)


def _check_excl_value(v: Any) -> Any:
    items = v if isinstance(v, list) else [v]
    for it in items:
        if not isinstance(it, _SCALAR):
            raise ValueError(f"expected a value, a list of values or a glob string, got {type(it).__name__} {it!r}")
    return v


def _listify(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v if isinstance(v, list) else [v]


def _as_list(item: Any) -> Any:
    return Annotated[list[item], BeforeValidator(_listify)]


Fmt = Annotated[str, AfterValidator(_check_format)]
RecipeName = Annotated[str, AfterValidator(_check_recipe)]
Mode = Annotated[str, AfterValidator(_check_mode)]
Rank = Annotated[int, Field(ge=1)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
ModelName = Annotated[str, AfterValidator(_check_model)]
Corpus = Annotated[str, AfterValidator(_check_corpus)]
Dataflow = Annotated[str, AfterValidator(_check_dataflow)]
Library = Annotated[str, AfterValidator(_check_library)]
Dram = Annotated[str, AfterValidator(_check_dram)]
Node = Annotated[PosFloat, AfterValidator(_check_node)]
Acc = Annotated[Any, AfterValidator(_check_acc)]
DatapathAcc = Annotated[Any, AfterValidator(_check_datapath_acc)]
ExclValue = Annotated[Any, AfterValidator(_check_excl_value)]

_ACC_DEFAULTS = {f.name: f.default for f in fields(AccuracyPoint)}
_HW_DEFAULTS = {f.name: f.default for f in fields(HardwarePoint)}


# ------------------------------------------------------------------------------------------------
# schema
# ------------------------------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _StudySection(_Model):
    name: Annotated[str, AfterValidator(_check_name)]
    description: str = ""
    db: str | None = None
    report_dir: str | None = None


class _Protocol(_Model):
    model: _as_list(ModelName) = [_ACC_DEFAULTS["model"]]
    eval_corpus: _as_list(Corpus) = [_ACC_DEFAULTS["eval_corpus"]]
    calib_corpus: _as_list(Corpus) = [_ACC_DEFAULTS["calib_corpus"]]
    seq_len: _as_list(PosInt) = [_ACC_DEFAULTS["seq_len"]]
    n_tokens: _as_list(PosInt) = [_ACC_DEFAULTS["n_tokens"]]
    n_calib: _as_list(PosInt) = [_ACC_DEFAULTS["n_calib"]]
    calib_len: _as_list(PosInt) = [_ACC_DEFAULTS["calib_len"]]
    seed: _as_list(NonNegInt) = [_ACC_DEFAULTS["seed"]]


class _Setting(_Model):
    name: str | None = None
    w: Fmt | None = None
    x: Fmt | None = None
    lowrank_fmt: Fmt | None = None
    rank: Rank | None = None


class _AccuracyPointSpec(_Model):
    name: str | None = None
    model: ModelName | None = None
    eval_corpus: Corpus | None = None
    calib_corpus: Corpus | None = None
    seq_len: PosInt | None = None
    n_tokens: PosInt | None = None
    n_calib: PosInt | None = None
    calib_len: PosInt | None = None
    seed: NonNegInt | None = None
    recipe: RecipeName = _ACC_DEFAULTS["recipe"]
    w: Fmt | None = None
    x: Fmt | None = None
    lowrank_fmt: Fmt | None = None
    rank: Rank | None = None
    mode: Mode = _ACC_DEFAULTS["mode"]
    accumulator: DatapathAcc = _ACC_DEFAULTS["accumulator"]
    qsur: bool = _ACC_DEFAULTS["qsur"]


class _AccuracyExclude(_Model):
    model: ExclValue = None
    eval_corpus: ExclValue = None
    calib_corpus: ExclValue = None
    seq_len: ExclValue = None
    n_tokens: ExclValue = None
    n_calib: ExclValue = None
    calib_len: ExclValue = None
    seed: ExclValue = None
    recipe: ExclValue = None
    w: ExclValue = None
    x: ExclValue = None
    lowrank_fmt: ExclValue = None
    rank: ExclValue = None
    mode: ExclValue = None
    accumulator: ExclValue = None
    qsur: ExclValue = None


class _Accuracy(_Model):
    recipes: _as_list(RecipeName) = []
    modes: _as_list(Mode) = [_ACC_DEFAULTS["mode"]]
    accumulators: _as_list(DatapathAcc) = [_ACC_DEFAULTS["accumulator"]]
    #: measure QSUR before/after the transforms on every grid point (AccuracyPoint.qsur)
    qsur: bool = _ACC_DEFAULTS["qsur"]
    ranks: _as_list(Rank | None) = [None]
    w: _as_list(Fmt | None) | None = None
    x: _as_list(Fmt | None) | None = None
    lowrank_fmt: _as_list(Fmt | None) | None = None
    settings: _as_list(_Setting) = []
    point: _as_list(_AccuracyPointSpec) = []
    exclude: _as_list(_AccuracyExclude) = []


class _HardwarePointSpec(_Model):
    name: str | None = None
    rows: PosInt | None = None
    cols: PosInt | None = None
    dataflow: Dataflow | None = None
    node_nm: Node | None = None
    library: Library | None = None
    sram_kib: PosInt | None = None
    dram: Dram | None = None
    dram_gbps: PosFloat | None = None
    clock_mhz: PosFloat | None = None
    acc: Acc = None
    prefill_seq: PosInt | None = None
    decode_context: PosInt | None = None
    batch: PosInt | None = None


class _HardwareExclude(_Model):
    rows: ExclValue = None
    cols: ExclValue = None
    dataflow: ExclValue = None
    node_nm: ExclValue = None
    library: ExclValue = None
    sram_kib: ExclValue = None
    dram: ExclValue = None
    dram_gbps: ExclValue = None
    clock_mhz: ExclValue = None
    acc: ExclValue = None
    prefill_seq: ExclValue = None
    decode_context: ExclValue = None
    batch: ExclValue = None


class _Hardware(_Model):
    rows: _as_list(PosInt) = [_HW_DEFAULTS["rows"]]
    cols: _as_list(PosInt) = [_HW_DEFAULTS["cols"]]
    dataflow: _as_list(Dataflow) = [_HW_DEFAULTS["dataflow"]]
    node_nm: _as_list(Node) = [_HW_DEFAULTS["node_nm"]]
    library: _as_list(Library) = [_HW_DEFAULTS["library"]]
    sram_kib: _as_list(PosInt) = [_HW_DEFAULTS["sram_kib"]]
    dram: _as_list(Dram) = [_HW_DEFAULTS["dram"]]
    dram_gbps: _as_list(PosFloat | None) = [None]
    clock_mhz: _as_list(PosFloat | None) = [None]
    acc: _as_list(Acc) = [None]
    prefill_seq: _as_list(PosInt) = [_HW_DEFAULTS["prefill_seq"]]
    decode_context: _as_list(PosInt) = [_HW_DEFAULTS["decode_context"]]
    batch: _as_list(PosInt) = [_HW_DEFAULTS["batch"]]
    point: _as_list(_HardwarePointSpec) = []
    exclude: _as_list(_HardwareExclude) = []


class _StudyFile(_Model):
    study: _StudySection
    protocol: _Protocol = _Protocol()
    accuracy: _Accuracy = _Accuracy()
    hardware: _Hardware = _Hardware()


assert set(_AccuracyExclude.model_fields) == {f.name for f in fields(AccuracyPoint)}
assert set(_HardwareExclude.model_fields) == set(HARDWARE_FIELDS)
assert set(_Hardware.model_fields) - {"point", "exclude"} == set(HARDWARE_FIELDS)
assert set(_Protocol.model_fields) == set(PROTOCOL_FIELDS)


# ------------------------------------------------------------------------------------------------
# pydantic errors -> problems, and pruning the bad parts so the rest can still be checked
# ------------------------------------------------------------------------------------------------

_TYPE_WORDS = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
               "bool_type": "a boolean", "list_type": "a list", "model_type": "a table",
               "dict_type": "a table", "model_attributes_type": "a table"}
_PRUNED = object()


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _keys_at(loc: Sequence[Any]) -> list[str]:
    """Valid keys of the table at ``loc`` (the path of a table in the study file)."""
    cls: type[BaseModel] | None = _StudyFile
    for part in loc:
        if isinstance(part, int):
            continue
        if cls is None or part not in cls.model_fields:
            return []
        cls = _model_class(cls.model_fields[part].annotation)
    return list(cls.model_fields) if cls is not None else []


def _loc_text(loc: Sequence[Any], raw: Any) -> str:
    """``accuracy.settings[1].w``; an index is shown only where the file has a list."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            if isinstance(node, list):
                out += f"[{part}]"
                node = node[part] if 0 <= part < len(node) else None
            continue
        out += f".{part}" if out else str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out or "<top>"


def _doc_order(loc: Sequence[Any], raw: Any) -> tuple[int, ...]:
    """Position of ``loc`` in the file (tables and keys in the order written; absent keys last)."""
    out, node = [], raw
    for part in loc:
        if isinstance(node, dict):
            keys = list(node)
            out.append(keys.index(part) if part in node else len(keys))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if 0 <= part < len(node) else None
        else:
            out.append(part if isinstance(part, int) else 0)
            node = None
    return tuple(out)


def _message(err: Mapping[str, Any]) -> str:
    typ, inp, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if typ == "extra_forbidden":
        key = str(err["loc"][-1])
        valid = _keys_at(err["loc"][:-1])
        return f"unknown key {key!r}" + (_hint(key, valid) if valid else "")
    if typ == "missing":
        return "required key is missing"
    if typ == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[typ]
        bound = next(iter(ctx.values()), "?")
        return f"must be {op} {bound}, got {inp!r}"
    if typ in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[typ]}, got {type(inp).__name__} {inp!r}"
    return f"{err['msg']} (got {inp!r})"


_PLACEHOLDERS: dict[tuple, Any] = {("study",): {"name": "_"}}


def _prune(data: Any, errors: Iterable[Mapping[str, Any]], pruned: set[tuple]) -> bool:
    """Remove what each error points at (a missing key gets a placeholder), recording the
    removed paths in ``pruned``; True when anything changed."""
    changed = False
    for err in errors:
        loc = tuple(err["loc"])
        if not loc:
            continue
        if err["type"] == "missing":
            parent = data
            for part in loc[:-1]:
                parent = parent.get(part) if isinstance(parent, dict) else None
            if isinstance(parent, dict) and loc[-1] not in parent:
                parent[loc[-1]] = copy.deepcopy(_PLACEHOLDERS.get(loc, {} if len(loc) == 1 else "_"))
                changed = True
            continue
        parent, key, node, used = None, None, data, 0
        for part in loc:
            if isinstance(node, dict) and part in node:
                parent, key, node = node, part, node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                parent, key, node = node, part, node[part]
            elif isinstance(part, int) and used and not isinstance(node, list):
                pass  # index of a scalar (or a single table) that stands for a one-item list
            else:
                break
            used += 1
        if parent is not None and parent[key] is not _PRUNED:
            parent[key] = _PRUNED
            pruned.add(loc[:used])  # in validation coordinates (what later errors and checks see)
            changed = True
    _sweep(data)
    return changed


def _sweep(node: Any) -> None:
    if isinstance(node, dict):
        for k in list(node):
            v = node[k]
            if isinstance(v, list):
                v[:] = [x for x in v if x is not _PRUNED]
            if v is _PRUNED or (isinstance(v, list) and not v):
                del node[k]
            else:
                _sweep(v)
    elif isinstance(node, list):
        for x in node:
            _sweep(x)


def _parse(raw: Mapping[str, Any]) -> tuple[_StudyFile | None, list[str], set[tuple]]:
    """Validate ``raw``; on errors prune the bad parts and retry, so the rest is still checked.

    Returns the model (None if pruning could not make it valid), the problems and the pruned paths.
    """
    problems: list[str] = []
    data = copy.deepcopy(dict(raw))
    pruned: set[tuple] = set()
    for _ in range(5):
        try:
            return _StudyFile.model_validate(data), problems, pruned
        except ValidationError as exc:
            errors = sorted(exc.errors(include_url=False), key=lambda e: _doc_order(e["loc"], raw))
            # a required key that pruning removed is a consequence of a problem already reported
            problems.extend(f"{_loc_text(e['loc'], raw)}: {_message(e)}" for e in errors
                            if not (e["type"] == "missing" and tuple(e["loc"]) in pruned))
            if not _prune(data, errors, pruned):
                break
    return None, problems, pruned


# ------------------------------------------------------------------------------------------------
# expansion
# ------------------------------------------------------------------------------------------------

def _matches(value: Any, spec: Any) -> bool:
    if isinstance(spec, list):
        return any(_matches(value, s) for s in spec)
    if isinstance(spec, str):
        return fnmatch.fnmatchcase("" if value is None else str(value), spec)
    if isinstance(spec, bool) or isinstance(value, bool):
        return spec is value
    return value == spec


def _excluded(point: Any, excludes: Sequence[BaseModel]) -> bool:
    for ex in excludes:
        given = ex.model_fields_set
        if given and all(_matches(getattr(point, k), getattr(ex, k)) for k in given):
            return True
    return False


@dataclass(frozen=True)
class _Candidate:
    point: Any
    where: str  # location for problems
    name: str | None
    explicit: bool


def _reconstructs(recipe: str) -> bool:
    return _quant().get_recipe(recipe).reconstruction is not None


def _accuracy_point(fields_: Mapping[str, Any]) -> AccuracyPoint:
    d = dict(fields_)
    if not _reconstructs(d["recipe"]):
        d["rank"] = None
        d["lowrank_fmt"] = None
    return AccuracyPoint(**d)


def _expand_accuracy(spec: _StudyFile) -> tuple[list[_Candidate], list[_Candidate]]:
    """(grid candidates before exclusions, explicit candidates)."""
    acc, proto = spec.accuracy, spec.protocol
    protocols = [dict(zip(PROTOCOL_FIELDS, combo))
                 for combo in itertools.product(*(getattr(proto, f) for f in PROTOCOL_FIELDS))]
    if acc.settings:
        bundles = [(s.name, {"w": s.w, "x": s.x, "lowrank_fmt": s.lowrank_fmt},
                    [s.rank] if s.rank is not None else acc.ranks) for s in acc.settings]
    else:
        grids = [acc.w or [None], acc.x or [None], acc.lowrank_fmt or [None]]
        bundles = [(None, {"w": w, "x": x, "lowrank_fmt": lr}, acc.ranks) for w, x, lr in itertools.product(*grids)]
    grid = []
    for p in protocols:
        for recipe in acc.recipes:
            for name, fmts, ranks in bundles:
                for rank in ranks:
                    for mode in acc.modes:
                        for accum in acc.accumulators:
                            if mode != "exact":
                                accum = "fp32"   # fake mode sums in fp32: the duplicates collapse
                            pt = _accuracy_point({**p, "recipe": recipe, **fmts, "rank": rank, "mode": mode,
                                                  "accumulator": accum, "qsur": acc.qsur})
                            grid.append(_Candidate(pt, "accuracy", name, False))
    first = {f: getattr(proto, f)[0] for f in PROTOCOL_FIELDS}
    explicit = []
    for i, ps in enumerate(acc.point):
        d = {k: getattr(ps, k) for k in _ACC_DEFAULTS}
        for f in PROTOCOL_FIELDS:
            if d[f] is None:
                d[f] = first[f]
        explicit.append(_Candidate(_accuracy_point(d), f"accuracy.point[{i}]", ps.name, True))
    return grid, explicit


def _hardware_point(d: Mapping[str, Any]) -> HardwarePoint:
    d = dict(d)
    for f in ("node_nm", "dram_gbps", "clock_mhz"):  # 7 and 7.0 must give the same key
        if d[f] is not None:
            d[f] = float(d[f])
    return HardwarePoint(**d)


def _expand_hardware(spec: _StudyFile) -> tuple[list[_Candidate], list[_Candidate]]:
    hw = spec.hardware
    grid = [_Candidate(_hardware_point(dict(zip(HARDWARE_FIELDS, combo))), "hardware", None, False)
            for combo in itertools.product(*(getattr(hw, f) for f in HARDWARE_FIELDS))]
    first = {f: getattr(hw, f)[0] for f in HARDWARE_FIELDS}
    explicit = []
    for i, ps in enumerate(hw.point):
        d = {f: getattr(ps, f) if f in ps.model_fields_set else first[f] for f in HARDWARE_FIELDS}
        explicit.append(_Candidate(_hardware_point(d), f"hardware.point[{i}]", ps.name, True))
    return grid, explicit


def _dedup(cands: Iterable[_Candidate]) -> list[_Candidate]:
    seen: dict[Any, _Candidate] = {}
    for c in cands:
        if c.point not in seen:
            seen[c.point] = c
        elif seen[c.point].name is None and c.name is not None:
            seen[c.point] = _Candidate(c.point, seen[c.point].where, c.name, seen[c.point].explicit)
    return list(seen.values())


def _describe(p: AccuracyPoint) -> str:
    parts = [f"{k}={getattr(p, k)!r}" for k in ("w", "x", "lowrank_fmt", "rank") if getattr(p, k) is not None]
    parts.append(f"mode={p.mode!r}")
    if p.accumulator != "fp32":
        parts.append(f"accumulator={p.accumulator!r}")
    return f"recipe {p.recipe!r} with {', '.join(parts)}"


def _check_points(acc: Sequence[_Candidate], hw: Sequence[_Candidate]) -> list[str]:
    cfg = _quant()
    problems: list[str] = []
    seen: set[tuple] = set()
    for c in acc:
        p = c.point
        combo = (c.where if c.explicit else "", p.recipe, p.w, p.x, p.lowrank_fmt, p.rank, p.mode, p.accumulator)
        if combo in seen:
            continue
        seen.add(combo)
        try:
            cfg.validate_recipe(cfg.with_formats(cfg.get_recipe(p.recipe), w=p.w, a=p.x, lowrank=p.lowrank_fmt,
                                                 rank=p.rank, mode=p.mode, accumulator=p.accumulator))
        except ValueError as exc:
            problems.append(f"{c.where}: {_describe(p)}: {_one_line(str(exc))}")
    from hwsim.cost_models import Technology

    techs: set[tuple] = set()
    for c in hw:
        p = c.point
        combo = (p.library, p.node_nm, p.dram, p.dram_gbps, p.clock_mhz)
        if combo in techs:
            continue
        techs.add(combo)
        try:
            Technology(library=p.library, node_nm=p.node_nm, dram_type=p.dram, dram_bandwidth_gbps=p.dram_gbps,
                       f_clk_hz=None if p.clock_mhz is None else p.clock_mhz * 1e6)
        except ValueError as exc:
            problems.append(f"{c.where}: library={p.library!r}, node_nm={p.node_nm:g}, dram={p.dram!r}: "
                            f"{_one_line(str(exc))}")
    return list(dict.fromkeys(problems))


def _check_structure(spec: _StudyFile, pruned: set[tuple] = frozenset()) -> list[str]:
    acc = spec.accuracy
    problems = []
    grid_keys = [k for k in ("w", "x", "lowrank_fmt") if k in acc.model_fields_set]
    if acc.settings and grid_keys:
        problems.append(f"accuracy: give either the format grid ({', '.join(grid_keys)}) or "
                        "[[accuracy.settings]], not both")
    names: dict[str, int] = {}
    for i, s in enumerate(acc.settings):
        if s.name is not None:
            if s.name in names:
                problems.append(f"accuracy.settings[{i}].name: duplicate name {s.name!r} "
                                f"(also accuracy.settings[{names[s.name]}])")
            names.setdefault(s.name, i)
    for section, excludes in (("accuracy", acc.exclude), ("hardware", spec.hardware.exclude)):
        for i, ex in enumerate(excludes):
            if not ex.model_fields_set and not any(p[:3] == (section, "exclude", i) for p in pruned):
                problems.append(f"{section}.exclude[{i}]: empty exclusion (it would drop every point); "
                                f"give at least one of {', '.join(type(ex).model_fields)}")
    return problems


# ------------------------------------------------------------------------------------------------
# Study
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Study:
    """A validated study: its metadata and its expanded, deduplicated accuracy and hardware points.

    Build with :meth:`from_toml` or :meth:`from_dict`. ``db_path`` and ``report_dir`` are relative
    to the working directory unless given absolute.
    """

    name: str
    description: str
    db_path: Path
    report_dir: Path
    source: str
    source_text: str = field(repr=False)
    _accuracy: tuple[AccuracyPoint, ...] = field(repr=False)
    _hardware: tuple[HardwarePoint, ...] = field(repr=False)
    _names: Mapping[str, str] = field(repr=False)
    _counts: Mapping[str, int] = field(repr=False)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | Path) -> "Study":
        """Read and validate a study file; StudyError lists every problem (or the missing path)."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise StudyError(str(path), [f"file not found: {path.resolve()}"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StudyError(str(path), [f"cannot read {path}: {exc}"]) from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise StudyError(str(path), [f"TOML syntax error: {exc}"]) from None
        return cls._build(raw, str(path), text)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> "Study":
        """Validate a study given as nested dicts (the TOML structure)."""
        if not isinstance(d, Mapping):
            raise StudyError(source, [f"<top>: expected a table (dict), got {type(d).__name__}"])
        text = json.dumps(d, indent=2, default=str)
        return cls._build(d, source, text)

    @classmethod
    def _build(cls, raw: Mapping[str, Any], source: str, text: str) -> "Study":
        spec, problems, pruned = _parse(raw)
        if spec is None:
            raise StudyError(source, list(dict.fromkeys(problems)))
        problems += _check_structure(spec, pruned)
        acc_grid, acc_explicit = _expand_accuracy(spec)
        hw_grid, hw_explicit = _expand_hardware(spec)
        acc_kept = [c for c in acc_grid if not _excluded(c.point, spec.accuracy.exclude)]
        hw_kept = [c for c in hw_grid if not _excluded(c.point, spec.hardware.exclude)]
        acc = _dedup(acc_kept + acc_explicit)
        hw = _dedup(hw_kept + hw_explicit)
        problems += _check_points(acc, hw)
        if not problems:
            if not acc:
                problems.append("accuracy: no accuracy points (give accuracy.recipes or [[accuracy.point]]; "
                                "or every grid point was excluded)")
            if not hw:
                problems.append("hardware: no hardware points (every grid point was excluded)")
        if problems:
            raise StudyError(source, list(dict.fromkeys(problems)))
        st = spec.study
        names = {c.point.key: c.name for c in acc + hw if c.name is not None}
        counts = {
            "accuracy_grid": len(acc_grid), "accuracy_excluded": len(acc_grid) - len(acc_kept),
            "accuracy_explicit": len(acc_explicit), "hardware_grid": len(hw_grid),
            "hardware_excluded": len(hw_grid) - len(hw_kept), "hardware_explicit": len(hw_explicit),
        }
        return cls(
            name=st.name, description=st.description,
            db_path=Path(st.db) if st.db else DEFAULT_REPORTS / st.name / "study.db",
            report_dir=Path(st.report_dir) if st.report_dir else DEFAULT_REPORTS / st.name,
            source=source, source_text=text,
            _accuracy=tuple(c.point for c in acc), _hardware=tuple(c.point for c in hw),
            _names=names, _counts=counts,
        )

    # -- points ----------------------------------------------------------------------------------
    def accuracy_points(self) -> list[AccuracyPoint]:
        """Deduplicated accuracy points, in expansion order (grid, then explicit points)."""
        return list(self._accuracy)

    def hardware_points(self) -> list[HardwarePoint]:
        """Deduplicated hardware points, in expansion order (grid, then explicit points)."""
        return list(self._hardware)

    def points(self) -> list[DesignPoint]:
        """Every accuracy point on every hardware point, accuracy-major."""
        return [DesignPoint(a, h) for a in self._accuracy for h in self._hardware]

    def label(self, point: AccuracyPoint | HardwarePoint | DesignPoint) -> str:
        """The setting / explicit-point name of a point where the file gives one, else its label."""
        if isinstance(point, DesignPoint):
            return f"{self.label(point.accuracy)} @ {self.label(point.hardware)}"
        return self.setting(point) or point.label

    def setting(self, point: AccuracyPoint | HardwarePoint) -> str:
        """The name the file gives a point (a ``[[accuracy.settings]]`` or explicit point name), or ""."""
        return self._names.get(point.key, "")

    def run(self, db: str | Path | None = None, **options: Any) -> dict[str, Any]:
        """Evaluate every unfinished design point into ``db`` (default ``db_path``); see
        :func:`hwsim.dse.runner.run_study` for the options (executor, jobs, only, retry_failed, ...)."""
        from .runner import run_study

        return run_study(self, db, **options)

    def summary(self) -> dict[str, Any]:
        """Counts: points of each kind, grid sizes, exclusions, distinct protocols and recipes."""
        return {
            "name": self.name,
            "accuracy_points": len(self._accuracy),
            "hardware_points": len(self._hardware),
            "design_points": len(self._accuracy) * len(self._hardware),
            "protocols": len({p.protocol_key for p in self._accuracy}),
            "recipes": len({p.recipe for p in self._accuracy}),
            **self._counts,
        }
