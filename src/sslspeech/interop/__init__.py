"""Reading and writing checkpoints: `load_checkpoint(src, **overrides)` turns any supported file,
directory, HF id or URL into plain data (`LoadedCheckpoint`: model type, flat config, native
state dict). This layer imports nothing from `sslspeech.models`: the models build themselves
from a `LoadedCheckpoint` (`sslspeech.models.load_model(src)` for the type the file records).

Reader protocol (how a format plugs in)
---------------------------------------
A reader is any object with

- `name: str` — the format, used in messages ("fairseq", "hf", ...);
- `matches(source: CheckpointSource) -> bool` — decide from the *content* (never the file
  name alone): `source.path` is a resolved local file or directory, `source.json(name)` reads a
  JSON file of a directory (or next to a file), `source.payload` is the unpickled content of a
  pickle file (read once with the allow-list unpickler `safe_pickle.load`, shared by all
  readers), `source.is_pickle` tells whether the file is a torch/pickle file at all;
- `read(source, overrides) -> LoadedCheckpoint` — return the model type, the flat config dict
  (the fields of the model's config dataclass; what `config.json` holds besides `model_type`)
  and the state dict with *native* key names. `overrides` (config fields given by the user) are
  merged into the config afterwards by `load_checkpoint`; a reader may consult them to fill in
  what the format does not record (torchaudio: `num_heads`, `layer_norm_first`).

Modules listed in `READER_MODULES` are imported on first use; each exposes `READERS`, a list
of reader objects, tried in order (the first that matches reads). `register_reader` adds one
at run time. Model classes are found by `model_type` in `sslspeech.models.registry`; each has a
classmethod `from_checkpoint(loaded: LoadedCheckpoint)` (given by
`sslspeech.models.pretrained.Pretrained`, which also gives `from_pretrained` and
`save_pretrained`: subclasses set `model_type` and `config_class`, and may override
`adapt_checkpoint` to accept another model type's checkpoint).

A SpidR/DinoSR module `sslspeech.interop.spidr` only needs `READERS = [...]`: it is tried
before fairseq, so its `matches` may claim DinoSR fairseq `.ckpt` payloads.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sslspeech.errors import CheckpointError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Modules holding built-in readers, in matching order (training/native first).
READER_MODULES = (
    "sslspeech.interop.native",
    "sslspeech.interop.hf",
    "sslspeech.interop.spidr",
    "sslspeech.interop.fairseq",
    "sslspeech.interop.torchaudio",
)

_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")
MAX_JSON_BYTES = 16 * 2**20  # a config.json / preprocessor_config.json is a few KB


@dataclass
class LoadedCheckpoint:
    """What a reader returns: enough to build the native model."""

    model_type: str
    """A type of `sslspeech.models.registry` ("hubert", "hubert_pretrain", "spidr", ...)."""
    config: dict[str, Any]
    """Flat config fields of the model's config dataclass."""
    state_dict: dict[str, torch.Tensor]
    """Native parameter names -> tensors."""
    format: str
    """The reader's name, for messages."""
    also_fits: tuple[str, ...] = ()
    """Other model types whose classes read these weights as they are (a SpidR-layout file
    without its config fits DinoSR too)."""
    origin: str = ""
    """The file the config comes from, for messages (default: what `load_checkpoint` read)."""
    config_keys: dict[str, str] = field(default_factory=dict)
    """Config fields -> how the source names them, for messages (e.g. "HubertConfig key
    'num_hidden_layers'")."""


class CheckpointSource:
    """A resolved local file or directory and its content, read lazily and once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def is_dir(self) -> bool:
        """Whether the source is a directory."""
        return self.path.is_dir()

    @property
    def directory(self) -> Path:
        """The directory itself, or the folder holding the file."""
        return self.path if self.is_dir else self.path.parent

    def json(self, name: str) -> dict[str, Any] | None:
        """A JSON object file of the directory (or next to the file); None when absent."""
        path = self.directory / name
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(
                f"{path}: {path.stat().st_size} bytes, more than any model's {name} "
                f"({MAX_JSON_BYTES // 2**20} MiB at most); the file is not a config: replace it"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not readable JSON ({error})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
        return data

    @cached_property
    def is_pickle(self) -> bool:
        """Whether the file starts like a torch.save zip or a pickle."""
        if self.is_dir:
            return False
        with self.path.open("rb") as handle:
            head = handle.read(4)
        return head.startswith(_PICKLE_MAGIC)

    @cached_property
    def payload(self) -> Any:
        """The unpickled content (allow-list unpickler; plain containers and tensors)."""
        if not self.is_pickle:
            raise CheckpointError(f"{self.path}: not a torch/pickle file")
        from sslspeech.interop.safe_pickle import load

        return load(self.path)


class CheckpointReader(Protocol):
    """A checkpoint format (see the module docstring)."""

    name: str

    def matches(self, source: CheckpointSource) -> bool:
        """Whether this reader understands the source's content."""
        ...

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Model type, flat config and native state dict."""
        ...


_READERS: list[CheckpointReader] = []
_LOADED_MODULES = False


def register_reader(reader: CheckpointReader, *, first: bool = False) -> None:
    """Add a reader (tried after the built-in ones unless `first`)."""
    readers()
    if first:
        _READERS.insert(0, reader)
    else:
        _READERS.append(reader)


def readers() -> list[CheckpointReader]:
    """Every registered reader in matching order (imports READER_MODULES on first use)."""
    global _LOADED_MODULES
    if not _LOADED_MODULES:
        _LOADED_MODULES = True
        builtin: list[CheckpointReader] = []
        for module_name in READER_MODULES:
            if importlib.util.find_spec(module_name) is None:
                continue
            builtin.extend(importlib.import_module(module_name).READERS)
        _READERS[:0] = builtin
    return _READERS


def detect(source: CheckpointSource) -> CheckpointReader:
    """The first reader whose `matches` accepts the source."""
    for reader in readers():
        if reader.matches(source):
            return reader
    names = ", ".join(reader.name for reader in readers())
    kind = "directory" if source.is_dir else "file"
    raise CheckpointError(
        f"{source.path}: unknown checkpoint format ({kind}; tried {names}). Expected a fairseq or "
        "s3prl HuBERT .pt, a torchaudio .pth, a HF model directory, a SpidR/DinoSR checkpoint, a "
        "training step_N.pt or a directory written by save_pretrained."
    )


def resolve(src: str | os.PathLike[str]) -> Path:
    """A local path for `src` (file, directory, HF model id or http(s) URL)."""
    path = Path(src)
    if path.exists():
        return path
    from sslspeech.interop.hub import resolve as hub_resolve

    return hub_resolve(str(src))


def load_checkpoint(src: str | os.PathLike[str], **overrides: Any) -> LoadedCheckpoint:
    """Read any supported checkpoint; `overrides` replace config fields."""
    source = CheckpointSource(resolve(src))
    reader = detect(source)
    loaded = reader.read(source, overrides)
    loaded.config = {**loaded.config, **overrides}
    loaded.origin = loaded.origin or str(source.path)
    log.debug("read %s as %s (%s)", source.path, reader.name, loaded.model_type)
    return loaded


__all__ = [
    "READER_MODULES",
    "CheckpointReader",
    "CheckpointSource",
    "LoadedCheckpoint",
    "detect",
    "load_checkpoint",
    "readers",
    "register_reader",
    "resolve",
]
