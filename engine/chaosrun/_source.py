"""Source positions: Span, ScenarioError, and a YAML loader that keeps node positions.

YAML marks are 0-based; everything else in chaosrun is 1-based. The conversion happens
here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass(frozen=True, order=True)
class Span:
    """A 1-based position in a source file."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def shifted(self, line_offset: int, col: int) -> Span:
        """A position inside this node: ``line_offset`` lines down, at column ``col``."""
        return Span(self.file, self.line + line_offset, col)


class ScenarioError(Exception):
    """A problem in a scenario or inventory file, at a known position.

    ``str(err)`` is ``"file:line:col: message"``, the format lint prints.
    """

    def __init__(self, message: str, span: Span, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.span}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.span.file, self.span.line, self.span.col, self.message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.span.file,
            "line": self.span.line,
            "col": self.span.col,
            "message": self.message,
            "hint": self.hint,
        }


class ScenarioErrors(Exception):
    """Every error found in one pass, sorted by position."""

    def __init__(self, errors: Iterable[ScenarioError]) -> None:
        unique = {e.sort_key(): e for e in errors}
        self.errors = [unique[k] for k in sorted(unique)]
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class Node:
    """A YAML value with its position; ``value`` holds plain Python data of Nodes.

    Mappings are ``dict[str, Node]`` (keys keep their own spans in ``key_spans``),
    sequences ``list[Node]``, scalars ``str | int | float | bool | None``.
    ``text`` is the scalar exactly as written (for strings: the source style), used to
    place errors inside expressions.
    """

    value: Any
    span: Span
    end: Span
    key_spans: dict[str, Span] = field(default_factory=dict)
    style: str | None = None  # YAML scalar style: None (plain), "'", '"', "|", ">"

    def plain(self) -> Any:
        """The value as plain Python data, positions dropped."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value

    def at(self, *path: str | int) -> Node | None:
        """The node at ``path`` below this one, or None."""
        node: Node | None = self
        for key in path:
            if node is None:
                return None
            if isinstance(key, int) and isinstance(node.value, list):
                node = node.value[key] if 0 <= key < len(node.value) else None
            elif isinstance(key, str) and isinstance(node.value, dict):
                node = node.value.get(key)
            else:
                return None
        return node

    def span_of(self, path: Iterable[str | int]) -> Span:
        """The span of the deepest node that exists along ``path`` (for schema errors)."""
        node = self
        for key in path:
            child = node.at(key)
            if child is None:
                if isinstance(key, str) and key in node.key_spans:
                    return node.key_spans[key]
                break
            node = child
        return node.span


def _span(file: str, mark: yaml.Mark) -> Span:
    return Span(file, mark.line + 1, mark.column + 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds Nodes and rejects duplicate keys."""


def load_yaml(text: str, file: str) -> Node:
    """Parse YAML text into a Node tree.

    Raises:
        ScenarioErrors: invalid YAML, several documents, or duplicate keys (each
            duplicate points at both occurrences).
    """
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        span = _span(file, mark) if mark else Span(file, 1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" {exc.context}" if exc.context else ""
        raise ScenarioErrors([ScenarioError(f"invalid YAML: {problem}{context}", span)]) from None
    except yaml.YAMLError as exc:
        raise ScenarioErrors([ScenarioError(f"invalid YAML: {exc}", Span(file, 1, 1))]) from None
    if root is None:
        return Node({}, Span(file, 1, 1), Span(file, 1, 1))
    errors: list[ScenarioError] = []
    constructor = _Loader("")
    node = _convert(root, file, constructor, errors)
    if errors:
        raise ScenarioErrors(errors)
    return node


def _convert(
    node: yaml.Node, file: str, constructor: yaml.SafeLoader, errors: list[ScenarioError]
) -> Node:
    span, end = _span(file, node.start_mark), _span(file, node.end_mark)
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        out: dict[str, Node] = {}
        key_spans: dict[str, Span] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            key_span = _span(file, key_node.start_mark)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                errors.append(
                    ScenarioError(
                        f"duplicate key {key!r} (first defined at line {key_spans[key].line})",
                        key_span,
                    )
                )
                errors.append(
                    ScenarioError(
                        f"duplicate key {key!r} (defined again at line {key_span.line})",
                        key_spans[key],
                    )
                )
                continue
            key_spans[key] = key_span
            out[key] = _convert(value_node, file, constructor, errors)
        return Node(out, span, end, key_spans)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(v, file, constructor, errors) for v in node.value], span, end)
    assert isinstance(node, yaml.ScalarNode)
    value = constructor.construct_object(node, deep=True)
    if not isinstance(value, str | int | float | bool | type(None)):
        value = node.value  # dates and other YAML types stay as written
    return Node(value, span, end, style=node.style)
