"""Hostile checkpoints and configs (memory and time bombs) fail fast, with bounded memory."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

from sslspeech.errors import CheckpointError, ConfigError
from sslspeech.interop.common import layer_indices
from sslspeech.interop.fairseq import parse_conv_layers
from sslspeech.interop.hf import export_hf
from sslspeech.interop.safe_pickle import load
from sslspeech.models import load_model
from sslspeech.models.configs import HuBERTConfig
from sslspeech.models.hubert import HuBERT
from sslspeech.utils.safetensors import load_file, save_file

_LEGACY_HEADER = b"".join(
    pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
)


def _legacy(path: Path, payload: Any) -> None:
    """A complete legacy-format torch file (header, payload, empty storage list)."""
    path.write_bytes(_LEGACY_HEADER + pickle.dumps(payload, 2) + pickle.dumps([], 2))


class _Reduce:
    """Pickles as a call of `func(*args)`; pickling it runs nothing."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _zip(path: Path, records: dict[str, tuple[bytes, int, int, int]]) -> None:
    """A zip archive by hand: name -> (stored bytes, method, crc32, uncompressed size)."""
    local, central = bytearray(), bytearray()
    for name, (data, method, crc, size) in records.items():
        encoded = name.encode()
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size,
            len(encoded), 0, 0, 0, 0, 0, len(local),
        ) + encoded  # fmt: skip
        header = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size,
            len(encoded), 0,
        )  # fmt: skip
        local += header + encoded + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central),
                      len(local), 0)  # fmt: skip
    path.write_bytes(bytes(local + central + end))


def _deflate_bomb(path: Path) -> None:
    """A ~2 MB torch zip checkpoint whose one storage record inflates to 2 GiB of zeros."""
    chunk, repeats = bytes(2**23), 256  # 8 MiB x 256 = 2 GiB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressor.compress(chunk)
    compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)  # same each time
    deflated = block * repeats + compressor.flush()
    crc = 0
    for _ in range(repeats):
        crc = zlib.crc32(chunk, crc)
    source = path.with_suffix(".src")
    torch.save({"w": torch.zeros(1)}, source)
    with zipfile.ZipFile(source) as archive:
        records = {
            info.filename: (archive.read(info), 0, info.CRC, info.file_size)
            for info in archive.infolist()
            if not info.filename.endswith("data/0")
        }
        name = next(n for n in archive.namelist() if n.endswith("data/0"))
    records[name] = (deflated, 8, crc, len(chunk) * repeats)
    _zip(path, records)


def _hf_folder(root: Path, name: str, **changes: Any) -> Path:
    """A tiny HuBERT exported as a transformers folder, then config.json changed."""
    config = HuBERTConfig(
        extractor_conv_layers=((8, 10, 5), (8, 3, 2)), embed_dim=16, ffn_dim=32, num_layers=2,
        num_heads=2, pos_conv_kernel=4, pos_conv_groups=2,
    )  # fmt: skip
    folder = export_hf(HuBERT(config), root / name)
    hf = json.loads((folder / "config.json").read_text())
    hf.update(changes)
    (folder / "config.json").write_text(json.dumps(hf))
    return folder


