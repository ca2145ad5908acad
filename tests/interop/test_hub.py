"""hub.resolve: local paths, URLs from a loopback HTTP server (cached, atomic), HF ids offline."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslspeech.errors import CheckpointError, DownloadError, SSLSpeechError
from sslspeech.interop import hub
from tests.interop.loopback import LoopbackServer, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoopbackServer]:
    with serve(tmp_path / "served") as served:
        yield served


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_url_is_downloaded_once_and_reused(server: LoopbackServer, tmp_path: Path) -> None:
    """First resolve downloads (file name kept), the next ones use the cache without a request."""
    payload = bytes(range(256)) * 5000  # > 1 MiB: several chunks
    (server.root / "model.pt").write_bytes(payload)
    cache = tmp_path / "cache"
    url = server.url("model.pt")
    first = hub.resolve(url, cache_dir=cache, quiet=True)
    assert first.name == "model.pt" and first.read_bytes() == payload
    assert first.is_relative_to(cache)
    assert server.requests == ["/model.pt"]
    assert hub.resolve(url, cache_dir=cache) == first
    assert hub.resolve(url, cache_dir=cache, offline=True) == first
    assert server.requests == ["/model.pt"]
    assert _leftovers(cache) == [first], "no temporary files stay behind"


def test_http_404_is_a_download_error(server: LoopbackServer, tmp_path: Path) -> None:
    """A missing remote file raises DownloadError naming the URL and the manual way."""
    url = server.url("missing.pt")
    with pytest.raises(DownloadError) as raised:
        hub.resolve(url, cache_dir=tmp_path / "cache")
    message = str(raised.value)
    assert url in message and "404" in message
    assert "by hand" in message and "from_pretrained" in message
    assert isinstance(raised.value, SSLSpeechError)
    assert _leftovers(tmp_path / "cache") == []


def test_truncated_download_leaves_nothing(server: LoopbackServer, tmp_path: Path) -> None:
    """A body shorter than Content-Length is an error and no partial file is cached."""
    with pytest.raises(DownloadError, match=r"1000 bytes|IncompleteRead"):
        hub.resolve(server.url("truncated.bin"), cache_dir=tmp_path / "cache")
    assert _leftovers(tmp_path / "cache") == []


def test_offline_without_cache_makes_no_request(server: LoopbackServer, tmp_path: Path) -> None:
    """offline=True and nothing cached: DownloadError, and the server never sees a request."""
    (server.root / "model.pt").write_bytes(b"x")
    url = server.url("model.pt")
    with pytest.raises(DownloadError, match="downloads are off") as raised:
        hub.resolve(url, cache_dir=tmp_path / "cache", offline=True)
    assert url in str(raised.value)
    assert server.requests == []


def test_unreachable_host_is_a_download_error(tmp_path: Path) -> None:
    """Nothing listening (like being offline): DownloadError naming the URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.pt"
    with pytest.raises(DownloadError, match="offline") as raised:
        hub.resolve(url, cache_dir=tmp_path / "cache")
    assert url in str(raised.value)


def test_local_paths(tmp_path: Path) -> None:
    """Existing files, folders and file:// URLs resolve to themselves; missing ones raise."""
    file = tmp_path / "model.pt"
    file.write_bytes(b"x")
    assert hub.resolve(file) == file
    assert hub.resolve(str(tmp_path)) == tmp_path
    assert hub.resolve(file.as_uri()) == file
    with pytest.raises(CheckpointError, match="no such file"):
        hub.resolve(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        hub.resolve("checkpoints/missing.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        hub.resolve((tmp_path / "gone.pt").as_uri())


def _fake_hf_cache(root: Path, repo_id: str, commit: str = "a" * 40) -> Path:
    """The huggingface_hub cache layout: refs/main -> commit, snapshots/<commit>/files."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "hubert"}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.mark.parametrize("with_hub", [True, False], ids=["huggingface_hub", "manual"])
def test_hf_id_from_local_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_hub: bool
) -> None:
    """An `org/name` id resolves from a local HF cache without network, with or without
    huggingface_hub; `org/name@commit` too; an id absent from the cache raises offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # huggingface_hub itself must not go online
    if not with_hub:
        monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    cache = tmp_path / "hf"
    snapshot = _fake_hf_cache(cache, "someorg/tiny-hubert")
    found = hub.resolve("someorg/tiny-hubert", hf_cache_dir=cache, offline=True)
    assert found.resolve() == snapshot.resolve()
    pinned = hub.resolve(f"someorg/tiny-hubert@{'a' * 40}", hf_cache_dir=cache, offline=True)
    assert pinned.resolve() == snapshot.resolve()
    with pytest.raises(DownloadError, match="someorg/absent"):
        hub.resolve("someorg/absent", hf_cache_dir=cache, offline=True)


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default cache is $XDG_CACHE_HOME/sslspeech, else ~/.cache/sslspeech."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert hub.default_cache_dir() == tmp_path / "sslspeech"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert hub.default_cache_dir() == Path.home() / ".cache" / "sslspeech"


def test_hf_id_recognition() -> None:
    """Ids look like org/name[@rev]; paths with a checkpoint suffix or ./ are not ids."""
    assert hub.is_hf_id("facebook/hubert-base-ls960")
    assert hub.is_hf_id("utter-project/mHuBERT-147@main")
    assert not hub.is_hf_id("checkpoints/model.pt")
    assert not hub.is_hf_id("./facebook/hubert")
    assert not hub.is_hf_id("a/b/c")


def test_from_pretrained_accepts_a_url(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures_dir: Path
) -> None:
    """`HuBERT.from_pretrained(url)` downloads into the default cache ($XDG_CACHE_HOME) once
    and gives the same model as the local file."""
    import shutil

    import torch

    from sslspeech import HuBERT

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    local = fixtures_dir / "hubert" / "fairseq_base_like" / "checkpoint.pt"
    shutil.copy(local, server.root / "hubert.pt")
    model = HuBERT.from_pretrained(server.url("hubert.pt"))
    again = HuBERT.from_pretrained(server.url("hubert.pt"))
    assert server.requests == ["/hubert.pt"]
    assert _leftovers(tmp_path / "xdg" / "sslspeech")[0].name == "hubert.pt"
    reference = HuBERT.from_pretrained(local)
    waveforms = torch.linspace(-1, 1, 4000).sin().unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model(waveforms), reference(waveforms))
        assert torch.equal(again(waveforms), reference(waveforms))


@pytest.mark.parametrize("with_hub", [True, False], ids=["huggingface_hub", "manual"])
def test_from_pretrained_accepts_a_cached_hf_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures_dir: Path, with_hub: bool
) -> None:
    """`HuBERT.from_pretrained("org/name")` reads the snapshot in $HF_HUB_CACHE, offline."""
    import shutil

    import torch

    from sslspeech import HuBERT

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    if not with_hub:
        monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    snapshot = _fake_hf_cache(tmp_path / "hf", "someorg/tiny-hubert")
    folder = fixtures_dir / "hubert" / "hf_base_like" / "model"
    for file in folder.iterdir():
        shutil.copy(file, snapshot / file.name)
    model = HuBERT.from_pretrained("someorg/tiny-hubert")
    reference = HuBERT.from_pretrained(folder)
    waveforms = torch.linspace(-1, 1, 4000).sin().unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model(waveforms), reference(waveforms))
