"""Parse stage, expression unparsing: the canonical text of an AST (plan output, error messages)."""

from __future__ import annotations

import math

from .ast import And, Attr, Binary, Call, Compare, Index, ListLit, Literal, Name, Neg, Node, Not, Or, Scalar

_PREC_OR, _PREC_AND, _PREC_NOT, _PREC_COMPARE, _PREC_SUM, _PREC_PRODUCT = 1, 2, 3, 4, 5, 6
_PREC_NEG, _PREC_POSTFIX, _PREC_ATOM = 7, 8, 9
_QUOTE = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"}
_QUOTE.update({c: f"\\u{c:04x}" for c in (*range(0x20), 0x7F) if c not in _QUOTE})


def _quote(text: str) -> str:
    return '"' + text.translate(_QUOTE) + '"'


def _literal_text(value: Scalar) -> tuple[int, str]:
    if value is None:
        return _PREC_ATOM, "null"
    if isinstance(value, bool):
        return _PREC_ATOM, "true" if value else "false"
    if isinstance(value, str):
        return _PREC_ATOM, _quote(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no literal in the expression language")
    text = repr(value)
    return (_PREC_NEG if text.startswith("-") else _PREC_ATOM), text


def _unparse(node: Node, min_prec: int) -> str:
    prec: int
    if isinstance(node, Literal):
        prec, text = _literal_text(node.value)
    elif isinstance(node, Name):
        prec, text = _PREC_ATOM, node.name
    elif isinstance(node, ListLit):
        prec, text = _PREC_ATOM, "[" + ", ".join(_unparse(i, 0) for i in node.items) + "]"
    elif isinstance(node, Call):
        args = ", ".join(_unparse(a, 0) for a in node.args)
        prec, text = _PREC_ATOM, f"{node.name}({args})"
    elif isinstance(node, Attr):
        prec, text = _PREC_POSTFIX, f"{_unparse(node.obj, _PREC_POSTFIX)}.{node.name}"
    elif isinstance(node, Index):
        obj, index = _unparse(node.obj, _PREC_POSTFIX), _unparse(node.index, 0)
        prec, text = _PREC_POSTFIX, f"{obj}[{index}]"
    elif isinstance(node, Neg):
        prec, text = _PREC_NEG, "-" + _unparse(node.operand, _PREC_NEG)
    elif isinstance(node, Binary):
        prec = _PREC_SUM if node.op in ("+", "-") else _PREC_PRODUCT
        left, right = _unparse(node.left, prec), _unparse(node.right, prec + 1)
        text = f"{left} {node.op} {right}"
    elif isinstance(node, Compare):
        prec = _PREC_COMPARE  # comparisons do not chain: both sides bind tighter
        left, right = _unparse(node.left, _PREC_SUM), _unparse(node.right, _PREC_SUM)
        text = f"{left} {node.op} {right}"
    elif isinstance(node, Not):
        prec, text = _PREC_NOT, "not " + _unparse(node.operand, _PREC_NOT)
    elif isinstance(node, And):
        prec = _PREC_AND
        text = f"{_unparse(node.left, prec)} and {_unparse(node.right, prec + 1)}"
    elif isinstance(node, Or):
        prec = _PREC_OR
        text = f"{_unparse(node.left, prec)} or {_unparse(node.right, prec + 1)}"
    else:
        raise TypeError(f"not an expression node: {node!r}")
    return f"({text})" if prec < min_prec else text


def unparse(node: Node) -> str:
    """The canonical text of an AST: minimal parentheses, re-parses to an equal AST."""
    return _unparse(node, 0)
