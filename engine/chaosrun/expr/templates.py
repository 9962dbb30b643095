"""Parse stage, templates: ``${...}`` in string values, and the one walker over ``with:`` values.

A ``with:`` value, as parse leaves it, is plain data (dicts, lists, scalars) with a
Template wherever a string held ``${...}``. Lint, plan and run reach the templates in
such values only through iter_leaves, iter_templates, map_templates and render_static,
so that what counts as a container (a mapping, a list) is decided here, once.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._spans import Span
from .compiled import Expr, NameRef, compile_expr
from .errors import ExprError, span_at
from .eval import render_value


def has_interpolation(text: str) -> bool:
    """Whether ``text`` needs compile_template: it holds ``${`` (or the escape ``$${``)."""
    return "${" in text


def _closing_brace(text: str, start: int, origin: Span, line_indent: int) -> int:
    """Index of the ``}`` ending the expression that starts at ``start``, or -1.

    The expression language has no braces, so it is the first ``}`` outside a string.
    """
    i, n = start, len(text)
    while i < n:
        char = text[i]
        if char == "}":
            return i
        if char in "'\"":
            quote_at = i
            i += 1
            while i < n and text[i] != char:
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                span = span_at(origin, text, quote_at, line_indent)
                raise ExprError("unterminated string", span, f"close it with {char}", offset=quote_at)
        i += 1
    return -1


@dataclass(frozen=True)
class Template:
    """A string value with ``${...}`` in it, compiled.

    ``parts`` alternates literal text (``$${`` already turned into ``${``) and Exprs.
    """

    source: str
    parts: tuple[str | Expr, ...]
    origin: Span
    is_single: bool  # exactly one ${expr} and nothing else: render keeps its type

    @property
    def is_static(self) -> bool:
        """No expressions: render always gives the same text."""
        return not any(isinstance(p, Expr) for p in self.parts)

    def exprs(self) -> list[Expr]:
        return [p for p in self.parts if isinstance(p, Expr)]

    def names(self) -> list[NameRef]:
        return [ref for e in self.exprs() for ref in e.names()]

    def render(self, scope: Mapping[str, Any]) -> Any:
        """The value: a single ``${expr}`` gives the expression's value, any type; otherwise
        a str with each value rendered into it (see render_value).

        Raises:
            EvalError: from an expression.
        """
        if self.is_single:
            return typing.cast(Expr, self.parts[0]).evaluate(scope)
        return "".join(p if isinstance(p, str) else render_value(p.evaluate(scope)) for p in self.parts)

    def __str__(self) -> str:
        return "".join(p.replace("${", "$${") if isinstance(p, str) else "${" + str(p) + "}" for p in self.parts)


def compile_template(text: str, origin: Span, *, line_indent: int = 0) -> Template:
    """Compile a string value that may contain ``${expr}``; ``$${`` is a literal ``${``.

    Args:
        text: the string value.
        origin: file position of ``text[0]``.
        line_indent: added to the column of lines after the first (YAML block scalars).

    Raises:
        ExprError: an unterminated ``${`` (at the ``$``) or an error inside an expression
            (at its position).
    """
    parts: list[str | Expr] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            literal.append(text[i:])
            break
        if text.startswith("$${", j):
            literal.append(text[i:j] + "${")
            i = j + 3
        elif text.startswith("${", j):
            literal.append(text[i:j])
            end = _closing_brace(text, j + 2, origin, line_indent)
            if end < 0:
                raise ExprError(
                    "unterminated '${' (no closing '}')",
                    span_at(origin, text, j, line_indent),
                    "write $${ for a literal '${'",
                    offset=j,
                )
            if any(literal):
                parts.append("".join(literal))
            literal = []
            start = span_at(origin, text, j + 2, line_indent)
            try:
                parts.append(compile_expr(text[j + 2 : end], start, line_indent=line_indent))
            except ExprError as exc:
                hint = exc.hint or "write $${ for a literal '${'"
                raise ExprError(exc.message, exc.span, hint, offset=j + 2 + exc.offset) from None
            i = end + 1
        else:
            literal.append(text[i : j + 1])
            i = j + 1
    if any(literal):
        parts.append("".join(literal))
    is_single = len(parts) == 1 and isinstance(parts[0], Expr)
    return Template(text, tuple(parts), origin, is_single)


# --------------------------------------------------------------------------- with: values


def iter_leaves(value: Any) -> Iterator[Any]:
    """Everything a ``with:`` value holds below its mappings and lists, in order:
    Templates and plain scalars."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from iter_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_leaves(item)
    else:
        yield value


def iter_templates(value: Any) -> Iterator[Template]:
    """Every Template inside a ``with:`` value, in order."""
    return (leaf for leaf in iter_leaves(value) if isinstance(leaf, Template))


def map_templates(value: Any, fn: Callable[[Template], Any]) -> Any:
    """``value`` rebuilt with each Template replaced by ``fn(template)``; mappings come
    back as dicts, lists as lists, and everything else as it was."""
    if isinstance(value, Template):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: map_templates(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_templates(v, fn) for v in value]
    return value


def render_static(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render every Template inside ``value`` with ``scope``.

    Raises:
        EvalError: a template needs a name ``scope`` lacks or mixes types badly.
    """
    return map_templates(value, lambda template: template.render(scope))