def _hf_layer_index_bomb(root: Path) -> Path:
    """An HF folder whose weights name layer 10^12 (a loop over every index would never end)."""
    folder = _hf_folder(root, "hf_layer_index")
    state = load_file(folder / "model.safetensors")
    state["encoder.layers.1000000000000.attention.q_proj.weight"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    return folder


def _hostile_files(root: Path) -> dict[str, tuple[str, Path]]:
    """case -> (loader, path): every file built here, none taken from elsewhere."""
    cases: dict[str, tuple[str, Path]] = {}
    bytearray_bomb = root / "bytearray.pt"
    _legacy(bytearray_bomb, _Reduce(bytearray, 2**30))
    cases["bytearray(2**30) pickle"] = ("pickle", bytearray_bomb)
    range_bomb = root / "range.pt"
    torch.save({"x": _Reduce(list, _Reduce(range, 2**28))}, range_bomb)
    cases["list(range(2**28)) pickle"] = ("pickle", range_bomb)
    bytes_bomb = root / "bytes.pt"
    many = [_Reduce(bytes, 2**25) for _ in range(64)]  # 64 x 32 MiB, each under any one limit
    _legacy(bytes_bomb, many)
    cases["64 x bytes(2**25) pickle"] = ("pickle", bytes_bomb)
    tensor_bomb = root / "tensor.pt"
    _legacy(tensor_bomb, _Reduce(torch.Tensor, 2**28))
    cases["torch.Tensor(2**28) pickle"] = ("pickle", tensor_bomb)
    deflate_bomb = root / "deflate.pt"
    _deflate_bomb(deflate_bomb)
    cases["2 GiB DEFLATE record"] = ("pickle", deflate_bomb)
    for name, changes in {
        "num_hidden_layers = 10**6": {"num_hidden_layers": 10**6},
        "hidden_size = 2**20": {"hidden_size": 2**20, "num_conv_pos_embedding_groups": 16},
        "conv_dim shorter than num_feat_extract_layers": {"conv_dim": [8]},
        "layer_norm_eps = NaN": {"layer_norm_eps": math.nan},
    }.items():
        cases[name] = ("hf", _hf_folder(root, f"hf{len(cases)}", **changes))
    cases["HF weights naming layer 10**12"] = ("hf", _hf_layer_index_bomb(root))
    huge_config = _hf_folder(root, "huge_config")
    with (huge_config / "config.json").open("r+b") as handle:  # sparse: no disk, 1 GiB to read
        handle.truncate(2**30)
    cases["1 GiB config.json"] = ("hf", huge_config)
    return cases


_MEASURE = r"""
import json, sys, time
from pathlib import Path
from sslspeech import HuBERT
from sslspeech.interop import safe_pickle

def rss(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) * 1024

results = {}
for case, (loader, path) in json.loads(sys.argv[1]).items():
    open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
    before, start = rss("VmRSS"), time.monotonic()
    try:
        safe_pickle.load(path) if loader == "pickle" else HuBERT.from_pretrained(path)
        error = None
    except Exception as raised:
        error = [type(raised).__name__, str(raised)]
    results[case] = {"seconds": time.monotonic() - start,
                     "peak_bytes": rss("VmHWM") - before, "error": error}
print(json.dumps(results))
"""


# Peak memory is read from /proc (VmHWM reset by clear_refs): Linux only; CI runs on Linux.
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_hostile_files_fail_fast_with_bounded_memory(tmp_path: Path) -> None:
    """Each hostile checkpoint or config is refused in < 10 s, growing memory by < 500 MB, with
    an sslspeech error naming the file (measured in a fresh process: VmHWM after a reset)."""
    cases = _hostile_files(tmp_path)
    arguments = json.dumps({case: (loader, str(path)) for case, (loader, path) in cases.items()})
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, arguments], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for case, (_, path) in cases.items():
        result = results[case]
        assert result["error"] is not None, f"{case}: loaded without an error"
        kind, message = result["error"]
        errors = ("CheckpointError", "CheckpointConfigError", "UnsafePickleError", "ConfigError")
        assert kind in errors, (case, message)
        assert str(path) in message or path.name in message, (case, message)
        assert result["seconds"] < 10, (case, result)
        assert result["peak_bytes"] < 500 * 2**20, (case, result)


def test_hf_config_errors_name_the_key(tmp_path: Path) -> None:
    """Bad HF configs name config.json and the HubertConfig key, before building anything."""
    expected = {
        "layer_norm_eps": ({"layer_norm_eps": math.nan}, "layer_norm_eps"),
        "conv_dim": ({"conv_dim": [8]}, "num_feat_extract_layers"),
        "layers": ({"num_hidden_layers": 1e6}, "num_hidden_layers"),
        "groups": ({"num_conv_pos_embedding_groups": 3}, "num_conv_pos_embedding_groups"),
    }
    missing = _hf_folder(tmp_path, "missing")
    raw = json.loads((missing / "config.json").read_text())
    del raw["hidden_size"]
    (missing / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"\['hidden_size'\] are missing"):
        HuBERT.from_pretrained(missing)
    for name, (changes, key) in expected.items():
        folder = _hf_folder(tmp_path, name, **changes)
        with pytest.raises(CheckpointError, match=key) as raised:
            HuBERT.from_pretrained(folder)
        assert "config.json" in str(raised.value), name


