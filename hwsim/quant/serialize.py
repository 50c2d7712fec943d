"""Save and reload quantized models: codes, scales and low-rank factors in safetensors plus a
JSON description (recipe, per-layer formats, calibration provenance).

Layout of a saved directory::

    quant.json            {"version", "model", "recipe", "report", "layers": {name: {...}},
                           "checksums": {file name: sha256 hex digest of each tensor file}}
    quant.safetensors     <layer>.weight.codes / .scales / .zero_points / .tensor_scale,
                          <layer>.bias, <layer>.A.* / <layer>.B.* (QTensor parts or float),
                          pre_transform.<i>: each distinct online transform once (the layers
                          that share it name it in their "pre_transform_tensor")
    base.safetensors      only when a transform stage ran (it may change non-quantized weights:
                          norms, embeddings, lm_head): the model's other parameters

The recipe's attention quantizers (``recipe.attention``) are installed again on load.

``load_quantized(model, path)`` rebuilds the QLinears inside a freshly loaded full-precision
model of the same architecture; outputs are bit-identical to the model that was saved. It first
checks every tensor file against its sha256 in ``quant.json`` (``verify=False`` skips this; saves
from before the checksums load unchecked). Errors name the file: a modified or truncated tensor
file, a malformed ``quant.json``, a directory that cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import set_module
from .qlinear import QLinear, _to_torch, fmt_name

__all__ = ["save_quantized", "load_quantized", "check_save_path", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_JSON = "quant.json"
_TENSORS = "quant.safetensors"
_BASE = "base.safetensors"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return repr(obj)


def _store_codes(a) -> torch.Tensor:
    t = _to_torch(a).detach().cpu()
    if t.dtype != torch.uint8:
        t = t.to(torch.int64)
    return t.contiguous()


def _put_q(tensors: dict[str, torch.Tensor], prefix: str, q) -> dict[str, Any]:
    tensors[f"{prefix}.codes"] = _store_codes(q.codes)
    if q.scales is not None:
        tensors[f"{prefix}.scales"] = _store_codes(q.scales)
    if q.zero_points is not None:
        tensors[f"{prefix}.zero_points"] = _store_codes(q.zero_points)
    return {"fmt": q.spec.name, "shape": list(q.shape), "axis": int(q.axis),
            "tensor_scale": None if q.tensor_scale is None else float(q.tensor_scale)}


def _get_q(tensors: dict[str, torch.Tensor], prefix: str, meta: dict[str, Any]):
    import hwsim.formats as F

    return F.QTensor.from_codes(
        meta["fmt"], tensors[f"{prefix}.codes"], scales=tensors.get(f"{prefix}.scales"),
        zero_points=tensors.get(f"{prefix}.zero_points"), tensor_scale=meta.get("tensor_scale"),
        shape=tuple(meta["shape"]), axis=int(meta["axis"]))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_save_path(path: str | os.PathLike) -> Path:
    """Check, before any work, that ``save_quantized`` can write ``path``: it is a directory or does
    not exist yet, and its nearest existing parent is a writable directory. Returns it as a Path;
    raises ``NotADirectoryError`` or ``PermissionError`` naming the path otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"save path {str(path)!r} exists and is not a directory; give a directory "
                                 f"(it is created, or replaced if it holds a saved model)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"save path {str(path)!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"save path {str(path)!r}: directory {str(parent)!r} is not writable")
    return path


