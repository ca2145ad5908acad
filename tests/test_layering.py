"""The architecture as a test: which part of `sslspeech` may import which, and who may read the
launcher's environment variables. Every `import` is parsed (module level, inside functions,
under TYPE_CHECKING) and so are "sslspeech.x.y" strings given to the import machinery.

    part         must not import                               because
    models       data, training, launch, pipeline, commands    models are plain nn.Modules;
                                                               masks come from the collator,
                                                               objectives from training/
    interop      models, training, data, launch, pipeline      readers turn files into plain
                                                               data; models build themselves
                                                               from it (not the catalogue,
                                                               interop.registry: it returns
                                                               models)
    data         models, training                              batches know nothing of models
    features     training, launch                              inference, usable without a run
    units        training, launch                              (same)
    evaluation   training, launch                              (same)
    anything     cli, commands                                 argv lives there (cli may
                                                               import commands, commands each
                                                               other)

Only `launch/` and the distributed resolver (`training/distributed.py`) read `SLURM_*` and
torchrun variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...); everything else receives a
`DistributedEnvironment`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sslspeech"

FORBIDDEN: dict[str, frozenset[str]] = {
    "models": frozenset({"data", "training", "launch", "pipeline", "commands"}),
    "interop": frozenset({"models", "training", "data", "launch", "pipeline"}),
    "data": frozenset({"models", "training"}),
    "features": frozenset({"training", "launch"}),
    "units": frozenset({"training", "launch"}),
    "evaluation": frozenset({"training", "launch"}),
}
"""Part -> parts it must not import (first component under `sslspeech`)."""
ENTRY_POINTS = frozenset({"cli", "commands"})
"""Nobody imports these but `cli` itself (and `commands` one another)."""
ALLOWED: dict[tuple[str, str], str] = {
    ("sslspeech.interop.registry", "models"): "the catalogue of published checkpoints loads "
    "them as models: it sits above both readers and models",
}
"""(module, part) edges the table above allows by name, each with its reason."""

ENV_READERS = ("sslspeech.launch", "sslspeech.training.distributed")
LAUNCHER_VARIABLES = re.compile(
    r"^(SLURM_\w+|RANK|LOCAL_RANK|GROUP_RANK|ROLE_RANK|WORLD_SIZE|LOCAL_WORLD_SIZE|"
    r"MASTER_ADDR|MASTER_PORT|TORCHELASTIC_\w+)$"
)
_MODULE_STRING = re.compile(r"^(sslspeech(?:\.\w+)+)(?::\w+)?$")


def module_name(path: Path) -> str:
    """`sslspeech.a.b` for src/sslspeech/a/b.py (packages: their __init__)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The part a module belongs to (`__main__` is the command line, as `cli`)."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    return "cli" if parts[1] == "__main__" else parts[1]


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module) of every import and every "sslspeech.x" string in `tree`."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _MODULE_STRING.match(node.value)
            if match:
                yield node.lineno, match.group(1)


def forbidden_edges(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import of `source` (the code of `module`) the table forbids."""
    mine = part_of(module)
    problems = []
    for line, target in imported_modules(ast.parse(source), module, is_package):
        if not target.startswith("sslspeech."):
            continue
        theirs = part_of(target)
        if theirs == mine or (module, theirs) in ALLOWED:
            continue
        entry = theirs in ENTRY_POINTS and not (mine == "cli" or mine in ENTRY_POINTS)
        if entry or theirs in FORBIDDEN.get(mine, ()):
            problems.append(f"{module}:{line} imports {target} ({mine} -> {theirs})")
    return sorted(set(problems))


def launcher_variables(source: str, module: str) -> list[str]:
    """Every launcher variable name `source` mentions, unless `module` may read them."""
    if module.startswith(ENV_READERS):
        return []
    return [
        f"{module}:{node.lineno} reads {node.value}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and LAUNCHER_VARIABLES.match(node.value)
    ]


def package_sources() -> Iterator[tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.read_text(encoding="utf-8")


def test_no_part_imports_what_the_table_forbids() -> None:
    """Every module of the package against the rule table."""
    problems = [
        problem
        for path, source in package_sources()
        for problem in forbidden_edges(source, module_name(path), path.name == "__init__.py")
    ]
    assert not problems, "forbidden imports:\n" + "\n".join(problems)


def test_only_the_launchers_and_the_resolver_read_launcher_variables() -> None:
    """No SLURM_* / torchrun variable name outside launch/ and training/distributed.py."""
    problems = [
        problem
        for path, source in package_sources()
        for problem in launcher_variables(source, module_name(path))
    ]
    assert not problems, "launcher variables read outside launch/:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "module", "found"),
    [
        ("def f():\n    from sslspeech.training import trainer\n", "sslspeech.models.x", 1),
        ("from ..data import masking\n", "sslspeech.models.encoder", 1),
        ("from . import encoder\n", "sslspeech.models", 0),
        ("T = {'a': 'sslspeech.training.trainer:Trainer'}\n", "sslspeech.models.x", 1),
        ("import sslspeech.commands.train\n", "sslspeech.pipeline.tasks", 1),
        ("import sslspeech.commands.train\n", "sslspeech.cli", 0),
        ("from sslspeech.commands import common\n", "sslspeech.commands.abx", 0),
        ("from sslspeech.models import registry\n", "sslspeech.interop.registry", 0),
        ("from sslspeech.models import registry\n", "sslspeech.interop.hf", 1),
    ],
)
def test_the_checker_finds_function_level_relative_and_string_imports(
    source: str, module: str, found: int
) -> None:
    """The parser sees imports wherever they are written; the exceptions are the named ones."""
    assert len(forbidden_edges(source, module, is_package=module == "sslspeech.models")) == found


def test_the_checker_finds_launcher_variables() -> None:
    """`os.environ.get("RANK")` and `"SLURM_PROCID" in env` are caught outside launch/."""
    source = 'import os\nr = os.environ.get("RANK")\nok = "SLURM_PROCID" in os.environ\n'
    assert len(launcher_variables(source, "sslspeech.commands.train")) == 2
    assert launcher_variables(source, "sslspeech.launch.slurm") == []
    assert launcher_variables('msg = "RANK is set"\n', "sslspeech.commands.train") == []
