"""Source positions: ``Span``, ``ScenarioError`` and ``Node`` (a YAML value with its place).

No YAML here: a scenario read back from the cache of linted scenarios holds these, and a
run that reads it must not pay for the YAML loader (``_source``) it does not use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ChaosrunError


@dataclass(frozen=True, order=True)
class Span:
    """A 1-based position in a source file."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class ScenarioError(ChaosrunError):
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


class ScenarioErrors(ChaosrunError):
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
    # block scalars: where the text itself starts, and the indentation YAML strips from
    # each of its lines (expressions inside add it back to their columns)
    text_start: Span | None = None
    line_indent: int = 0

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
