"""`sslspeech convert SRC OUT_DIR --to native|hf`: rewrite any supported checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from sslspeech.errors import ConfigError

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech convert`."""
    parser.add_argument("src", help="checkpoint: file, directory, HF model id or http(s) URL")
    parser.add_argument("out_dir", help="output directory (created)")
    parser.add_argument(
        "--to",
        choices=("native", "hf"),
        default="native",
        help="native: config.json + model.safetensors; hf: a transformers directory "
        "(HubertModel for HuBERT, Data2VecAudioModel for the SpidR/DinoSR student)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="config override, e.g. --set num_heads=12 --set layer_norm_first=false (needed for "
        "torchaudio state dicts of non-standard sizes); VALUE is JSON or a plain string",
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """FIELD=VALUE strings -> dict (VALUE parsed as JSON when it is JSON)."""
    overrides: dict[str, Any] = {}
    for item in items:
        field, sep, text = item.partition("=")
        if not sep or not field:
            raise ConfigError(f"--set expects FIELD=VALUE; got {item!r}")
        try:
            overrides[field] = json.loads(text)
        except ValueError:
            overrides[field] = text
    return overrides


def run(args: argparse.Namespace) -> int:
    """Load SRC (format detected) and write it to OUT_DIR in the requested format."""
    from sslspeech.models import load_model

    model: Any = load_model(args.src, **parse_overrides(args.overrides))
    out = model.save_pretrained(args.out_dir) if args.to == "native" else _export_hf(model, args)
    print(
        json.dumps(
            {
                "src": str(args.src),
                "out_dir": str(out),
                "to": args.to,
                "model_type": model.model_type,
            }
        )
    )
    return 0


def _export_hf(model: Any, args: argparse.Namespace) -> Any:
    """HuBERT -> HubertModel; SpidR/DinoSR student -> Data2VecAudioModel (same architecture)."""
    if model.model_type in ("hubert", "hubert_pretrain"):
        from sslspeech.interop.hf import export_hf

        return export_hf(model, args.out_dir)
    if model.model_type in ("spidr", "dinosr"):
        from sslspeech.interop.hf_data2vec import export_data2vec

        return export_data2vec(model, args.out_dir)
    raise ConfigError(f"{args.src} is a {model.model_type} model; no HF export for it")
