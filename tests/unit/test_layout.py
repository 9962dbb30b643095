"""The house rules of engine/chaosrun, checked on the source (docs/architecture.md says why):
modules stay small, data flows forward (the runtime and the planner never import the
linter), only ``run/`` (and the test support in ``testing/``) is async, and asyncssh sits
behind the connection seam."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "engine" / "chaosrun"
MAX_LINES = 800


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join(["chaosrun", *parts]), path


def imported(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (module level and inside functions), absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            found.add(root)
            found.update(f"{root}.{alias.name}" for alias in node.names)
    return found


ALL = dict(modules())


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_module_is_over_800_lines(name: str) -> None:
    lines = ALL[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by job (docs/architecture.md)"


def test_the_runtime_and_the_planner_import_nothing_from_the_linter() -> None:
    offenders = [
        name
        for name, path in ALL.items()
        if (name.startswith("chaosrun.run") or name == "chaosrun.plan")
        and any(m == "chaosrun.lint" or m.startswith("chaosrun.lint.") for m in imported(name, path))
    ]
    assert offenders == []


def test_asyncssh_is_imported_only_behind_the_connection_seam() -> None:
    allowed = {"chaosrun.run.ssh"}
    offenders = [
        name
        for name, path in ALL.items()
        if any(m.split(".")[0] == "asyncssh" for m in imported(name, path))
        and name not in allowed
        and not name.startswith("chaosrun.testing")
    ]
    assert offenders == [], "only run/ssh.py (and the test servers in testing/) may import asyncssh"


def test_only_the_run_stage_and_test_support_are_async() -> None:
    offenders = []
    for name, path in ALL.items():
        if name.startswith(("chaosrun.run", "chaosrun.testing")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.AsyncFunctionDef) for node in ast.walk(tree)):
            offenders.append(name)
    assert offenders == [], "async code belongs in chaosrun/run/"


def test_the_runner_reaches_targets_only_through_the_connection_seam() -> None:
    transports = {"chaosrun.run.ssh", "chaosrun.run.local", "chaosrun.run.bridge"}
    for name in ("chaosrun.run.runner", "chaosrun.run.deploy", "chaosrun.run.context", "chaosrun.run.listener"):
        module_level = {
            m
            for node in ast.parse(ALL[name].read_text(encoding="utf-8")).body
            if isinstance(node, ast.ImportFrom | ast.Import)
            for m in imported_from_node(name, node)
        }
        assert not module_level & transports, f"{name} imports a transport: {module_level & transports}"


def imported_from_node(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = name.rpartition(".")[0].split(".")
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        root = ".".join(base + ([node.module] if node.module else []))
    else:
        root = node.module or ""
    return {root} | {f"{root}.{alias.name}" for alias in node.names}
