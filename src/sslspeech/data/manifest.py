"""Manifests: the list of utterances of a corpus, read and written as CSV, fairseq TSV or JSONL.

Formats (one reader detects them all, by extension then by content):

- CSV with a header: ``fileid,path,num_samples`` (+ ``archive,byte_offset,byte_size`` for audio
  stored inside an uncompressed tar, + ``units`` as space-separated integers). Columns may come
  in any order; unknown columns are ignored.
- fairseq TSV: the root directory on line 1, then ``relpath<TAB>num_samples`` (+ an optional
  third column of space-separated units). ``fileid`` is ``relpath`` without its extension.
- JSONL: one object per line with the same keys as the CSV columns; ``units`` is a list.

Relative paths (``path``, ``archive``) are resolved against the manifest's directory (TSV: against
its root line). A tar member's ``path`` is its name inside the archive; its bytes are
``archive[byte_offset : byte_offset + byte_size]``.

`read_manifest` holds the manifest in columns (numpy arrays, one flat units array), so millions of
lines stay small; `iter_manifest` streams entries one at a time for single-pass tools.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, overload

import numpy as np

from sslspeech.errors import DataError
from sslspeech.utils.fileio import atomic_open

FORMATS = ("csv", "tsv", "jsonl")
REQUIRED = ("fileid", "path", "num_samples")
ARCHIVE_COLUMNS = ("archive", "byte_offset", "byte_size")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One utterance: a file on disk, or a byte range of an uncompressed tar (`archive`)."""

    fileid: str
    path: str
    num_samples: int
    archive: str | None = None
    byte_offset: int | None = None
    byte_size: int | None = None
    units: tuple[int, ...] | None = None

    @property
    def in_archive(self) -> bool:
        """True when the audio is a byte range of `archive` rather than a file of its own."""
        return self.archive is not None


def detect_format(path: str | os.PathLike[str]) -> str:
    """The manifest format of `path`: from its extension, else from its first line."""
    path = Path(path)
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    if by_extension:
        return by_extension
    try:
        with path.open(encoding="utf-8-sig") as handle:
            first = handle.readline().strip()
    except OSError as error:
        raise DataError(f"{path}: cannot read manifest ({error})") from None
    if first.startswith("{"):
        return "jsonl"
    if "," in first and "fileid" in first:
        return "csv"
    return "tsv"


def _resolve(base: str, value: str) -> str:
    """`value` as a path: absolute ones unchanged, relative ones joined to `base`."""
    # string functions, not pathlib: this runs once per line of multi-million-line manifests
    return value if os.path.isabs(value) else os.path.join(base, value)  # noqa: PTH117, PTH118


def _parse_int(value: Any, where: str, column: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{where}: {column} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: {column} must be an integer, got {value!r}") from None


def _parse_units(value: Any, where: str) -> tuple[int, ...]:
    try:
        if isinstance(value, str):
            return tuple(int(token) for token in value.split())
        if isinstance(value, list) and not any(isinstance(v, bool | float) for v in value):
            return tuple(int(v) for v in value)
    except ValueError:
        pass
    raise DataError(f"{where}: units must be a list of integers, got {str(value)[:60]!r}")


def _entry_from_record(record: dict[str, Any], base: str, name: str, line: int) -> ManifestEntry:
    """Validate one CSV/JSONL record and turn it into an entry."""
    try:
        return _fast_entry(record, base)
    except (KeyError, ValueError, TypeError):
        pass  # something is off: the slow path below names it
    where = f"{name}:{line}"
    missing = [key for key in REQUIRED if record.get(key) in (None, "")]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)} (a manifest needs {REQUIRED})")
    num_samples = _parse_int(record["num_samples"], where, "num_samples")
    if num_samples < 0:
        raise DataError(f"{where}: num_samples must be >= 0, got {num_samples}")
    archive = record.get("archive") or None
    offset = size = None
    if archive is not None:
        for key in ("byte_offset", "byte_size"):
            if record.get(key) in (None, ""):
                raise DataError(f"{where}: an archive member needs {key}")
        offset = _parse_int(record["byte_offset"], where, "byte_offset")
        size = _parse_int(record["byte_size"], where, "byte_size")
        if offset < 0 or size < 0:
            raise DataError(
                f"{where}: byte_offset and byte_size must be >= 0, got {offset} and {size}; "
                "re-run `sslspeech manifest` on the archive"
            )
        archive = _resolve(base, str(archive))
        path = str(record["path"])
    else:
        path = _resolve(base, str(record["path"]))
    units = record.get("units")
    return ManifestEntry(
        fileid=str(record["fileid"]),
        path=path,
        num_samples=num_samples,
        archive=archive,
        byte_offset=offset,
        byte_size=size,
        units=None if units is None else _parse_units(units, where),
    )


