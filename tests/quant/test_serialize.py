"""Saved quantized models: checksums, damaged files and unwritable paths give errors naming the file (issue 15)."""

import json
import os

import pytest
import torch

from hwsim.quant import load_quantized, quantize_model, save_quantized
from hwsim.quant.serialize import check_save_path
from hwsim.quant.testing import tiny_model

IDS = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_model("llama")
    quantize_model(model, "rtn", progress=False)
    path = save_quantized(model, tmp_path_factory.mktemp("save") / "q")
    with torch.no_grad():
        return path, model(IDS).logits


def _copy(saved, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(saved[0], dst)
    return dst


def test_checksums_are_recorded_and_verified(saved):
    path, y = saved
    doc = json.loads((path / "quant.json").read_text())
    assert set(doc["checksums"]) == {"quant.safetensors"} and len(doc["checksums"]["quant.safetensors"]) == 64
    fresh = load_quantized(tiny_model("llama"), path)
    with torch.no_grad():
        assert torch.equal(fresh(IDS).logits, y)


def test_tampered_byte_is_detected(saved, tmp_path):
    path = _copy(saved, tmp_path)
    f = path / "quant.safetensors"
    data = bytearray(f.read_bytes())
    data[-7] ^= 0x10  # a code byte near the end of the data section
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"quant\.safetensors: sha256 .* differs .* modified or truncated.*verify=False"):
        load_quantized(tiny_model("llama"), path)
    fresh = load_quantized(tiny_model("llama"), path, verify=False)  # the check can be skipped
    with torch.no_grad():
        assert not torch.equal(fresh(IDS).logits, saved[1])


def test_truncated_tensor_file_names_the_file(saved, tmp_path):
    path = _copy(saved, tmp_path)
    f = path / "quant.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"copy/quant\.safetensors: sha256"):
        load_quantized(tiny_model("llama"), path)
    with pytest.raises(ValueError, match=r"copy/quant\.safetensors: cannot read the tensors .*truncated"):
        load_quantized(tiny_model("llama"), path, verify=False)


def test_malformed_json_names_the_file(saved, tmp_path):
    path = _copy(saved, tmp_path)
    (path / "quant.json").write_text('{"version": 1, "layers": {')
    with pytest.raises(ValueError, match=r"copy/quant\.json: not a valid quant\.json"):
        load_quantized(tiny_model("llama"), path)
    (path / "quant.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"quant\.json: not a saved quantized model's description"):
        load_quantized(tiny_model("llama"), path)


def test_malformed_layer_entry_names_the_layer(saved, tmp_path):
    path = _copy(saved, tmp_path)
    doc = json.loads((path / "quant.json").read_text())
    name = next(iter(doc["layers"]))
    del doc["layers"][name]["weight"]
    (path / "quant.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"quant\.json: the entry of layer '{name}' is malformed"):
        load_quantized(tiny_model("llama"), path)


def test_missing_tensor_names_the_file(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    path = _copy(saved, tmp_path)
    f = path / "quant.safetensors"
    tensors = load_file(str(f))
    gone = sorted(tensors)[0]
    del tensors[gone]
    save_file(tensors, str(f))
    with pytest.raises(ValueError, match=rf"quant\.safetensors: has no tensor '{gone}'"):
        load_quantized(tiny_model("llama"), path, verify=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_save_path_is_named(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"save path .*ro/q.* is not writable"):
            check_save_path(ro / "q")
        model = tiny_model("llama")
        quantize_model(model, "rtn", progress=False)
        with pytest.raises(PermissionError, match="is not writable"):
            save_quantized(model, ro / "q")
    finally:
        ro.chmod(0o700)


def test_save_path_that_is_a_file_is_rejected(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        check_save_path(f)
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        check_save_path(f / "below")
    assert check_save_path(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_unwritable_save_path_is_named_also_for_root(tmp_path, monkeypatch):
    """The same checks with the OS answers simulated (the tests may run as root)."""
    import tempfile

    import hwsim.quant.serialize as S

    model = tiny_model("llama")
    quantize_model(model, "rtn", progress=False)
    monkeypatch.setattr(S.os, "access", lambda p, mode: False)
    with pytest.raises(PermissionError, match=r"save path .*/q'?: directory .* is not writable"):
        save_quantized(model, tmp_path / "q")
    monkeypatch.undo()

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(PermissionError, match=r"save path .*/q'?: cannot create it \(Permission denied\)"):
        save_quantized(model, tmp_path / "q")
