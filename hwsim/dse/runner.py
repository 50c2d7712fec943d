"""Run a study: evaluate each accuracy point once, cost it on every hardware point, store it.

The driver (this process) owns the database: workers (in-process, a process pool, or Ray tasks)
return an accuracy result, and the driver costs it on every hardware point and writes the point
with its design rows in one transaction (``store.py``). A killed study re-run with the same
database recomputes only the points that were not committed.

Work shared between points:

- the full-precision model is loaded once per process and model, and copied for each point;
- the full-precision perplexity is cached on disk under ``$HWSIM_CACHE/dse/fp/`` (atomic write;
  key = protocol + hwsim version + torch version), so it is computed once per protocol;
- the calibration token set is built once per (model, corpus, n_calib, calib_len, seed) and process.

:data:`WORK` counts the expensive operations of this process (model loads, fp evaluations,
calibration sets, quantizations, evaluations), so a test can prove that a second run does none.
"""

from __future__ import annotations

import collections
import copy
import functools
import fnmatch
import json
import os
import subprocess
import time
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .costing import ModelCoster
from .points import AccuracyPoint, DesignPoint, HardwarePoint, config_key
from .store import ResultStore

__all__ = ["run_study", "evaluate_accuracy", "plan", "versions", "WORK", "EXECUTORS"]

EXECUTORS = ("local", "ray")
#: expensive operations done by this process (see the module docstring)
WORK: collections.Counter = collections.Counter()
#: warnings kept per point (the first ones; a runaway warning must not bloat the database)
MAX_WARNINGS = 50
#: held-out sequences used for the per-layer output error
LAYER_ERROR_SEQUENCES = 1
#: characters of text tokenized to get one window of seq_len tokens (English BPE: about 4 per token)
MAX_CHARS_PER_TOKEN = 16

_MODELS: dict[str, tuple[Any, Any, float]] = {}
_CALIB: dict[str, Any] = {}
_FP_STATS: dict[str, Any] = {}


# ------------------------------------------------------------------------------------------------
# provenance
# ------------------------------------------------------------------------------------------------

def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, Any]:
    """Versions of hwsim and the libraries that decide a result, plus the git commit when known
    (looked up once per process: every point, cache key and the study's meta read it)."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    for pkg in ("hwsim", "torch", "transformers", "numpy", "numba"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["git_commit"] = _git_commit()
    return out


# ------------------------------------------------------------------------------------------------
# the accuracy worker
# ------------------------------------------------------------------------------------------------

def _model(name: str, progress: bool):
    """(fp model, tokenizer, load seconds) of ``name``, loaded once per process."""
    if name not in _MODELS:
        from hwsim.eval import models as emodels

        t = time.perf_counter()
        model, tok = emodels.load(name, progress=progress)
        WORK["model_loads"] += 1
        _MODELS[name] = (model, tok, time.perf_counter() - t)
    return _MODELS[name]


def _fp_cache_path(point: AccuracyPoint) -> Path:
    import torch

    from hwsim.eval.cache import cache_dir

    v = versions()
    key = config_key("fp-baseline", {"protocol": point.protocol_key, "hwsim": v["hwsim"], "torch": torch.__version__,
                                     "transformers": v["transformers"]})
    return cache_dir("dse", "fp", f"{key}.json")


def _fp_baseline(point: AccuracyPoint, model, tok, progress: bool) -> dict[str, Any]:
    """Full-precision perplexity of the point's protocol, from the disk cache or computed once."""
    from hwsim.eval.perplexity import evaluate

    path = _fp_cache_path(point)
    if path.exists():
        return json.loads(path.read_text())
    res = evaluate(model, tok, point.eval_corpus, "eval", seq_len=point.seq_len, n_tokens=point.n_tokens,
                   progress=progress, model_name=point.model).as_dict()
    WORK["fp_evaluations"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, path)  # atomic: a reader sees the old state or the whole file
    return res


def _calibration(point: AccuracyPoint, tok):
    if point.calib_key not in _CALIB:
        from hwsim.eval import data as edata

        _CALIB[point.calib_key] = edata.calibration_set(tok, point.calib_corpus, n=point.n_calib,
                                                        seq_len=point.calib_len, seed=point.seed)
        WORK["calibration_sets"] += 1
    return _CALIB[point.calib_key]