def _fast_entry(record: dict[str, Any], base: str) -> ManifestEntry:
    """The common case (a file, no units, clean values); raises on anything unusual."""
    num_samples = record["num_samples"]
    if (len(record) > 3 and (record.get("archive") or record.get("units") is not None)) or not (
        type(num_samples) is int or (type(num_samples) is str and num_samples.isdigit())
    ):
        raise ValueError("not the plain case")
    fileid, path = record["fileid"], record["path"]
    if not fileid or not path or not isinstance(fileid, str) or not isinstance(path, str):
        raise ValueError("not the plain case")
    return ManifestEntry(fileid, _resolve(base, path), int(num_samples))


def _iter_csv(handle: IO[str], name: str, base: str) -> Iterator[ManifestEntry]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        return
    header = [column.strip() for column in header]
    missing = [key for key in REQUIRED if key not in header]
    if missing:
        raise DataError(
            f"{name}:1: header lacks {', '.join(missing)}; expected a header line like "
            f"'fileid,path,num_samples' (got {','.join(header)!r})"
        )
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            where = f"{name}:{reader.line_num}"
            raise DataError(f"{where}: {len(row)} columns, the header has {len(header)}")
        yield _entry_from_record(dict(zip(header, row, strict=True)), base, name, reader.line_num)


def _iter_tsv(handle: IO[str], name: str) -> Iterator[ManifestEntry]:
    root_line = handle.readline().rstrip("\r\n")
    if not root_line:
        return
    if "\t" in root_line:
        raise DataError(f"{name}:1: a fairseq TSV starts with the root directory, got a tab line")
    root = _resolve(str(Path(name).parent), root_line)
    for number, line in enumerate(handle, start=2):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"{name}:{number}"
        fields = line.split("\t")
        if len(fields) not in (2, 3):
            raise DataError(f"{where}: expected 'relpath<TAB>num_samples[<TAB>units]'")
        num_samples = _parse_int(fields[1], where, "num_samples")
        if num_samples < 0:
            raise DataError(f"{where}: num_samples must be >= 0, got {num_samples}")
        relpath = fields[0]
        stem = relpath[: -len(Path(relpath).suffix)] if Path(relpath).suffix else relpath
        yield ManifestEntry(
            fileid=stem,
            path=_resolve(root, relpath),
            num_samples=num_samples,
            units=_parse_units(fields[2], where) if len(fields) == 3 else None,
        )


def _iter_jsonl(handle: IO[str], name: str, base: str) -> Iterator[ManifestEntry]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise DataError(f"{where}: not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object per line")
        yield _entry_from_record(record, base, name, number)


def iter_manifest(
    path: str | os.PathLike[str], format: str | None = None, *, check_duplicates: bool = True
) -> Iterator[ManifestEntry]:
    """Stream the entries of a manifest; errors name the file and line."""
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown manifest format {fmt!r}; use one of {FORMATS}")
    name, base = str(path), str(path.parent)
    seen: set[str] = set()
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:  # a BOM is skipped
            if fmt == "csv":
                entries = _iter_csv(handle, name, base)
            elif fmt == "tsv":
                entries = _iter_tsv(handle, name)
            else:
                entries = _iter_jsonl(handle, name, base)
            for line_index, entry in enumerate(entries):
                if check_duplicates:
                    if entry.fileid in seen:
                        raise DataError(
                            f"{name}: duplicate fileid {entry.fileid!r} (entry {line_index + 1}); "
                            "fileids must be unique"
                        )
                    seen.add(entry.fileid)
                yield entry
    except OSError as error:
        raise DataError(f"{path}: cannot read manifest ({error})") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text manifest ({error})") from None


def _normalize_index(index: int, size: int, what: str = "index") -> int:
    """`index` in [0, size), counting negative ones from the end; IndexError outside."""
    index = int(index)
    if index < 0:
        index += size
    if not 0 <= index < size:
        raise IndexError(f"{what} {index} out of range (size {size})")
    return index


class StringColumn(Sequence[str]):
    """Strings packed in one UTF-8 byte array + offsets: compact, and no per-string Python
    objects for forked DataLoader workers to copy-on-write."""

    def __init__(self, data: np.ndarray, bounds: np.ndarray) -> None:
        self._data, self._bounds = data, bounds

    def __len__(self) -> int:
        return len(self._bounds) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = _normalize_index(index, len(self))
        begin, end = self._bounds[index], self._bounds[index + 1]
        return self._data[begin:end].tobytes().decode("utf-8")


