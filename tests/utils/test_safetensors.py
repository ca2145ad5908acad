"""Our torch-only safetensors reader/writer agrees with the reference `safetensors` package."""

import pytest
import torch
from safetensors.torch import load_file as reference_load
from safetensors.torch import save_file as reference_save

from sslspeech.errors import DataError
from sslspeech.utils.safetensors import load_file, load_metadata, save_file

TENSORS = {
    "f32": torch.randn(3, 4),
    "bf16": torch.randn(5).to(torch.bfloat16),
    "i64": torch.arange(6).reshape(2, 3),
    "mask": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 7),
}


def test_ours_is_read_by_reference(tmp_path):
    save_file(TENSORS, tmp_path / "ours.safetensors", metadata={"k": "v"})
    back = reference_load(tmp_path / "ours.safetensors")
    assert back.keys() == TENSORS.keys()
    for name, tensor in TENSORS.items():
        assert torch.equal(back[name], tensor), name
    assert load_metadata(tmp_path / "ours.safetensors") == {"k": "v"}


def test_reference_is_read_by_ours(tmp_path):
    reference_save(TENSORS, str(tmp_path / "ref.safetensors"))
    back = load_file(tmp_path / "ref.safetensors")
    for name, tensor in TENSORS.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


def test_garbage_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(DataError, match=r"bad\.safetensors"):
        load_file(bad)
