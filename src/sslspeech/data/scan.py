"""Manifest creation: find audio in a directory tree or an uncompressed tar, read sample counts
from the headers only (in parallel), write the manifest sorted by fileid.

Directories are walked depth-first with each folder's entries ordered so that the walk meets
fileids in sorted order (a folder ``name`` sorts as ``name/``): the output is sorted and
identical for any number of workers, and nothing but the current chunks is held in memory.
A tar's index (member name, offset, size) is read once and sorted in memory.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sslspeech.data.audio import RangeFile, audio_info
from sslspeech.data.manifest import ManifestEntry, write_manifest
from sslspeech.data.parallel import ordered_map
from sslspeech.errors import DataError
from sslspeech.utils.progress import progress

log = logging.getLogger(__name__)

_COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")


@dataclass
class ScanReport:
    """What `create_manifest` did: entries written, files skipped (unreadable header, missing
    file, non-UTF-8 name)."""

    written: int = 0
    unreadable: int = 0


def normalize_extensions(ext: str | Sequence[str]) -> tuple[str, ...]:
    """'.wav' / 'wav,flac' / ['.wav', '.flac'] -> ('.wav', '.flac') (lower case)."""
    parts = ext.split(",") if isinstance(ext, str) else list(ext)
    out = tuple(("." + p.strip().lstrip(".")).lower() for p in parts if p.strip().lstrip("."))
    if not out:
        raise DataError(f"no audio extension given (got {ext!r}); use e.g. --ext .wav")
    return out


def _strip_extension(name: str, extensions: tuple[str, ...]) -> str | None:
    lower = name.lower()
    for extension in extensions:
        if lower.endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)]
    return None


def walk_audio(root: Path, extensions: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(fileid, absolute path) of every audio file under `root`, in sorted fileid order."""
    visited: set[tuple[int, int]] = set()

    def walk(folder: str, prefix: str) -> Iterator[tuple[str, str]]:
        stat = Path(folder).stat()
        if (stat.st_dev, stat.st_ino) in visited:  # a symlink loop
            return
        visited.add((stat.st_dev, stat.st_ino))
        keyed: list[tuple[str, bool, str]] = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir():
                    keyed.append((entry.name + "/", True, entry.path))
                elif entry.is_file():
                    stem = _strip_extension(entry.name, extensions)
                    if stem is not None:
                        keyed.append((stem, False, entry.path))
                elif entry.is_symlink():
                    target = Path(entry.path).readlink()
                    log.warning(
                        "skipped: %s is a symlink to %s, which does not exist", entry.path, target
                    )
        keyed.sort()
        for key, is_dir, path in keyed:
            if is_dir:
                yield from walk(path, prefix + key)
            else:
                yield prefix + key, path

    yield from walk(str(root.absolute()), "")


