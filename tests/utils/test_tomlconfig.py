"""The typed-TOML engine: dump -> load round trips of every field type, string escaping,
strict keys with did-you-mean and FILE:LINE, command-line values parsed by type."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from sslspeech.errors import ConfigError
from sslspeech.pipeline.recipe import load_recipe, recipe_to_dict
from sslspeech.utils.tomlconfig import (
    build,
    dump_toml,
    file_place,
    format_value,
    key_lines,
    parse_value,
    read_toml,
)

AWKWARD = 'quote " backslash \\ tab \t newline \n return \r bell \x07 del \x7f é 日本'


@dataclass(frozen=True, kw_only=True)
class Inner:
    """A nested table."""

    name: str = "inner"
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True, kw_only=True)
class Every:
    """One field of every type the engine knows."""

    flag: bool
    count: int
    rate: float
    text: str
    path: Path
    choice: Literal["a", "b"]
    maybe: int | None = None
    either: int | str = 3
    pair: tuple[float, float] = (0.5, 1.0)
    grid: list[list[int]] = field(default_factory=list)
    table: dict[str, Any] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


def as_toml_data(value: Any) -> Any:
    """A dataclass as the nested plain mapping the writer takes (None left as None)."""
    if dataclasses.is_dataclass(value):
        return {f.name: as_toml_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    return value


def test_every_field_type_round_trips_through_dump_and_build(tmp_path: Path) -> None:
    """dump_toml -> tomllib -> build gives back an equal dataclass (None, inf, unicode too)."""
    original = Every(
        flag=True,
        count=-7,
        rate=float("inf"),
        text=AWKWARD,
        path=tmp_path / "a b" / 'c"d.csv',
        choice="b",
        maybe=None,
        either="word",
        pair=(0.25, -1e-9),
        grid=[[1, 2], [], [3]],
        table={"run.max_steps": 5, "plain": "x\ny", "nested": [1.5, True]},
        inner=Inner(name=AWKWARD, sizes=(4, 5, 6)),
    )
    text = dump_toml(as_toml_data(original), "header line")
    assert text.startswith("# header line\n")
    assert build(Every, tomllib.loads(text)) == original
    with_value = dataclasses.replace(original, maybe=0, either=12)
    assert build(Every, tomllib.loads(dump_toml(as_toml_data(with_value)))) == with_value


def test_strings_escape_quotes_backslashes_newlines_and_control_characters() -> None:
    """Every awkward character survives, and the written value stays on one line."""
    written = format_value(AWKWARD)
    assert "\n" not in written and "\r" not in written
    assert tomllib.loads(f"v = {written}")["v"] == AWKWARD
    keys = {AWKWARD: 1, "a.b": 2, "bare_key-1": 3}
    assert tomllib.loads(dump_toml({"t": keys}))["t"] == keys
    assert "\nbare_key-1 = 3" in dump_toml({"t": keys})
    assert math.isnan(tomllib.loads(f"v = {format_value(float('nan'))}")["v"])


def test_recipe_strings_with_newlines_round_trip(tmp_path: Path) -> None:
    """The recipe copy in a run directory: a newline in a value no longer breaks the TOML."""
    recipe_path = tmp_path / "recipe.toml"
    recipe_path.write_text(
        'run_dir = "out"\n[corpus]\nsynthetic = true\n[it1]\nconfig = "train.toml"\n'
        'overrides = {"logging.wandb_project" = "two\\nlines \\"quoted\\""}\n'
        "[executor]\npartition = 'a\\b'\n"
    )
    recipe = load_recipe(recipe_path, ["iterations=1"])
    assert recipe.it1.overrides["logging.wandb_project"] == 'two\nlines "quoted"'
    copy = tmp_path / "copy" / "recipe.toml"
    copy.parent.mkdir()
    copy.write_text(dump_toml(recipe_to_dict(recipe)))
    assert load_recipe(copy) == recipe


def test_unknown_keys_name_file_line_and_the_closest_key(tmp_path: Path) -> None:
    """A typo in a nested table points at its line and suggests the field it resembles."""
    path = tmp_path / "every.toml"
    path.write_text(
        "flag = true\ncount = 1\nrate = 1\ntext = ''\npath = 'p'\nchoice = 'a'\n"
        "[inner]\nname = 'x'\nsizez = [1]\n"
    )
    data, lines = read_toml(path)
    with pytest.raises(ConfigError) as error:
        build(Every, data, place=file_place(str(path), lines))
    message = str(error.value)
    assert f"{path}:9: unknown key 'inner.sizez'; did you mean 'inner.sizes'?" in message


def test_value_errors_name_the_line_and_what_was_expected(tmp_path: Path) -> None:
    """Wrong types, wrong Literal values and missing keys each say where and what."""
    path = tmp_path / "every.toml"
    path.write_text("flag = 1\ncount = 1\nrate = 1\ntext = ''\npath = 'p'\nchoice = 'a'\n")
    data, lines = read_toml(path)
    place = file_place(str(path), lines)
    with pytest.raises(ConfigError, match=rf"{path}:1: flag must be true or false; got 1"):
        build(Every, data, place=place)
    data["flag"], data["choice"] = True, "c"
    with pytest.raises(ConfigError, match=rf"{path}:6: choice must be one of \['a', 'b'\]"):
        build(Every, data, place=place)
    del data["choice"]
    with pytest.raises(ConfigError, match=r"missing required key\(s\): choice"):
        build(Every, data, place=place)


def test_unreadable_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    """A missing file and a TOML syntax error name the file."""
    with pytest.raises(ConfigError, match=r"cannot read recipe .*nothing\.toml"):
        read_toml(tmp_path / "nothing.toml", "recipe")
    bad = tmp_path / "bad.toml"
    bad.write_text("a = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        read_toml(bad)


def test_key_lines_knows_tables_keys_and_quoted_keys() -> None:
    lines = key_lines('top = 1\n[a.b]\n# c = 2\nc = 3\n"d.e" = 4\n')
    assert lines == {("", "top"): 1, ("a.b", ""): 2, ("a.b", "c"): 4, ("a.b", "d.e"): 5}


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        ("12", int, 12),
        ("12", float, 12.0),
        ("inf", float, float("inf")),
        ("none", int | None, None),
        ("7", int | None, 7),
        ("true", bool | None, True),
        ("a=b.csv", str, "a=b.csv"),
        ("/x y/z", Path, Path("/x y/z")),
        ("bfloat16", Literal["float32", "bfloat16"], "bfloat16"),
        ("[0.9, 0.95]", tuple[float, float], (0.9, 0.95)),
        ("[[1, 2], [3]]", list[list[int]], [[1, 2], [3]]),
    ],
)
def test_command_line_values_are_parsed_by_the_field_type(
    text: str, hint: Any, expected: Any
) -> None:
    assert parse_value(text, hint, "k") == expected


def test_command_line_value_of_the_wrong_type_says_what_was_expected() -> None:
    with pytest.raises(ConfigError, match=r"command line: k='fast': expected a number"):
        parse_value("fast", float, "k")
    with pytest.raises(ConfigError, match=r"k must have 2 items; got \[1\.0\]"):
        parse_value("[1.0]", tuple[float, float], "k")