class _ColumnBuilder:
    """Accumulates entries column by column while reading."""

    def __init__(self) -> None:
        self.fileids = bytearray()
        self.paths = bytearray()
        self.fileid_bounds = [0]
        self.path_bounds = [0]
        self.sizes: list[int] = []
        self.archive_index: dict[str, int] = {}
        self.archive_ids: list[int] = []
        self.offsets: list[int] = []
        self.byte_sizes: list[int] = []
        self.units: list[int] = []
        self.unit_bounds = [0]
        self.has_units: list[bool] = []

    def add(self, entry: ManifestEntry) -> None:
        self.fileids += entry.fileid.encode("utf-8")
        self.fileid_bounds.append(len(self.fileids))
        self.paths += entry.path.encode("utf-8")
        self.path_bounds.append(len(self.paths))
        self.sizes.append(entry.num_samples)
        archive = entry.archive
        self.archive_ids.append(
            -1
            if archive is None
            else self.archive_index.setdefault(archive, len(self.archive_index))
        )
        self.offsets.append(-1 if entry.byte_offset is None else entry.byte_offset)
        self.byte_sizes.append(-1 if entry.byte_size is None else entry.byte_size)
        self.has_units.append(entry.units is not None)
        if entry.units:
            self.units.extend(entry.units)
        self.unit_bounds.append(len(self.units))


class Manifest(Sequence[ManifestEntry]):
    """An in-memory manifest stored by columns (numpy arrays and packed strings); indexing
    returns `ManifestEntry` objects. `fileids` and `paths` are string sequences,
    `num_samples` an int64 array."""

    def __init__(self, entries: Iterable[ManifestEntry], source: str | None = None) -> None:
        self.source = source
        columns = _ColumnBuilder()
        seen: set[str] = set()
        for entry in entries:
            if entry.fileid in seen:
                raise DataError(f"{source or 'manifest'}: duplicate fileid {entry.fileid!r}")
            seen.add(entry.fileid)
            columns.add(entry)
        del seen

        def pack(data: bytearray, bounds: list[int]) -> StringColumn:
            return StringColumn(np.frombuffer(bytes(data), np.uint8), np.asarray(bounds, np.int64))

        self.fileids = pack(columns.fileids, columns.fileid_bounds)
        self.paths = pack(columns.paths, columns.path_bounds)
        self.num_samples = np.asarray(columns.sizes, dtype=np.int64)
        self._archives = list(columns.archive_index)
        self._archive_ids = np.asarray(columns.archive_ids, dtype=np.int32)
        self._offsets = np.asarray(columns.offsets, dtype=np.int64)
        self._byte_sizes = np.asarray(columns.byte_sizes, dtype=np.int64)
        self._has_units = np.asarray(columns.has_units, dtype=bool)
        self._unit_bounds = np.asarray(columns.unit_bounds, dtype=np.int64)
        self._units = np.asarray(columns.units, dtype=np.int64)
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.num_samples)

    @overload
    def __getitem__(self, index: int) -> ManifestEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[ManifestEntry]: ...
    def __getitem__(self, index: int | slice) -> ManifestEntry | list[ManifestEntry]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = _normalize_index(index, len(self), "manifest index")
        archive_id = int(self._archive_ids[index])
        in_archive = archive_id >= 0
        units = self.units_array(index)
        return ManifestEntry(
            fileid=self.fileids[index],
            path=self.paths[index],
            num_samples=int(self.num_samples[index]),
            archive=self._archives[archive_id] if in_archive else None,
            byte_offset=int(self._offsets[index]) if in_archive else None,
            byte_size=int(self._byte_sizes[index]) if in_archive else None,
            units=None if units is None else tuple(units.tolist()),
        )

    @property
    def has_units(self) -> bool:
        """True when every entry has a units column."""
        return bool(len(self)) and bool(self._has_units.all())

    def units_array(self, index: int) -> np.ndarray | None:
        """The units of entry `index` as an int64 array view (None when it has none)."""
        if not self._has_units[index]:
            return None
        return self._units[self._unit_bounds[index] : self._unit_bounds[index + 1]]

    def index_of(self, fileid: str) -> int:
        """Position of `fileid` (a lookup table is built on first use); DataError if absent."""
        if self._index is None:
            self._index = {name: i for i, name in enumerate(self.fileids)}
        try:
            return self._index[fileid]
        except KeyError:
            name = self.source or "manifest"
            raise DataError(f"{name}: no entry with fileid {fileid!r}") from None

    def __contains__(self, item: object) -> bool:
        fileid = item.fileid if isinstance(item, ManifestEntry) else item
        if not isinstance(fileid, str):
            return False
        try:
            self.index_of(fileid)
        except DataError:
            return False
        return True


