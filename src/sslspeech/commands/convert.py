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
        help="native: config.json + model.safetensors; hf: a transformers HubertModel directory",
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
    if args.to == "native":
        out = model.save_pretrained(args.out_dir)
    else:
        from sslspeech.interop.hf import export_hf

        if model.model_type not in ("hubert", "hubert_pretrain"):
            raise ConfigError(f"only HuBERT models export to HF; {args.src} is {model.model_type}")
        out = export_hf(model, args.out_dir)
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
