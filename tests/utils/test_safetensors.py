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


# --------------------------------------------------------------------------- hostile headers


def _raw(path, header, data: bytes = bytes(64), size: int | None = None):
    """A safetensors file written by hand: any header, any claimed header size."""
    import json
    import struct

    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if size is None else size) + encoded + data)
    return path


F32_4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
F32_2_AT_8 = {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}

HOSTILE = {
    "offsets past the end": ({"x": {"dtype": "F32", "shape": [32], "data_offsets": [0, 128]}},
                             "past the end"),
    "negative offsets": ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}},
                         "data_offsets must be"),
    "overlapping ranges": ({"x": F32_4, "y": F32_2_AT_8}, "overlap"),
    "shape [-1, 4]": ({"x": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}},
                      "non-negative integers"),
    "length and shape disagree": ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}},
                                  "needs 12"),
    "missing dtype": ({"x": {"shape": [4], "data_offsets": [0, 16]}}, "exactly dtype"),
    "unknown dtype": ({"x": {"dtype": "F128", "shape": [4], "data_offsets": [0, 16]}},
                      "unsupported dtype 'F128'"),
    "entry not an object": ({"x": [0, 16]}, "exactly dtype"),
    "header not an object": ([1, 2], "not a JSON object"),
    "metadata not str->str": ({"__metadata__": {"k": 1}, "x": F32_4}, "__metadata__ must map"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header_is_refused(tmp_path, case):
    """Each lying header is a DataError naming the file and what is wrong, before any load."""
    header, expected = HOSTILE[case]
    path = _raw(tmp_path / "bad.safetensors", header)
    with pytest.raises(DataError, match=expected) as raised:
        load_file(path)
    assert str(path) in str(raised.value)


def test_header_size_beyond_the_file_is_refused(tmp_path):
    """A header length of 2^63 is called a bad safetensors header, also by KMeans.load."""
    from sslspeech.units.kmeans import KMeans

    path = _raw(tmp_path / "km.safetensors", {"centroids": F32_4}, size=2**63)
    with pytest.raises(DataError, match="header size 9223372036854775808 is beyond"):
        load_file(path)
    with pytest.raises(DataError, match="header size") as raised:
        KMeans.load(path)
    assert "scikit-learn" not in str(raised.value)


def test_valid_hand_made_file_loads(tmp_path):
    """The checks accept a correct hand-made file (empty tensors and metadata included)."""
    header = {
        "__metadata__": {"k": "v"},
        "x": F32_4,
        "empty": {"dtype": "I64", "shape": [0, 3], "data_offsets": [16, 16]},
        "b": {"dtype": "BOOL", "shape": [2], "data_offsets": [16, 18]},
    }
    data = torch.arange(4, dtype=torch.float32).numpy().tobytes() + b"\x01\x00"
    tensors = load_file(_raw(tmp_path / "ok.safetensors", header, data))
    assert torch.equal(tensors["x"], torch.arange(4, dtype=torch.float32))
    assert tensors["empty"].shape == (0, 3) and tensors["empty"].dtype == torch.int64
    assert tensors["b"].tolist() == [True, False]
    assert reference_load(tmp_path / "ok.safetensors").keys() == tensors.keys()