def read_manifest(path: str | os.PathLike[str], format: str | None = None) -> Manifest:
    """Read a CSV, fairseq TSV or JSONL manifest (format detected unless given)."""
    return Manifest(iter_manifest(path, format, check_duplicates=False), source=str(path))


def require_entries(manifest: Manifest) -> Manifest:
    """`manifest`, or a DataError when it lists no utterance (a 0-byte or header-only file)."""
    if not len(manifest):
        raise no_entries_error(manifest.source or "manifest")
    return manifest


def no_entries_error(source: str | os.PathLike[str]) -> DataError:
    """The error for a manifest without entries."""
    return DataError(
        f"{source}: the manifest lists no utterances (an empty file or a header only); make "
        "one with `sslspeech manifest AUDIO_DIR_OR_TAR OUT.csv`"
    )


def _csv_line(values: Sequence[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _format_entries(entries: Iterable[ManifestEntry], fmt: str, root: str | None) -> Iterator[str]:
    """The lines of a manifest; the first entry decides optional columns for CSV."""
    iterator = iter(entries)
    first = next(iterator, None)
    if fmt == "tsv":
        yield f"{root}\n"
    if first is None:
        if fmt == "csv":
            yield ",".join(REQUIRED) + "\n"
        return
    archives = first.archive is not None
    with_units = first.units is not None
    if fmt == "csv":
        header = [
            *REQUIRED,
            *(ARCHIVE_COLUMNS if archives else ()),
            *(("units",) if with_units else ()),
        ]
        yield ",".join(header) + "\n"
    for number, entry in enumerate(_chain(first, iterator)):
        if (entry.archive is not None) != archives or (entry.units is not None) != with_units:
            raise DataError(
                f"entry {number} ({entry.fileid!r}): every entry must have the same optional "
                "fields (archive columns, units) as the first one"
            )
        yield _format_entry(entry, fmt, root)


def _chain(first: ManifestEntry, rest: Iterator[ManifestEntry]) -> Iterator[ManifestEntry]:
    yield first
    yield from rest


def _format_entry(entry: ManifestEntry, fmt: str, root: str | None) -> str:
    units = None if entry.units is None else " ".join(map(str, entry.units))
    if fmt == "tsv":
        if entry.archive is not None:
            raise DataError(
                f"{entry.fileid!r} is a tar member; fairseq TSV cannot hold archive members, "
                "write CSV or JSONL instead"
            )
        relpath = os.path.relpath(entry.path, root) if root else entry.path
        return (
            "\t".join([relpath, str(entry.num_samples), *([units] if units is not None else [])])
            + "\n"
        )
    if fmt == "jsonl":
        record: dict[str, Any] = {
            "fileid": entry.fileid,
            "path": entry.path,
            "num_samples": entry.num_samples,
        }
        if entry.archive is not None:
            record.update(
                archive=entry.archive, byte_offset=entry.byte_offset, byte_size=entry.byte_size
            )
        if entry.units is not None:
            record["units"] = list(entry.units)
        return json.dumps(record, ensure_ascii=False) + "\n"
    values: list[object] = [entry.fileid, entry.path, entry.num_samples]
    if entry.archive is not None:
        values += [entry.archive, entry.byte_offset, entry.byte_size]
    if units is not None:
        values.append(units)
    return _csv_line(values)


def write_manifest(
    entries: Iterable[ManifestEntry],
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
) -> int:
    """Write entries atomically in `format` (default: from the extension, else CSV); returns count.

    Entries are written in the given order and may be a stream. TSV needs a root directory:
    `root`, else the common parent of every path (then `entries` must be a sequence).
    """
    path = Path(path)
    fmt = format or _EXTENSIONS.get(path.suffix.lower(), "csv")
    if fmt not in FORMATS:
        raise DataError(f"unknown manifest format {fmt!r}; use one of {FORMATS}")
    root_text: str | None = None
    if fmt == "tsv":
        if root is None:
            if not isinstance(entries, Sequence):
                entries = list(entries)
            parents = [str(Path(e.path).absolute().parent) for e in entries]
            root = os.path.commonpath(parents) if parents else Path.cwd()
        root_text = str(Path(root).absolute())
    count = 0
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        for line in _format_entries(entries, fmt, root_text):
            handle.write(line)
            count += 1
    return count - (1 if fmt in ("csv", "tsv") else 0)
