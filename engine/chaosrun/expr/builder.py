"""Parse stage, AST builder: one method per rule of grammar/expr.lark, each building one node.

Compile-time checks that need a token's value (escapes, number range, function names
and arities, a literal regex of ``matches()``) are made here, as ``Fault``.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from typing import Any

from ..errors import ChaosrunError
from ..regex import RE2_HINT, re2_error
from .ast import (
    FUNCTIONS,
    And,
    Attr,
    Binary,
    Call,
    Compare,
    Index,
    ListLit,
    Literal,
    Name,
    Neg,
    Node,
    Not,
    Or,
    Scalar,
)
from .eval import duration_seconds
from .lexer import AnyToken, token_start


class Fault(ChaosrunError):
    """A compile-time problem at a character offset; becomes an ExprError with a Span."""

    def __init__(self, message: str, offset: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.hint = hint


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _decode_string(tok: AnyToken) -> str:
    body = str(tok)[1:-1]
    if "\\" not in body:
        return body

    def replace(m: re.Match[str]) -> str:
        code = m.group(1)
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        if len(code) == 5:
            return chr(int(code[1:], 16))
        shown = "\\" + code if code.isprintable() else "\\" + repr(code)[1:-1]
        raise Fault(
            f"invalid escape '{shown}' in string",
            token_start(tok) + 1 + m.start(),
            "escapes are \\\\, \\', \\\", \\n, \\t, \\r and \\uXXXX",
        )

    return _ESCAPE.sub(replace, body)


class Builder:
    """Builds the AST, one method per grammar rule (or alias) of grammar/expr.lark.

    Each method gets the rule's children as Lark would pass them to an inline
    transformer: Tokens, built Nodes, and None for an absent ``[optional]`` part.
    Positions come from the tokens.
    """

    def or_expr(self, c: list[Any]) -> Or:
        return Or(c[0], c[2], pos=c[0].pos)

    def and_expr(self, c: list[Any]) -> And:
        return And(c[0], c[2], pos=c[0].pos)

    def not_expr(self, c: list[Any]) -> Not:
        return Not(c[1], pos=token_start(c[0]))

    def compare(self, c: list[Any]) -> Compare:
        return Compare(c[1], c[0], c[2], pos=c[0].pos)

    def comp_op(self, c: list[AnyToken]) -> str:
        return " ".join(str(t) for t in c)  # "not" "in" -> "not in", whatever the spacing

    def binary(self, c: list[Any]) -> Binary:
        return Binary(str(c[1]), c[0], c[2], pos=c[0].pos)  # type: ignore[arg-type]

    def neg(self, c: list[Any]) -> Neg:
        return Neg(c[1], pos=token_start(c[0]))

    def attr(self, c: list[Any]) -> Attr:
        return Attr(c[0], str(c[2]), pos=c[0].pos)

    def index(self, c: list[Any]) -> Index:
        return Index(c[0], c[2], pos=c[0].pos)

    def atom(self, c: list[Any]) -> Node:
        return typing.cast(Node, c[1])  # "(" or_expr ")"

    def name(self, c: list[AnyToken]) -> Name:
        return Name(str(c[0]), pos=token_start(c[0]))

    def call(self, c: list[Any]) -> Call:
        tok: AnyToken = c[0]
        name = str(tok)
        args: tuple[Node, ...] = tuple(c[2] or ())
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, FUNCTIONS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "functions are " + ", ".join(sorted(FUNCTIONS))
            raise Fault(f"unknown function '{name}'", token_start(tok), hint)
        want = FUNCTIONS[name]
        if len(args) != want:
            plural = "argument" if want == 1 else "arguments"
            raise Fault(f"{name}() takes {want} {plural}, got {len(args)}", token_start(tok))
        if name == "matches":
            regex = args[1]
            if isinstance(regex, Literal) and isinstance(regex.value, str):
                problem = re2_error(regex.value)
                if problem is not None:
                    raise Fault(f"invalid regular expression: {problem}", regex.pos, RE2_HINT)
        return Call(name, args, pos=token_start(tok))

    def list_lit(self, c: list[Any]) -> ListLit:
        return ListLit(tuple(c[1] or ()), pos=token_start(c[0]))

    def arguments(self, c: list[Any]) -> list[Node]:
        return c[::2]  # drop the commas

    def literal(self, c: list[AnyToken]) -> Literal:
        tok = c[0]
        kind, text = tok.type, str(tok)
        value: Scalar
        if kind == "INT":
            try:
                value = int(text)
            except ValueError:  # more digits than Python will convert
                raise Fault("number is too long", token_start(tok)) from None
        elif kind == "FLOAT":
            value = float(text)
            if math.isinf(value):
                raise Fault("number is out of range", token_start(tok))
        elif kind == "DURATION":
            value = duration_seconds(text)
            if isinstance(value, float) and math.isinf(value):
                raise Fault("number is out of range", token_start(tok))
        elif kind == "STRING":
            value = _decode_string(tok)
        else:
            value = {"TRUE": True, "FALSE": False, "NULL": None}[kind]
        return Literal(value, pos=token_start(tok))
