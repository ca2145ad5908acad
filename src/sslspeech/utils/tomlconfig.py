"""Typed TOML: tables become frozen dataclasses, strictly (unknown keys are errors with the
closest valid key, values are checked against the field types, errors name FILE:LINE), values
given on a command line are parsed by the field's type, and mappings are written back as TOML.

Types understood: bool, int, float (ints accepted), str, Path (relative to a base folder),
Literal, `X | None` and other unions, tuple (fixed or `...`), list, dict, Any, and nested
dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from sslspeech.errors import ConfigError

Lines = Mapping[tuple[str, str], int]
"""(table, key) -> line number; top-level keys have table "", a table header has key ""."""
Place = Callable[[str], str]
"""Dotted key -> where its value came from ("file.toml:12", "command line")."""

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# ----------------------------------------------------------------------------- reading


def read_toml(
    path: str | Path, what: str = "config"
) -> tuple[dict[str, Any], dict[tuple[str, str], int]]:
    """The parsed file and its key lines; a missing or invalid file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from None
    try:
        return tomllib.loads(text), key_lines(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


def key_lines(text: str) -> dict[tuple[str, str], int]:
    """Where each key of a simple TOML file is: (table, key) -> line number."""
    found: dict[tuple[str, str], int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and "]" in stripped:
            table = stripped.strip("[").split("]", 1)[0].strip()
            found.setdefault((table, ""), number)
        elif "=" in stripped and not stripped.startswith("#"):
            found.setdefault((table, stripped.split("=", 1)[0].strip().strip("\"'")), number)
    return found


def file_place(source: str, lines: Lines) -> Place:
    """`Place` of keys read from `source`: "source:LINE" where the line is known."""

    def place(dotted: str) -> str:
        table, _, key = dotted.rpartition(".")
        line = lines.get((table, key)) or lines.get((dotted, ""))
        return f"{source}:{line}" if line else source

    return place


# ----------------------------------------------------------------------------- suggestions


def suggest(key: str, valid: Iterable[str], prefix: str = "") -> str:
    """ "; did you mean 'X'?" for the closest valid key (`prefix.X` when given), else ""."""
    matches = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    if not matches:
        return ""
    match = f"{prefix}.{matches[0]}" if prefix else matches[0]
    return f"; did you mean {match!r}?"


def dotted(where: str, key: str) -> str:
    """`where.key`, or `key` at the top level."""
    return f"{where}.{key}" if where else key


# ----------------------------------------------------------------------------- dataclasses


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def required_fields(cls: type) -> list[str]:
    """Fields of dataclass `cls` without a default."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def build(
    cls: type,
    table: Any,
    *,
    where: str = "",
    place: Place = lambda key: "config",
    base: Path | None = None,
) -> Any:
    """Dataclass `cls` from a TOML table, strictly: unknown keys (with the closest valid one),
    wrong types and missing required keys are errors; `__post_init__` errors get the place."""
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"{place(where)}: [{where or 'top level'}] must be a table; got {table!r}"
        )
    hints = field_types(cls)
    unknown = [key for key in table if key not in hints]
    if unknown:
        raise ConfigError(
            "\n".join(
                f"{place(dotted(where, key))}: unknown key {dotted(where, key)!r}"
                + suggest(key, hints, prefix=where)
                + f" (valid: {', '.join(hints)})"
                for key in unknown
            )
        )
    values = {
        key: coerce(value, hints[key], dotted(where, key), place, base=base)
        for key, value in table.items()
    }
    missing = [dotted(where, name) for name in required_fields(cls) if name not in values]
    if missing:
        raise ConfigError(f"{place(where)}: missing required key(s): {', '.join(missing)}")
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"{place(where)}: {error}") from None


# ----------------------------------------------------------------------------- typed values


def coerce(value: Any, hint: Any, key: str, place: str | Place, *, base: Path | None = None) -> Any:
    """`value` of `key` checked against type `hint`: ints become floats, lists tuples, strings
    Paths (relative ones under `base`), tables dataclasses. `place` says where the value came
    from (or maps each dotted key to that, for nested tables)."""
    options = union_members(hint)
    if len(options) > 1:
        if value is None and type(None) in options:
            return None
        others = [option for option in options if option is not type(None)]
        if len(others) == 1:
            return coerce(value, others[0], key, place, base=base)
        for option in others:
            try:
                return coerce(value, option, key, place, base=base)
            except ConfigError:
                continue
        raise _type_error(value, hint, key, _at(place, key))
    return _coerce_single(value, hint, key, place, base)


def _at(place: str | Place, key: str) -> str:
    return place(key) if callable(place) else place


def union_members(hint: Any) -> tuple[Any, ...]:
    """The members of a union type, else `(hint,)`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    bool: lambda v: v if isinstance(v, bool) else None,
    int: lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
    float: lambda v: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None,
    str: lambda v: v if isinstance(v, str) else None,
}


def _coerce_single(value: Any, hint: Any, key: str, place: str | Place, base: Path | None) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any or (hint is type(None) and value is None):
        return value
    if dataclasses.is_dataclass(hint):
        places = place if callable(place) else lambda _: place
        return build(hint, value, where=key, place=places, base=base)  # type: ignore[arg-type]
    if callable(place):
        place = place(key)
    if origin is Literal:
        if value in hint.__args__:
            return value
        raise ConfigError(
            f"{place}: {key} must be one of {list(hint.__args__)}; got {value!r}"
            + suggest(str(value), [str(a) for a in hint.__args__])
        )
    if origin in (tuple, list):
        return _coerce_sequence(value, hint, key, place, base)
    converted = _coerce_leaf(value, hint, base)
    if converted is None:
        raise _type_error(value, hint, key, place)
    return converted


def _coerce_leaf(value: Any, hint: Any, base: Path | None) -> Any:
    """A table, path or scalar of type `hint`, else None."""
    if typing.get_origin(hint) is dict or hint is dict:
        return dict(value) if isinstance(value, Mapping) else None
    if hint is Path:
        if not isinstance(value, str | Path):
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() or base is None else (base / path).resolve()
    return _SCALARS[hint](value) if hint in _SCALARS else None


def _coerce_sequence(value: Any, hint: Any, key: str, place: str, base: Path | None) -> Any:
    if not isinstance(value, list | tuple):
        raise _type_error(value, hint, key, place)
    args = typing.get_args(hint) or (Any, ...)
    if typing.get_origin(hint) is list or args[-1] is Ellipsis:
        items = [coerce(v, args[0], f"{key}[{i}]", place, base=base) for i, v in enumerate(value)]
        return items if typing.get_origin(hint) is list else tuple(items)
    if len(args) != len(value):
        raise ConfigError(f"{place}: {key} must have {len(args)} items; got {list(value)!r}")
    return tuple(
        coerce(item, arg, f"{key}[{i}]", place, base=base)
        for i, (arg, item) in enumerate(zip(args, value, strict=True))
    )


def _type_error(value: Any, hint: Any, key: str, place: str) -> ConfigError:
    return ConfigError(f"{place}: {key} must be {type_name(hint)}; got {value!r}")


def type_name(hint: Any) -> str:
    """What a value of type `hint` is, in words ("an integer", "a list like [1, 1]")."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is type(None):
        return "none"
    if hint is Path:
        return "a path"
    options = union_members(hint)
    if len(options) > 1:
        return " or ".join(type_name(option) for option in options)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return f"one of {list(hint.__args__)}"
    if origin in (tuple, list):
        return f"a list like {_example(hint)}"
    if origin is dict or hint is dict or dataclasses.is_dataclass(hint):
        return "a table"
    return getattr(hint, "__name__", str(hint))


def _example(hint: Any) -> str:
    args = typing.get_args(hint)
    samples = {int: "1", float: "0.5", str: '"a"', bool: "true"}
    if typing.get_origin(hint) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return "[" + ", ".join(samples.get(a, "…") for a in args) + "]"
    inner = args[0] if args else Any
    item = _example(inner) if typing.get_origin(inner) in (tuple, list) else samples.get(inner, "…")
    return f"[{item}, …]"


# ----------------------------------------------------------------------------- command line


def split_override(
    item: str, shape: str = "KEY=VALUE", example: str = "optim.lr=1e-4"
) -> tuple[str, str]:
    """`KEY=VALUE` -> (KEY, VALUE text), both stripped."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like {shape}, e.g. {example}")
    return key.strip(), value.strip()


