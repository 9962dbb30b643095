"""Run stage, why an expression is not true: the values it compared, for a failed ``expect``.

``explain`` walks the AST the way ``evaluate`` does and names what it observed where the
verdict was decided: ``result.free_mb = 12, expected > 100``; for ``a and b`` only the
side that was false, for ``a or b`` both. It never raises: a part that cannot be
evaluated is left out (its error is the step's reason already).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .ast import And, Call, Compare, ListLit, Literal, Node, Not, Or, name_paths
from .eval import EvalError, evaluate, render_value
from .unparse import unparse

MAX_VALUE = 80  # characters of one observed value in a reason


def show(value: Any) -> str:
    """A value as a reason shows it: JSON (strings quoted), cut at MAX_VALUE characters."""
    try:
        text = render_value([value])[1:-1]  # the item of a one-item JSON list: "x" stays quoted
    except EvalError:
        text = repr(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def _value(node: Node, scope: Mapping[str, Any]) -> tuple[bool, Any]:
    try:
        return True, evaluate(node, scope)
    except EvalError:
        return False, None


def _is_constant(node: Node) -> bool:
    if isinstance(node, Literal):
        return True
    if isinstance(node, ListLit):
        return all(_is_constant(i) for i in node.items)
    return False


def _observed(node: Node, scope: Mapping[str, Any]) -> list[str]:
    """``path = value`` for the expression itself when it reads something, else for the
    names it reads."""
    if _is_constant(node):
        return []
    if next(name_paths(node), None) is None:
        return []
    ok, value = _value(node, scope)
    return [f"{unparse(node)} = {show(value)}"] if ok else []


def _why(node: Node, scope: Mapping[str, Any]) -> list[str]:
    if isinstance(node, And):
        ok, left = _value(node.left, scope)
        return _why(node.left if not ok or left is not True else node.right, scope)
    if isinstance(node, Or):
        return _why(node.left, scope) + _why(node.right, scope)
    if isinstance(node, Not):
        operand = node.operand
        deeper = _why_true(operand, scope) if isinstance(operand, Compare | Call | And | Or) else []
        return [f"{unparse(operand)} is true", *deeper]
    if isinstance(node, Compare):
        if _is_constant(node.left):
            return _observed(node.right, scope)
        ok, left = _value(node.left, scope)
        if not ok:
            return _observed(node.right, scope)
        expected = unparse(node.right)
        if not _is_constant(node.right):
            ok, right = _value(node.right, scope)
            expected += f" ({show(right)})" if ok else ""
        return [f"{unparse(node.left)} = {show(left)}, expected {node.op} {expected}"]
    if isinstance(node, Call):
        return [part for arg in node.args for part in _observed(arg, scope)]
    return _observed(node, scope)


def _why_true(node: Node, scope: Mapping[str, Any]) -> list[str]:
    """The values that made ``node`` true (under a ``not``)."""
    if isinstance(node, Compare):
        return _observed(node.left, scope) + _observed(node.right, scope)
    if isinstance(node, Call):
        return [part for arg in node.args for part in _observed(arg, scope)]
    if isinstance(node, And | Or):
        return _why_true(node.left, scope) + _why_true(node.right, scope)
    return [] if isinstance(node, Not) else _observed(node, scope)


def explain(node: Node, scope: Mapping[str, Any]) -> str:
    """What ``node`` observed in ``scope`` where its verdict was decided ("" if nothing).

    >>> from chaosrun.expr import parse_ast
    >>> explain(parse_ast("result.free_mb > 100"), {"result": {"free_mb": 12}})
    'result.free_mb = 12, expected > 100'
    """
    parts: list[str] = []
    try:
        found = _why(node, scope)
    except RecursionError:
        return ""
    for part in found:
        if part not in parts:
            parts.append(part)
    return "; ".join(parts)