def check_uncompressed_tar(path: Path) -> None:
    """Raise a DataError telling how to fix it when `path` is a compressed archive."""
    with path.open("rb") as handle:
        head = handle.read(6)
    kind = next((name for magic, name in _COMPRESSED_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and path.name.lower().endswith(_COMPRESSED_SUFFIXES):
        kind = path.suffix.lstrip(".")
    if kind is not None:
        raise DataError(
            f"{path}: {kind}-compressed archive; byte ranges need an uncompressed tar. Extract "
            f"it, or re-pack it uncompressed (e.g. `tar -xf {path.name} && tar -cf out.tar DIR`)"
        )


def tar_members(path: Path, extensions: tuple[str, ...]) -> list[tuple[str, str, int, int]]:
    """(fileid, member name, data offset, size) of the audio members, sorted by fileid."""
    check_uncompressed_tar(path)
    members: list[tuple[str, str, int, int]] = []
    try:
        with tarfile.open(path, mode="r:") as archive:
            for member in archive:
                # tarfile would keep every TarInfo (GBs for millions of members); forget them
                archive.members = []  # type: ignore[attr-defined]
                if not member.isfile():
                    continue
                name = member.name.removeprefix("./")
                stem = _strip_extension(name, extensions)
                if stem is None:
                    continue
                if member.issparse():
                    raise DataError(f"{path}: member {name} is a sparse file; re-pack the tar")
                members.append((stem, name, member.offset_data, member.size))
    except tarfile.TarError as error:
        raise DataError(f"{path}: not a readable uncompressed tar ({error})") from None
    members.sort()
    return members


def _probe_files(chunk: list[tuple[str, str]]) -> list[tuple[ManifestEntry | None, str]]:
    out: list[tuple[ManifestEntry | None, str]] = []
    for fileid, path in chunk:
        try:
            out.append((ManifestEntry(fileid, path, audio_info(path).num_samples), path))
        except DataError as error:
            out.append((None, str(error)))
    return out


def _probe_members(
    chunk: list[tuple[str, str, str, int, int]],
) -> list[tuple[ManifestEntry | None, str]]:
    import soundfile as sf

    out: list[tuple[ManifestEntry | None, str]] = []
    for archive, fileid, name, offset, size in chunk:
        try:
            with sf.SoundFile(RangeFile(archive, offset, size)) as handle:
                frames = handle.frames
            out.append((ManifestEntry(fileid, name, frames, archive, offset, size), name))
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as error:
            out.append((None, f"{archive}[{name}]: unreadable audio header ({error})"))
        except DataError as error:
            out.append((None, str(error)))
    return out


def scan_dataset(
    dataset: str | os.PathLike[str],
    ext: str | Sequence[str] = ".wav",
    *,
    workers: int = 1,
    quiet: bool = False,
    report: ScanReport | None = None,
) -> Iterator[ManifestEntry]:
    """Entries of a directory (recursive) or uncompressed tar, sorted by fileid.

    Files whose header cannot be read are skipped with a warning (counted in `report`); run
    `sslspeech check` on the manifest to decode every file.
    """
    root = Path(dataset)
    extensions = normalize_extensions(ext)
    report = report if report is not None else ScanReport()
    if root.is_dir():
        results = ordered_map(
            _probe_files, walk_audio(root, extensions), workers=workers, chunk_size=256
        )
        total = None
    elif root.is_file():
        archive = str(root.absolute())
        members = tar_members(root, extensions)
        jobs = ((archive, *member) for member in members)
        results = ordered_map(_probe_members, jobs, workers=workers, chunk_size=256)
        total = len(members)
    else:
        raise DataError(f"{root}: no such directory or tar file")
    previous: str | None = None
    for entry, detail in progress(results, total=total, desc="manifest", unit="file", quiet=quiet):
        if entry is None:
            report.unreadable += 1
            log.warning("skipped: %s", detail)
            continue
        if entry.fileid == previous:
            raise DataError(
                f"{root}: two files give fileid {entry.fileid!r} (the second is {detail}); "
                "fileids must be unique: rename one or restrict --ext"
            )
        previous = entry.fileid
        report.written += 1
        yield entry


def create_manifest(
    dataset: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    ext: str | Sequence[str] = ".wav",
    format: str | None = None,
    workers: int = 1,
    quiet: bool = False,
) -> ScanReport:
    """Write the manifest of `dataset` to `output` atomically (see `scan_dataset`)."""
    report = ScanReport()
    root = Path(dataset)
    fmt = format or {".tsv": "tsv", ".jsonl": "jsonl"}.get(Path(output).suffix.lower(), "csv")
    if fmt == "tsv" and not root.is_dir():
        raise DataError(
            f"{root}: fairseq TSV cannot describe tar members; write CSV or JSONL instead"
        )
    entries = scan_dataset(dataset, ext, workers=workers, quiet=quiet, report=report)
    tsv_root = str(root.absolute()) if root.is_dir() else None
    write_manifest(entries, output, fmt, root=tsv_root)
    if report.unreadable:
        log.warning(
            "%d files skipped (unreadable header, missing file or non-UTF-8 name; see the "
            "warnings above)",
            report.unreadable,
        )
    if report.written == 0:
        log.warning("%s: no audio file with extension %s found", dataset, ext)
    return report