def parse_value(text: str, hint: Any, key: str, place: str = "command line") -> Any:
    """A command-line value parsed by the field's type (strings need no quotes; `none` is None)."""
    options = union_members(hint)
    if type(None) in options and text.lower() in ("none", "null"):
        return None
    if _accepts_plain_string(options) and not text.startswith(("[", '"', "'")):
        return coerce(text, hint, key, place)
    if bool in options and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{place}: {key}={text!r}: expected {type_name(hint)}") from None
    return coerce(value, hint, key, place)


def _accepts_plain_string(options: Sequence[Any]) -> bool:
    return any(
        option in (str, Path)
        or (
            typing.get_origin(option) is Literal
            and all(isinstance(a, str) for a in option.__args__)
        )
        for option in options
    )


# ----------------------------------------------------------------------------- writing


def format_value(value: Any) -> str:
    """One TOML value: bool, int, float (nan, inf included), string, Path, list/tuple, table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{format_key(k)} = {format_value(v)}" for k, v in value.items()) + "}"
        )
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def format_key(key: str) -> str:
    """A bare key when TOML allows one, else a quoted key."""
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(value: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def dump_toml(data: Mapping[str, Any], header: str = "") -> str:
    """TOML text of nested mappings: scalars and lists as `key = value`, mappings as tables;
    None values (TOML has no null) become `# key = none` comments."""
    lines = [f"# {header}"] if header else []
    _dump_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    values = {k: v for k, v in data.items() if k not in tables}
    if path and (values or not tables):
        lines.append(f"\n[{'.'.join(format_key(part) for part in path)}]")
    for key, value in values.items():
        if value is None:
            lines.append(f"# {format_key(key)} = none")
        else:
            lines.append(f"{format_key(key)} = {format_value(value)}")
    for key, value in tables.items():
        _dump_table(value, [*path, key], lines)