def save_quantized(model: nn.Module, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write the model's QLinears (and, if transforms changed them, its other weights) to ``path``
    (a directory, written atomically: a temporary directory renamed at the end). ``quant.json``
    records the sha256 of every tensor file (checked by ``load_quantized``)."""
    from safetensors.torch import save_file

    path = check_save_path(path)
    qls = [(n, m) for n, m in model.named_modules() if isinstance(m, QLinear)]
    if not qls:
        raise ValueError("model: no QLinear found; run hwsim.quant.quantize_model first")
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Any] = {}
    transforms: dict[Any, str] = {}  # one copy of each distinct pre_transform (down_proj's H_m is shared)
    for name, m in qls:
        meta: dict[str, Any] = {"in": m.in_features, "out": m.out_features, "x_fmt": fmt_name(m.x_fmt),
                                "mode": m.mode, "accumulator": m.accumulator, "input_key": m.input_key,
                                "pre_transform": m.pre_transform_kind,
                                "compute_dtype": str(m.compute_dtype).replace("torch.", "")}
        if m.qweight is not None:
            meta["weight"] = _put_q(tensors, f"{name}.weight", m.qweight)
        else:
            tensors[f"{name}.weight"] = m.weight.detach().cpu().contiguous()
            meta["weight"] = None
        if m.bias is not None:
            if m.qbias is not None:
                meta["bias"] = _put_q(tensors, f"{name}.bias", m.qbias)
                tensors[f"{name}.bias.float"] = m.bias.detach().cpu().contiguous()
            else:
                tensors[f"{name}.bias"] = m.bias.detach().cpu().contiguous()
                meta["bias"] = "float"
        else:
            meta["bias"] = None
        if m.rank:
            lr: dict[str, Any] = {"rank": m.rank, "xa_fmt": fmt_name(m.xa_fmt), "xab_fmt": fmt_name(m.xab_fmt)}
            for key, q, deq in (("A", m.qA, m.lr_A), ("B", m.qB, m.lr_B)):
                if q is not None:
                    lr[key] = _put_q(tensors, f"{name}.{key}", q)
                else:
                    tensors[f"{name}.{key}"] = deq.detach().cpu().contiguous()
                    lr[key] = None
            meta["lowrank"] = lr
        if m.pre_transform is not None:
            t = m.pre_transform.detach().cpu().contiguous()
            key = (str(t.dtype), tuple(t.shape), hashlib.sha256(t.numpy().tobytes()).hexdigest())
            if key not in transforms:
                transforms[key] = f"pre_transform.{len(transforms)}"
                tensors[transforms[key]] = t.clone()
            meta["pre_transform_tensor"] = transforms[key]
        layers[name] = meta
    report = getattr(model, "hwsim_quant", None)
    rep = report.to_dict() if hasattr(report, "to_dict") else (report or {})
    recipe = rep.get("recipe", {})
    modified = any(_is_transform(s) for s in recipe.get("stages", ()))
    cfg = getattr(model, "config", None)
    doc = {
        "version": FORMAT_VERSION,
        "model": {"model_type": getattr(cfg, "model_type", None), "name_or_path": getattr(cfg, "_name_or_path", None)},
        "recipe": recipe,
        "report": {k: v for k, v in rep.items() if k != "recipe"},
        "layers": layers,
        "base_weights": modified,
        "extra": extra or {},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise type(exc)(exc.errno, f"save path {str(path)!r}: cannot create it ({exc.strerror})") from None
    try:
        save_file(tensors, str(tmp / _TENSORS))
        if modified:
            q_prefixes = tuple(f"{n}." for n, _ in qls)
            base = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
                    if not k.startswith(q_prefixes)}
            save_file(base, str(tmp / _BASE))
        doc["checksums"] = {f: sha256_file(tmp / f) for f in (_TENSORS, _BASE) if (tmp / f).is_file()}
        (tmp / _JSON).write_text(json.dumps(_jsonable(doc), indent=1))
        if path.exists():
            old = path.with_name(path.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            import shutil

            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise type(exc)(exc.errno, f"save path {str(path)!r}: writing failed ({exc.strerror or exc})") from exc
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _is_transform(stage: str) -> bool:
    from .stages import get_stage

    try:
        return get_stage(stage).kind == "transform"
    except ValueError:  # a stage registered in another process: keep the weights to be safe
        return True


def _read_doc(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: not a valid quant.json ({exc}); the saved model is damaged, save it again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), dict):
        raise ValueError(f"{file}: not a saved quantized model's description (no 'layers' table)")
    return doc


def _verify(path: Path, doc: dict[str, Any]) -> None:
    """Compare every tensor file with the sha256 recorded in quant.json."""
    sums = doc.get("checksums")
    if sums is None:
        return  # saved before checksums existed
    if not isinstance(sums, dict):
        raise ValueError(f"{path / _JSON}: 'checksums' must map file names to sha256 digests, got {sums!r}")
    for name in (_TENSORS, _BASE):
        file = path / name
        if name not in sums:
            if file.is_file():
                raise ValueError(f"{file}: has no checksum in {_JSON}; the directory was modified after saving")
            continue
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing (listed in {_JSON}); the saved model is incomplete")
        got = sha256_file(file)
        if got != sums[name]:
            raise ValueError(f"{file}: sha256 {got[:16]}... differs from the {str(sums[name])[:16]}... recorded in "
                             f"{_JSON}: the file was modified or truncated after saving (save the model again, or "
                             "load with verify=False to skip the check)")


class _Tensors(dict):
    """The tensors of one file; a missing name raises a ValueError naming the file."""

    def __init__(self, file: Path, tensors: dict[str, torch.Tensor]):
        super().__init__(tensors)
        self.file = file

    def __missing__(self, key: str):
        raise ValueError(f"{self.file}: has no tensor {key!r} that {_JSON} lists; the saved model is damaged")


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing; the saved model is incomplete")
    try:
        return _Tensors(file, load_file(str(file)))
    except Exception as exc:  # SafetensorError, or an OSError on a damaged file
        raise ValueError(f"{file}: cannot read the tensors ({type(exc).__name__}: {exc}); the file is damaged or "
                         "truncated, save the model again") from None


@torch.no_grad()
def load_quantized(model: nn.Module, path: str | os.PathLike, *, verify: bool = True) -> nn.Module:
    """Replace the linears of a full-precision ``model`` by the QLinears saved in ``path``.

    The model must have the architecture of the saved one (checked by layer names and shapes).
    ``verify``: check each tensor file against the sha256 in ``quant.json`` first (a modified or
    truncated file raises a ValueError naming it). Returns the model (modified in place);
    ``model.hwsim_quant_meta`` holds the saved JSON.
    """
    path = Path(path)
    if not (path / _JSON).is_file():
        raise FileNotFoundError(f"path: {path} is not a saved quantized model (no {_JSON})")
    doc = _read_doc(path / _JSON)
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"path: {path} has format version {doc.get('version')}, expected {FORMAT_VERSION}")
    mtype = doc.get("model", {}).get("model_type")
    have = getattr(getattr(model, "config", None), "model_type", None)
    if mtype is not None and have is not None and mtype != have:
        raise ValueError(f"model: saved model_type {mtype!r} differs from the given model's {have!r}")
    if verify:
        _verify(path, doc)
    tensors = _load_tensors(path / _TENSORS)
    if doc.get("base_weights"):
        base = _load_tensors(path / _BASE)
        if "lm_head.weight" in base and getattr(model.config, "tie_word_embeddings", False):
            model.lm_head.weight = nn.Parameter(base["lm_head.weight"].clone())
            model.config.tie_word_embeddings = False
        missing = [k for k in base if k not in dict(model.state_dict())]
        if missing:
            # biases acquired by folding (OPT lm_head): create them before loading
            for k in missing:
                mod_name, _, attr = k.rpartition(".")
                mod = model.get_submodule(mod_name)
                setattr(mod, attr, nn.Parameter(torch.zeros_like(base[k])))
        model.load_state_dict(base, strict=False)
    modules = dict(model.named_modules())
    caches: dict[str, Any] = {}
    for name, meta in doc["layers"].items():
        if name not in modules:
            raise ValueError(f"model: has no module {name!r} (saved from a different architecture?)")
        try:
            _load_layer(model, modules[name], name, meta, tensors, caches)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path / _JSON}: the entry of layer {name!r} is malformed ({type(exc).__name__}: {exc})"
                             ) from exc
    att = (doc.get("recipe") or {}).get("attention")
    if att:
        from .attention import install_attention_quant
        from .config import AttentionConfig

        cfg = AttentionConfig(**att)
        if cfg.active:
            install_attention_quant(model, cfg)
    model.hwsim_quant_meta = doc
    return model


def _load_layer(model: nn.Module, old: nn.Module, name: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                caches: dict[str, Any]) -> None:
    """Build the QLinear of one saved layer and put it in place of ``old``."""
    from .qlinear import ActQuantCache

    if isinstance(old, nn.Linear) and (old.in_features, old.out_features) != (meta["in"], meta["out"]):
        raise ValueError(f"model: {name} is [{old.out_features}, {old.in_features}], saved layer is "
                         f"[{meta['out']}, {meta['in']}]")
    weight = _get_q(tensors, f"{name}.weight", meta["weight"]) if meta["weight"] else tensors[f"{name}.weight"]
    bias = None
    bias_fmt = None
    if meta["bias"] == "float":
        bias = tensors[f"{name}.bias"]
    elif isinstance(meta["bias"], dict):
        bias = tensors[f"{name}.bias.float"]
        bias_fmt = meta["bias"]["fmt"]
    lowrank = None
    if "lowrank" in meta:
        lr = meta["lowrank"]
        lowrank = {"xa_fmt": lr["xa_fmt"], "xab_fmt": lr["xab_fmt"]}
        for key in ("A", "B"):
            lowrank[key] = _get_q(tensors, f"{name}.{key}", lr[key]) if lr[key] else tensors[f"{name}.{key}"]
    pre = tensors[meta["pre_transform_tensor"]] if meta.get("pre_transform_tensor") else tensors.get(
        f"{name}.pre_transform")
    key = meta.get("input_key")
    cache = caches.setdefault(key, ActQuantCache()) if key else None
    ql = QLinear(weight, bias, x_fmt=meta["x_fmt"], lowrank=lowrank, mode="fake", pre_transform=pre,
                 pre_transform_kind=meta.get("pre_transform", "none"), name=name, input_key=key, act_cache=cache,
                 compute_dtype=getattr(torch, meta.get("compute_dtype", "float32")))
    if bias_fmt is not None:
        # the stored float bias is already the dequantized value; keep the codes for records
        ql.bias_fmt = _get_q(tensors, f"{name}.bias", meta["bias"]).spec
        ql.qbias = _get_q(tensors, f"{name}.bias", meta["bias"])
    dev = next((p.device for p in old.parameters()), torch.device("cpu")) if isinstance(old, nn.Module) else "cpu"
    ql.to(dev)
    mode = meta.get("mode", "fake")
    ql.set_mode(mode, accumulator=meta.get("accumulator", "fp32") if mode == "exact" else None)
    set_module(model, name, ql)