def _fp_stats(point: AccuracyPoint, recipe):
    """The full-precision statistics cache of the point's calibration (memory, then disk), or None
    for recipes whose statistics come from the partly quantized model (GPTQ)."""
    if recipe.stats_source != "fp" or not recipe.stat_kinds():
        return None
    import torch

    from hwsim.eval.cache import cache_dir
    from hwsim.quant.calibrate import FpStatsCache

    key = config_key("fp-stats", {"calib": point.calib_key, "transforms": list(recipe.transforms),
                                  "batch": recipe.calib_batch_size, "sink_weight": recipe.sink_weight_for("rxx"),
                                  "hwsim": versions()["hwsim"], "torch": torch.__version__})
    if key not in _FP_STATS:
        path = cache_dir("dse", "stats", f"{key}.pt")
        final = torch.load(path, weights_only=True) if path.exists() else None
        _FP_STATS[key] = (FpStatsCache(final), path)
    return _FP_STATS[key]


def _save_fp_stats(entry, kinds_before: set[str]) -> None:
    """Write the cache to disk (atomic rename) when this point added statistics to it."""
    import torch

    cache, path = entry
    if cache.kinds() <= kinds_before:
        return
    WORK["fp_stat_calibrations"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    torch.save(cache.final, tmp)
    os.replace(tmp, path)


def point_recipe(point: AccuracyPoint):
    """The validated ``hwsim.quant`` recipe of an accuracy point."""
    from hwsim.quant import get_recipe, validate_recipe, with_formats

    return validate_recipe(with_formats(get_recipe(point.recipe), w=point.w, a=point.x, lowrank=point.lowrank_fmt,
                                        rank=point.rank, mode=point.mode, accumulator=point.accumulator))


def evaluate_accuracy(point: AccuracyPoint | dict, *, progress: bool = False,
                      on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Quantize and evaluate one accuracy point; never raises for a failing point.

    Returns ``status`` ('ok' | 'failed'), ``metrics`` (ppl, bits_per_byte, fp baseline, bits per
    weight, layer output error summary, resolved formats), ``records`` (the quantized linears'
    ``QLinearRecord`` as dicts), ``model_config``, ``timings`` (s per stage), ``warnings``
    (incl. recorded fall-backs), ``versions``, ``error``/``traceback``, ``wall_s``.
    """
    import torch

    point = point if isinstance(point, AccuracyPoint) else AccuracyPoint.from_dict(point)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out: dict[str, Any] = {"versions": versions(), "records": [], "model_config": {}, "metrics": {}}
    stage = "setup"

    def enter(name: str) -> float:
        nonlocal stage
        stage = name
        if on_stage:
            on_stage(name)
        return time.perf_counter()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            from hwsim.eval.perplexity import evaluate, layer_output_errors
            from hwsim.quant import acc_events_total, model_records, quantize_model, reset_acc_events

            recipe = point_recipe(point)
            enter("load")
            loads_before = WORK["model_loads"]
            fp_model, tok, load_s = _model(point.model, progress)
            timings["load"] = load_s if WORK["model_loads"] > loads_before else 0.0
            t = enter("fp_eval")
            fp = _fp_baseline(point, fp_model, tok, progress)
            timings["fp_eval"] = time.perf_counter() - t
            calib = None
            if recipe.needs_calibration:
                t = enter("calib_data")
                calib = _calibration(point, tok)
                timings["calib_data"] = time.perf_counter() - t
            t = enter("quantize")
            torch.manual_seed(point.seed)
            model = copy.deepcopy(fp_model)
            stats_entry = _fp_stats(point, recipe)
            kinds_before = stats_entry[0].kinds() if stats_entry else set()
            qsur, on_transformed = _qsur_hooks(point, recipe, model, tok, calib)
            report = quantize_model(model, recipe, calib, progress=progress,
                                    fp_stats=stats_entry[0] if stats_entry else None, on_transformed=on_transformed)
            if stats_entry:
                _save_fp_stats(stats_entry, kinds_before)
            WORK["quantizations"] += 1
            timings["quantize"] = time.perf_counter() - t
            timings.update({f"quantize.{k}": v for k, v in report.timings.items() if k != "total"})
            t = enter("eval")
            reset_acc_events(model)   # accumulator events of the evaluation only
            res = evaluate(model, tok, point.eval_corpus, "eval", seq_len=point.seq_len, n_tokens=point.n_tokens,
                           progress=progress, model_name=point.model)
            WORK["evaluations"] += 1
            timings["eval"] = time.perf_counter() - t
            # records (with each layer's accumulator events) before the held-out passes below
            out["records"] = [asdict(r) for r in model_records(model)]
            acc_total = acc_events_total(model)
            t = enter("layer_error")
            held_out = _held_out_tokens(tok, point)
            errs = layer_output_errors(fp_model, model, held_out, progress=False)
            timings["layer_error"] = time.perf_counter() - t
            lay = recipe.layer
            rank = lay.rank if recipe.reconstruction else 0
            out["metrics"] = {
                "ppl": res.ppl, "bits_per_byte": res.bits_per_byte, "fp_ppl": fp["ppl"],
                "fp_bits_per_byte": fp["bits_per_byte"], "bits_per_weight": report.bits_per_weight,
                "layer_err_mean": sum(errs.values()) / len(errs) if errs else float("nan"),
                "layer_err_max": max(errs.values()) if errs else float("nan"),
                "layer_err_worst": max(errs, key=errs.get) if errs else "",
                "stages": "+".join(recipe.stages), "w_fmt": lay.w or "none", "x_fmt": lay.x or "none",
                "rank": rank, "lowrank_fmt": (lay.a or "none") if rank else "none", "mode": recipe.mode,
                "accumulator": recipe.accumulator, "acc_events": acc_total,
                **({f"acc_{k}": acc_total[k] for k in ("saturations", "wraps", "rounded", "max_bits_lost", "flushed")}
                   if acc_total else {}),
                "n_quantized": report.n_quantized, "scored_tokens": res.scored_tokens,
                "protocol": res.protocol.as_dict(), "fallbacks": report.events[:MAX_WARNINGS],
                **qsur_summary(qsur),
            }
            out["model_config"] = model.config.to_dict()
            out.update(status="ok", error="", traceback="")
            del model
        except Exception as exc:  # a failing point is recorded and the study goes on
            out.update(status="failed", error=f"{stage}: {type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc())
    msgs = [f"{w.category.__name__}: {w.message}" for w in caught]
    fallbacks = [f"fallback {e.get('stage')}/{e.get('kind')} at {e.get('layer')}: {e.get('value')}"
                 for e in out["metrics"].get("fallbacks", [])]
    out["warnings"] = list(dict.fromkeys(fallbacks + msgs))[:MAX_WARNINGS]
    out["timings"] = timings
    out["wall_s"] = time.perf_counter() - t_start
    return out


def _qsur_hooks(point: AccuracyPoint, recipe, model, tok, calib):
    """({"before": rows, "after": rows} filled during quantization, the ``on_transformed`` hook), or
    ({}, None) unless ``point.qsur``. Measured on the calibration sequences (the point's own
    calibration set when the recipe needs none); "before" runs here, on the unquantized model;
    without transform stages "after" is "before"."""
    if not point.qsur:
        return {}, None
    from hwsim.quant.calibrate import as_token_ids
    from hwsim.quant.qsur import qsur_table

    ids = as_token_ids(calib if calib is not None else _calibration(point, tok))
    tables = {"before": qsur_table(model, ids)}

    def after(m, adapter):
        tables["after"] = qsur_table(m, ids, adapter=adapter) if recipe.transforms else tables["before"]
    return tables, after


def qsur_summary(tables: Mapping[str, list]) -> dict[str, Any]:
    """Study metrics of QSUR tables (``hwsim.quant.qsur.qsur_table`` rows before/after the
    transforms): ``qsur_before``/``qsur_after`` (mean QSUR^(1/d) over every layer with a value) and
    ``qsur_groups`` ({group: [mean before, mean after]}); {} without tables."""
    if not tables:
        return {}

    def mean(rows, group=None):
        vals = [r["qsur"] for r in rows if r["qsur"] is not None and group in (None, r["group"])]
        return sum(vals) / len(vals) if vals else None

    before, after = tables["before"], tables.get("after", tables["before"])
    groups = list(dict.fromkeys(r["group"] for r in before))
    return {"qsur_before": mean(before), "qsur_after": mean(after),
            "qsur_groups": {g: [mean(before, g), mean(after, g)] for g in groups}}


def _held_out_tokens(tok, point: AccuracyPoint):
    """The first evaluation window (held out from calibration) as LongTensor [1, T]."""
    import torch

    from hwsim.eval import data as edata

    text = edata.load(point.eval_corpus, "eval")[: MAX_CHARS_PER_TOKEN * point.seq_len]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids[: point.seq_len]] * LAYER_ERROR_SEQUENCES, dtype=torch.long)


# ------------------------------------------------------------------------------------------------
# costing (driver side, no model work)
# ------------------------------------------------------------------------------------------------

def cost_designs(point: AccuracyPoint, result: dict[str, Any],
                 hardware: Iterable[HardwarePoint]) -> list[tuple[str, HardwarePoint, dict[str, Any]]]:
    """(design_key, hardware point, cost result) of an accuracy result on every hardware point
    (costed together: ``ModelCoster.many`` vectorises over rows, cols and dataflow)."""
    hardware = list(hardware)
    keys = [DesignPoint(point, hw).key for hw in hardware]
    if result["status"] != "ok":
        return [(key, hw, {"status": "failed", "metrics": {}, "error": "accuracy point failed"})
                for key, hw in zip(keys, hardware)]
    metrics = ModelCoster(result["records"], result["model_config"]).many(hardware)
    return [(key, hw, {"status": "failed", "metrics": {}, "error": f"cost: {m}"} if isinstance(m, Exception)
             else {"status": "ok", "metrics": m, "error": ""}) for key, hw, m in zip(keys, hardware, metrics)]


# ------------------------------------------------------------------------------------------------
# planning
# ------------------------------------------------------------------------------------------------

def _matches(point: DesignPoint | AccuracyPoint, only: str | None) -> bool:
    if not only:
        return True
    label = point.label
    return fnmatch.fnmatchcase(label, only) or only in label


def plan(study, store: ResultStore, *, only: str | None = None, retry_failed: bool = False) -> dict[str, Any]:
    """What a run would do: accuracy points to evaluate, stored points missing design rows, and counts."""
    acc_points = [p for p in study.accuracy_points() if _matches(p, only)]
    hw_points = study.hardware_points()
    status = store.accuracy_status()
    done_designs = store.design_keys()
    todo = [p for p in acc_points if status.get(p.key) is None or (retry_failed and status[p.key] == "failed")]
    todo_keys = {p.key for p in todo}
    recost = [p for p in acc_points if p.key not in todo_keys and status.get(p.key) == "ok"
              and any(DesignPoint(p, h).key not in done_designs for h in hw_points)]
    fp_missing = {p.protocol_key for p in todo if not _fp_cache_path(p).exists()}
    from hwsim.quant import get_recipe

    needs_calib = [p for p in todo if get_recipe(p.recipe).needs_calibration]
    return {
        "accuracy_points": acc_points, "hardware_points": hw_points, "todo": todo, "recost": recost,
        "stored": {p.key: status[p.key] for p in acc_points if p.key in status},
        "estimate": {"model_loads": len({p.model for p in todo} - set(_MODELS)),
                     "fp_evaluations": len(fp_missing), "calibration_sets": len({p.calib_key for p in needs_calib}),
                     "quantizations": len(todo), "evaluations": len(todo),
                     "cost_evaluations": 2 * (len(todo) + len(recost)) * len(hw_points)},
    }


# ------------------------------------------------------------------------------------------------
# executors
# ------------------------------------------------------------------------------------------------

def _threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass


def _worker_entry(point_dict: dict, threads: int) -> tuple[dict, dict]:
    _init_worker(threads)
    return point_dict, evaluate_accuracy(point_dict)


def _run_local(todo: list[AccuracyPoint], jobs: int, on_result, on_stage) -> None:
    """Sequential in this process (jobs=1) or a spawned process pool; results go to ``on_result``."""
    if jobs <= 1:
        for p in todo:
            on_result(p, evaluate_accuracy(p, on_stage=on_stage))
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    threads = _threads_per_job(jobs)
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_worker_entry, p.to_dict(), threads) for p in todo]
        for fut in cf.as_completed(futures):
            pd_, res = fut.result()
            on_result(AccuracyPoint.from_dict(pd_), res)


#: a worker holds the fp32 model, its quantized copy, calibration statistics and activations:
#: about this many times the fp32 checkpoint (an estimate; SmolLM2-135M's checkpoint is 0.54 GB)
RAY_MEMORY_PER_CHECKPOINT = 4


def _checkpoint_bytes(model: str) -> int:
    """Size of the fp32 safetensors checkpoint of ``model`` (zoo cache or a local directory), 0 if unknown."""
    from hwsim.eval import models as emodels

    root = emodels.cached_checkpoint(model) if model in emodels.list_models() else Path(model)
    return sum(f.stat().st_size for f in root.glob("*.safetensors")) if root.is_dir() else 0


def _run_ray(todo: list[AccuracyPoint], jobs: int, on_result, address: str | None = None) -> None:
    """One Ray task per accuracy point, declaring its needs: ``num_cpus`` (this machine's share per
    job), ``memory`` (RAY_MEMORY_PER_CHECKPOINT x the fp32 checkpoint) and no GPU (points run on CPU)."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("executor='ray' needs the ray extra: pip install 'hwsim[ray]'") from exc
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    threads = _threads_per_job(jobs)
    task = ray.remote(num_cpus=threads, num_gpus=0)(_worker_entry)
    pending = {}
    for p in todo:
        memory = RAY_MEMORY_PER_CHECKPOINT * _checkpoint_bytes(p.model)
        options = {"memory": memory} if memory else {}
        pending[task.options(**options).remote(p.to_dict(), threads)] = p
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            pending.pop(ref)
            pd_, res = ray.get(ref)
            on_result(AccuracyPoint.from_dict(pd_), res)


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------

class _StudyProgress:
    """Two progress bars: accuracy points (with an ETA from the measured time of each recipe's
    points) and the stages of the point being evaluated (sequential executor)."""

    STAGES = ("load", "fp_eval", "calib_data", "quantize", "eval", "layer_error")

    def __init__(self, name: str, todo: list[AccuracyPoint]):
        from tqdm.auto import tqdm

        self._todo = {p.key: p for p in todo}
        self._seconds: dict[str, list[float]] = collections.defaultdict(list)
        self.points = tqdm(total=len(todo), desc=f"study {name}", unit="point", position=0)
        self.stages = tqdm(total=len(self.STAGES), desc="stage", unit="stage", position=1, leave=False,
                           bar_format="{desc}: {n_fmt}/{total_fmt} {postfix}")

    def stage(self, name: str) -> None:
        if name == "load":
            self.stages.reset()
        self.stages.set_postfix_str(name)
        self.stages.update(1)

    def finished(self, point: AccuracyPoint, res: dict) -> None:
        self._todo.pop(point.key, None)
        self._seconds[point.recipe].append(float(res.get("wall_s", 0.0)))
        self.points.update(1)
        self.points.set_postfix_str(f"{point.label}: {res['status']}; {self.eta()}")

    def eta(self) -> str:
        """Remaining time: each unfinished point costs the mean of its recipe's finished points
        (or of all finished points when its recipe has none yet)."""
        every = [t for ts in self._seconds.values() for t in ts]
        if not every:
            return "eta unknown"
        mean_all = sum(every) / len(every)
        left = sum(sum(ts) / len(ts) if (ts := self._seconds.get(p.recipe)) else mean_all
                   for p in self._todo.values())
        return f"eta {left / 60:.1f} min (by recipe)"

    def close(self) -> None:
        self.stages.close()
        self.points.close()


def run_study(study, db: str | Path | None = None, *, executor: str = "local", jobs: int = 1,
              only: str | None = None, retry_failed: bool = False, progress: bool = True,
              ray_address: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """Evaluate every unfinished point of ``study`` into the database ``db`` (default: the
    study's ``db_path``); returns a summary (counts, wall time, the database path)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not valid; valid: {', '.join(EXECUTORS)}")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs={jobs!r} must be an integer >= 1")
    t0 = time.perf_counter()
    db = Path(db) if db is not None else Path(study.db_path)
    with ResultStore(db) as store:
        if retry_failed:
            store.forget_failed()
        pl = plan(study, store, only=only)
        hw_points = pl["hardware_points"]
        store.set_meta(name=study.name, description=study.description, study_toml=study.source_text,
                       expected_design_points=len(study.accuracy_points()) * len(hw_points), finished=False,
                       versions=versions())
        for p in pl["recost"]:  # new hardware points for stored accuracy points: cost only
            row = store.accuracy_row(p.key)
            res = {"status": "ok", "records": json.loads(row["records_json"]),
                   "model_config": json.loads(row["model_config_json"])}
            done = store.design_keys()
            missing = [h for h in hw_points if DesignPoint(p, h).key not in done]
            store.add_designs(p.key, cost_designs(p, res, missing))
        todo = pl["todo"]
        progress_bar = _StudyProgress(study.name, todo) if progress and todo else None
        n_failed = 0

        def on_result(point: AccuracyPoint, res: dict) -> None:
            nonlocal n_failed
            n_failed += res["status"] != "ok"
            res.setdefault("metrics", {})["setting"] = study.setting(point)
            store.write_point(point, res, cost_designs(point, res, hw_points))
            if progress_bar is not None:
                progress_bar.finished(point, res)

        on_stage = progress_bar.stage if progress_bar is not None else None
        if threads is not None and executor == "local" and jobs == 1:
            _init_worker(threads)
        try:
            if executor == "local":
                _run_local(todo, jobs, on_result, on_stage)
            else:
                _run_ray(todo, jobs, on_result, ray_address)
        finally:
            if progress_bar is not None:
                progress_bar.close()
        counts = store.counts()
        store.set_meta(finished=not only)
    return {"db": str(db), "evaluated": len(todo), "failed": n_failed, "recosted": len(pl["recost"]),
            "wall_s": time.perf_counter() - t0, **counts}
