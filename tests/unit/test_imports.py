"""The house rules of engine/chaosrun, read from the source (docs/architecture.md says why):
modules import each other without a cycle; data flows forward (the runtime and the planner
never import the linter); the runner reaches targets only through the connection seam, and
asyncssh sits behind it; only ``run/`` (and the test support) is async; no module is over
800 lines; the demo does not import the CLI, the CLI imports the demo only inside
``cmd_demo``, and the core never imports the test support (``chaosrun.testing``), which
only the demo uses.

The graph is read from the source with ``ast``, not by importing: module-level imports
and imports inside functions both count (a function-level import still runs, just later),
imports under ``if TYPE_CHECKING:`` do not (they never run). Importing ``a.b.c`` is an edge
to ``a.b.c`` only: the implicit import of its parent packages is not an edge, or every
package whose ``__init__`` re-exports its submodules would be a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
PACKAGE = "chaosrun"


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` at ``line``; ``lazy`` when inside a function."""

    source: str
    target: str
    line: int
    lazy: bool

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}{', in a function' if self.lazy else ''})"


def find_modules(root: Path, package: str = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Every module of ``package`` under ``root``: dotted name -> (file, is a package)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str], package: str) -> None:
        self.module = module
        self.package_of_module = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.package = package
        self.depth = 0
        self.found: list[Import] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.visit(node.test)
            for child in node.orelse:  # the body never runs
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, target: str, node: ast.stmt) -> None:
        if target == self.module or not (target == self.package or target.startswith(self.package + ".")):
            return
        found = Import(self.module, target, node.lineno, self.depth > 0)
        if found not in self.found:  # `from .x import a, b` is one edge
            self.found.append(found)

    def _known_prefix(self, dotted: str) -> str:
        """The longest prefix of ``dotted`` that is a module (the rest names attributes)."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in self.known:
                return candidate
        return dotted

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(self._known_prefix(alias.name), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package_of_module
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            # `from . import x`: x is a submodule, or a name defined by the package itself
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else self._known_prefix(base), node)


def import_graph(root: Path = ENGINE, package: str = PACKAGE) -> dict[str, list[Import]]:
    """Each module of ``package`` -> the imports of the package's own modules it makes."""
    modules = find_modules(root, package)
    graph: dict[str, list[Import]] = {}
    for name, (path, is_package) in modules.items():
        collector = _Collector(name, is_package, set(modules), package)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        graph[name] = collector.found
    return graph