def test_config_far_beyond_the_weights_is_refused(tmp_path: Path) -> None:
    """A config needing more parameters than the weights hold is refused before it is built."""
    folder = _hf_folder(tmp_path, "big", num_hidden_layers=10**6)
    with pytest.raises(CheckpointError, match=r"at least [\d,]+ parameters.*only [\d,]+ values"):
        HuBERT.from_pretrained(folder)


def test_model_config_refuses_non_finite_and_empty_conv_values() -> None:
    """The model configs themselves refuse NaN/inf numbers, eps <= 0 and zero-size conv layers."""
    for bad in ({"layer_norm_eps": math.inf}, {"dropout": math.nan}, {"layer_norm_eps": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            HuBERTConfig(**bad)
    with pytest.raises(ConfigError, match=r"extractor_conv_layers\[1\]"):
        HuBERTConfig(extractor_conv_layers=((8, 10, 5), (8, 0, 2)))


def test_fairseq_conv_expression_cannot_repeat_without_bound() -> None:
    """fairseq's `conv_feature_layers` expression may not multiply into millions of layers."""
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4") == [[512, 10, 5]] + [[512, 3, 2]] * 4
    with pytest.raises(CheckpointError, match="repeats beyond"):
        parse_conv_layers("[(512,10,5)] * 1000000000")
    with pytest.raises(CheckpointError, match="repeats beyond"):
        parse_conv_layers("1000000000 * [(512,10,5)]")


def test_layer_index_beyond_the_state_is_refused() -> None:
    """A key naming layer 10^12 in a 2-entry state dict is an error, not a 10^12-step loop."""
    state = {"layers.0.w": torch.zeros(1), "layers.1.w": torch.zeros(1)}
    assert layer_indices(state, r"layers\.(\d+)\.") == 2
    state["layers.1000000000000.w"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="names layer 1000000000000"):
        layer_indices(state, r"layers\.(\d+)\.")


def test_fairseq_and_spidr_configs_are_checked_before_building(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """fairseq cfg and spidr config.json values get the same checks, naming the file: a NaN
    dropout, a million layers, a huge codebook."""
    payload = load(fixtures_dir / "hubert" / "fairseq_base_like" / "checkpoint.pt")
    payload.pop("task_state")  # its Dictionary is not re-savable; the encoder alone will do
    heads = ("label_embs_concat", "final_proj.")
    payload["model"] = {k: v for k, v in payload["model"].items() if not k.startswith(heads)}
    for name, change, expected in [
        ("nan", {"dropout": math.nan}, "dropout must be a finite number"),
        ("layers", {"encoder_layers": 10**6}, "at least [\\d,]+ parameters"),
        ("text", {"encoder_layers": "many"}, "config value is not a number"),
    ]:
        path = tmp_path / f"{name}.pt"
        torch.save({**payload, "cfg": {**payload["cfg"], "model": {
            **payload["cfg"]["model"], **change}}}, path)  # fmt: skip
        with pytest.raises((CheckpointError, ConfigError), match=expected) as raised:
            load_model(path)
        assert str(path) in str(raised.value), name
    folder = tmp_path / "spidr"
    shutil.copytree(fixtures_dir / "spidr" / "tiny_spidr", folder)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "codebook_size": 2**30}))
    with pytest.raises(CheckpointError, match=rf"{folder}: the config describes"):
        load_model(folder)


def test_state_dict_missing_a_shape_source_is_a_clear_error(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """A torchaudio state dict lacking the weight its width is read from names the file and the
    key instead of a raw KeyError."""
    state = load(fixtures_dir / "hubert" / "torchaudio_base_like" / "model.pth")
    del state["encoder.feature_projection.projection.weight"]
    path = tmp_path / "model.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"feature_projection\.projection\.weight") as raised:
        load_model(path, num_heads=2, layer_norm_first=False)
    assert str(path) in str(raised.value)


def test_sharded_index_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    """A `model.safetensors.index.json` naming '../x' or lacking weight_map is a clear error."""
    for name, index in {"escape": {"weight_map": {"w": "../outside.safetensors"}},
                        "shapeless": {"weights": []}}.items():  # fmt: skip
        folder = _hf_folder(tmp_path, name)
        (folder / "model.safetensors").unlink()
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: ") as raised:
            HuBERT.from_pretrained(folder)
        assert ("file names in its folder" in str(raised.value)) == (name == "escape")
