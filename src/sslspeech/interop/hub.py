"""Turn a checkpoint reference into a local path: a file or folder, a URL, or a HF model id.

URLs are downloaded once into a cache folder (atomically: a crash leaves no half file behind)
and reused afterwards without touching the network. HF model ids are looked up in the local
HuggingFace cache first (with `huggingface_hub` when installed, by reading the cache layout
otherwise) and downloaded only when `offline` is False.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sslspeech.errors import CheckpointError, DownloadError
from sslspeech.utils.fileio import atomic_path
from sslspeech.utils.progress import progress

log = logging.getLogger(__name__)

__all__ = ["default_cache_dir", "download", "is_hf_id", "resolve", "resolve_hf"]

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_HF_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*)/([\w.-]+)(?:@([\w./-]+))?$")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json", ".pkl")
_HF_WEIGHTS = (["*.json", "*.safetensors", "*.txt"], ["pytorch_model.bin"])


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/sslspeech`, or `~/.cache/sslspeech`."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "sslspeech"


def default_hf_cache_dir() -> Path:
    """Where huggingface_hub keeps models: `$HF_HUB_CACHE`, `$HF_HOME/hub` or its default."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name])
    home = (
        os.environ.get("HF_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    )
    return Path(home) / "hub"


def is_hf_id(src: str) -> bool:
    """Whether `src` reads as `org/name`, `org/name@revision` or `hf://org/name`."""
    if src.startswith(("./", "../", "/", "~")) or src.lower().endswith(_CHECKPOINT_SUFFIXES):
        return False
    return bool(_HF_ID.match(src))


def is_remote(src: str) -> bool:
    """Whether `src` names a URL (http, https, file) or a HF model id, not a local path."""
    return urllib.parse.urlparse(src).scheme.lower() in ("http", "https", "file") or is_hf_id(src)


def resolve(
    src: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    hf_cache_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
    quiet: bool = False,
    loader: str = "HuBERT.from_pretrained",
) -> Path:
    """A local file or directory for `src`.

    `src` is an existing path (returned as is), a `file://` URL, an http(s) URL (downloaded
    into `cache_dir`, default `default_cache_dir()`, and reused) or a HF model id (from the
    HF cache, downloaded unless `offline`). Raises DownloadError or CheckpointError; `loader`
    names the call that loads a hand-downloaded file, for the message.
    """
    text = os.fspath(src)
    path = Path(text).expanduser()
    if path.exists():
        return path
    scheme = urllib.parse.urlparse(text).scheme.lower()
    if scheme == "file":
        return _file_url(text)
    if scheme in ("http", "https"):
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        return download(text, cache, offline=offline, quiet=quiet, loader=loader)
    if is_hf_id(text):
        return resolve_hf(text, cache_dir=hf_cache_dir, offline=offline)
    raise CheckpointError(
        f"{text}: no such file or directory (nor an http(s) URL or a HF model id 'org/name')"
    )


def _file_url(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    path = Path(urllib.request.url2pathname(parsed.path))
    if not path.exists():
        raise CheckpointError(f"{url}: no such file or directory ({path})")
    return path


# --------------------------------------------------------------------------- URLs


def cached_path(url: str, cache_dir: Path) -> Path:
    """Where `url` is kept: `<cache>/<hash of the URL>/<file name of the URL>`."""
    parsed = urllib.parse.urlparse(url)
    name = Path(urllib.parse.unquote(parsed.path)).name or "download"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_dir / digest / name


def _manual_hint(url: str, target: Path, loader: str) -> str:
    return (
        f"Download it by hand (e.g. `curl -L -o {target.name} '{url}'`) and pass the local "
        f"file instead (`{loader}('/path/to/{target.name}')`), or copy it to {target} so it "
        "is found in the cache."
    )


def download(
    url: str,
    cache_dir: Path,
    *,
    offline: bool = False,
    quiet: bool = False,
    loader: str = "HuBERT.from_pretrained",
) -> Path:
    """The cached copy of `url`, fetched first when absent (unless `offline`).

    `loader` names the call that loads the file by hand, for the error message.
    """
    target = cached_path(url, Path(cache_dir))
    if target.is_file():
        log.debug("using cached %s for %s", target, url)
        return target
    if offline:
        raise DownloadError(
            f"{url} is not in the cache ({target}) and downloads are off. "
            + _manual_hint(url, target, loader)
        )
    log.info("downloading %s to %s", url, target)
    try:
        with (
            urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response,
            atomic_path(target) as tmp,
        ):
            _copy_response(response, tmp, url, name=target.name, quiet=quiet)
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"could not download {url}: HTTP {error.code} {error.reason}. "
            + _manual_hint(url, target, loader)
        ) from None
    except (
        urllib.error.URLError,
        TimeoutError,
        ConnectionError,
        http.client.HTTPException,
    ) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"could not download {url} ({reason}); are you offline? "
            + _manual_hint(url, target, loader)
        ) from None
    return target


def _chunks(response: Any) -> Iterator[bytes]:
    while chunk := response.read(_CHUNK):
        yield chunk


def _copy_response(response: Any, tmp: Path, url: str, *, name: str, quiet: bool) -> None:
    expected = response.headers.get("Content-Length")
    total = int(expected) if expected and expected.isdigit() else None
    written = 0
    with tmp.open("wb") as out:
        chunks = progress(
            _chunks(response),
            total=None if total is None else -(-total // _CHUNK),
            desc=name,
            unit="MiB",
            quiet=quiet,
        )
        for chunk in chunks:
            out.write(chunk)
            written += len(chunk)
    if total is not None and written != total:
        raise DownloadError(
            f"could not download {url}: got {written} of {total} bytes (connection dropped); "
            "run again to retry"
        )


# --------------------------------------------------------------------------- HuggingFace


def _split_hf_id(text: str) -> tuple[str, str | None]:
    match = _HF_ID.match(text)
    if match is None:
        raise CheckpointError(f"{text}: not a HF model id 'org/name[@revision]'")
    org, name, revision = match.groups()
    return f"{org}/{name}", revision


def resolve_hf(
    model_id: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
) -> Path:
    """The snapshot folder of a HF model id (`org/name[@revision]`), local cache first."""
    repo_id, revision = _split_hf_id(model_id)
    try:
        import huggingface_hub
    except ImportError:
        huggingface_hub = None  # type: ignore[assignment]
    if huggingface_hub is None:
        found = find_in_hf_cache(repo_id, revision, cache_dir)
        if found is not None:
            return found
        raise DownloadError(
            f"HF model {repo_id!r} is not in the HF cache "
            f"({Path(cache_dir) if cache_dir else default_hf_cache_dir()}) and huggingface_hub "
            "is not installed to fetch it: `pip install huggingface_hub`, or download the model "
            "folder (config.json + model.safetensors) and pass its path."
        )
    # the cache folder is passed explicitly so that it follows the environment of the call
    return _resolve_hf_with_hub(repo_id, revision, cache_dir or default_hf_cache_dir(), offline)


def _resolve_hf_with_hub(
    repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None, offline: bool
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    common: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir}
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **common))
    except (LocalEntryNotFoundError, FileNotFoundError):
        if offline:
            raise DownloadError(
                f"HF model {repo_id!r} is not in the local HF cache and downloads are off. "
                f"Fetch it once online (`huggingface-cli download {repo_id}`) or pass the path "
                "of a folder holding its config.json and model.safetensors."
            ) from None
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=_HF_WEIGHTS[0], **common))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=_HF_WEIGHTS[1], **common))
    except (OSError, ValueError) as error:
        raise DownloadError(
            f"could not download HF model {repo_id!r} ({type(error).__name__}: {error}). "
            f"Check the id and your connection, or download it by hand "
            f"(`huggingface-cli download {repo_id}`) and pass the folder's path."
        ) from None
    return folder


def find_in_hf_cache(
    repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The snapshot folder in the HF cache layout (`models--org--name/snapshots/<commit>`)."""
    root = Path(cache_dir) if cache_dir is not None else default_hf_cache_dir()
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / (revision or "main")
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        return snapshots / commit if (snapshots / commit).is_dir() else None
    if revision is not None:
        return snapshots / revision if (snapshots / revision).is_dir() else None
    candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    return candidates[0] if len(candidates) == 1 else None