def find_cycles(graph: dict[str, list[Import]]) -> list[list[Import]]:
    """One cycle for each group of modules that import each other in a ring (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, []):
            if edge.target not in index:
                connect(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_ring(graph, group) for group in groups]


def _ring(graph: dict[str, list[Import]], group: set[str]) -> list[Import]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph.get(node, []):
                if edge.target not in group:
                    continue
                if edge.target == start:
                    return [*paths[node], edge]
                if edge.target not in paths:
                    paths[edge.target] = [*paths[node], edge]
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no ring through {start} in {sorted(group)}")


def _importers_of(graph: dict[str, list[Import]], target: str) -> Iterator[Import]:
    for edges in graph.values():
        for edge in edges:
            if edge.target == target or edge.target.startswith(target + "."):
                yield edge


def _describe(cycles: list[list[Import]]) -> str:
    return "\n".join("  " + "\n  ".join(str(edge) for edge in ring) for ring in cycles)


# -- chaosrun itself ----------------------------------------------------------------------------


def test_chaosrun_modules_import_each_other_without_a_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, f"import cycles among chaosrun's modules:\n{_describe(cycles)}"


def test_the_demo_does_not_import_the_cli() -> None:
    assert [str(e) for e in import_graph()["chaosrun.demo"] if e.target == "chaosrun.cli"] == []


def test_the_cli_imports_the_demo_only_inside_a_function() -> None:
    edges = [e for e in import_graph()["chaosrun.cli"] if e.target == "chaosrun.demo"]
    assert edges and all(e.lazy for e in edges), [str(e) for e in edges]


def test_the_core_does_not_import_the_test_support_only_the_demo_does() -> None:
    importers = {
        e.source
        for e in _importers_of(import_graph(), "chaosrun.testing")
        if not e.source.startswith("chaosrun.testing")
    }
    assert importers == {"chaosrun.demo"}


MAX_LINES = 800


def test_no_module_is_over_800_lines() -> None:
    long = {
        name: lines
        for name, (path, _) in find_modules(ENGINE).items()
        if (lines := path.read_text(encoding="utf-8").count("\n")) > MAX_LINES
    }
    assert long == {}, "split these by job (docs/architecture.md)"


def test_the_runtime_and_the_planner_import_nothing_from_the_linter() -> None:
    offenders = [
        str(e)
        for e in _importers_of(import_graph(), "chaosrun.lint")
        if e.source.startswith("chaosrun.run") or e.source == "chaosrun.plan"
    ]
    assert offenders == []


def test_the_runner_reaches_targets_only_through_the_connection_seam() -> None:
    transports = {"chaosrun.run.ssh", "chaosrun.run.local", "chaosrun.run.bridge"}
    transports |= {f"chaosrun.run.ssh.{m}" for m in ("core", "client", "tunnel")}
    core = ("chaosrun.run.runner", "chaosrun.run.deploy", "chaosrun.run.context", "chaosrun.run.listener")
    graph = import_graph()
    offenders = [str(e) for name in core for e in graph[name] if e.target in transports and not e.lazy]
    assert offenders == [], "the runner gets its transport from RunOptions.connector"


def _external_imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module


def test_asyncssh_is_imported_only_behind_the_connection_seam() -> None:
    importers = {
        name
        for name, (path, _) in find_modules(ENGINE).items()
        if any(m.split(".")[0] == "asyncssh" for m in _external_imports(path))
    }
    outside = {m for m in importers if not m.startswith(("chaosrun.testing", "chaosrun.run.ssh."))}
    assert outside == set(), "only run/ssh/ (and the test servers in testing/) may import asyncssh"
    assert importers & {"chaosrun.run.ssh.core", "chaosrun.run.ssh.client"}


def test_only_the_run_stage_the_api_the_server_and_the_test_support_are_async() -> None:
    offenders = [
        name
        for name, (path, _) in find_modules(ENGINE).items()
        if not name.startswith(("chaosrun.run", "chaosrun.testing", "chaosrun.server"))
        and name != "chaosrun.api"
        and any(isinstance(node, ast.AsyncFunctionDef) for node in ast.walk(ast.parse(path.read_text())))
    ]
    assert offenders == [], "async code belongs in chaosrun/run/ (and the API's and the server's awaitables)"


# -- the graph reader itself ------------------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_function_level_from_dot_import_is_found_and_named(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from .sub.b import thing\n",
            "sub/__init__.py": "",
            "sub/b.py": "def thing():\n    from .. import c\n",
            "c.py": "import pkg.a\n",
        },
    )
    cycles = find_cycles(import_graph(root, "pkg"))
    assert [[str(e) for e in ring] for ring in cycles] == [
        [
            "pkg.a -> pkg.sub.b (line 1)",
            "pkg.sub.b -> pkg.c (line 2, in a function)",
            "pkg.c -> pkg.a (line 1)",
        ]
    ]


def test_type_checking_imports_and_names_from_a_package_are_read_as_such(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "from .a import f\nVERSION = '1'\n",
            "a.py": "from typing import TYPE_CHECKING\nfrom . import VERSION\nif TYPE_CHECKING:\n    from .b import B\n",
            "b.py": "from .a import f\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert [str(e) for e in graph["pkg.a"]] == ["pkg.a -> pkg (line 2)"]  # not pkg.b: TYPE_CHECKING only
    assert find_cycles(graph) == [[graph["pkg"][0], graph["pkg.a"][0]]]  # pkg -> pkg.a -> pkg
