"""Parse stage, compiled expressions: ``Expr``, the text, AST and file position later stages hold."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._spans import Span
from .ast import Node, name_paths
from .errors import span_at
from .eval import evaluate
from .unparse import unparse


@dataclass(frozen=True)
class NameRef:
    """A name path an expression reads, e.g. ``("steps", "fill_logs", "result", "written_mb")``.

    The path is the longest static one: it stops at an index computed at run time
    (``vars.hosts[vars.i]`` gives ``("vars", "hosts")``, plus ``("vars", "i")``).
    ``span`` is the file position of the path's first character.
    """

    path: tuple[str | int, ...]
    span: Span


@dataclass(frozen=True)
class Expr:
    """A compiled expression: its text, AST and place in the file.

    ``line_indent`` is added to the column of every line after the first (YAML block
    scalars lose their indentation before the text reaches us).
    """

    source: str
    ast: Node
    origin: Span
    line_indent: int = 0

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """The value of the expression with the top-level names in ``scope``.

        Raises:
            EvalError: a missing name or field, a type mismatch, division by zero...
        """
        return evaluate(self.ast, scope)

    def names(self) -> list[NameRef]:
        """Every name path the expression reads, in source order, with its position."""
        return list(self._names)

    @functools.cached_property
    def _names(self) -> tuple[NameRef, ...]:  # lint, plan and run all ask, often
        return tuple(NameRef(path, self.span_at(offset)) for path, offset in name_paths(self.ast))

    def span_at(self, offset: int) -> Span:
        """The file position of character ``offset`` of ``source``."""
        return span_at(self.origin, self.source, offset, self.line_indent)

    def __str__(self) -> str:
        return unparse(self.ast)


def compile_expr(text: str, origin: Span, *, line_indent: int = 0) -> Expr:
    """Compile the expression ``text`` whose first character is at ``origin`` in a file.

    Args:
        text: the expression, e.g. the value of ``when:``.
        origin: file position of ``text[0]``.
        line_indent: added to the column of lines after the first (YAML block scalars).

    Raises:
        ExprError: a syntax error, an unknown function or wrong number of arguments, a bad
            literal regular expression in ``matches()``; positioned inside ``text``.
    """
    from .parse import parse_at  # Lark: only where a scenario is compiled, not where it is run

    return Expr(text, parse_at(text, origin, line_indent), origin, line_indent)
