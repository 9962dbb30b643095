"""Parse stage: the expression language of ``when:``, ``expect:`` and ``${...}`` templates.

Text is parsed once by a Lark LALR parser (``grammar/expr.lark``) into a frozen AST and
evaluated later against a scope of plain data (dicts, lists, str, int, float, bool, None).
There is no ``eval`` and no Python attribute access: a name is a mapping lookup, and every
operator checks the types of its operands (``EvalError`` otherwise).

The user guide, with the type rules and error messages, is ``docs/expressions.md``.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ._resources import data_dir
from ._source import ScenarioError, Span
from .errors import ChaosrunError

__all__ = [
    "FUNCTIONS",
    "KEYWORDS",
    "MAX_DEPTH",
    "And",
    "Attr",
    "Binary",
    "Call",
    "Compare",
    "EvalError",
    "Expr",
    "ExprError",
    "Index",
    "ListLit",
    "Literal",
    "Name",
    "NameRef",
    "Neg",
    "Node",
    "Not",
    "Or",
    "Template",
    "compile_expr",
    "compile_template",
    "evaluate",
    "has_interpolation",
    "parse_ast",
    "parse_ast_with_lark",
    "render_value",
    "unparse",
]

#: The callable functions and how many arguments each takes.
FUNCTIONS: Mapping[str, int] = {"len": 1, "matches": 2, "startswith": 2, "int": 1, "str": 1}

#: Deeper expressions are refused at compile time, so that evaluating, printing and
#: walking a compiled expression can never hit Python's recursion limit.
MAX_DEPTH = 200

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})

BinaryOp = typing.Literal["+", "-", "*", "/", "%"]
CompareOp = typing.Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
Scalar = bool | int | float | str | None


# --------------------------------------------------------------------------- errors


class ExprError(ScenarioError):
    """A syntax or compile-time error in an expression, at its position in the file.

    ``offset`` is the character index of the error inside the compiled text.
    """

    def __init__(self, message: str, span: Span, hint: str | None = None, *, offset: int = 0) -> None:
        super().__init__(message, span, hint)
        self.offset = offset


class EvalError(ChaosrunError):
    """An expression could not be evaluated: a missing name or field, or a type mismatch.

    The message says what, e.g. ``steps.fill.result has no field 'x'``; the caller adds
    the step and its position.
    """


class _Fault(ChaosrunError):
    """A compile-time problem at a character offset; becomes an ExprError with a Span."""

    def __init__(self, message: str, offset: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.hint = hint


# --------------------------------------------------------------------------- AST
# One class per grammar rule (grammar/expr.lark names the rule of each). ``pos`` is the
# character offset of the node's first character in the compiled text; it takes no part
# in equality, so ASTs parsed from differently spaced text compare equal.


@dataclass(frozen=True)
class Node:
    """Base of every AST node."""

    pos: int = field(default=0, kw_only=True, compare=False, repr=False)


@dataclass(frozen=True, eq=False)
class Literal(Node):
    """``1``, ``2.5``, ``'text'``, ``true``, ``false``, ``null`` (rule ``literal``)."""

    value: Scalar

    # Python says True == 1 and 1 == 1.0; two literals are equal only if their types are.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Literal):
            return NotImplemented
        return type(self.value) is type(other.value) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True)
class ListLit(Node):
    """``[a, b]`` (rule ``list_lit``)."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Name(Node):
    """A top-level name such as ``vars`` or ``steps`` (rule ``name``)."""

    name: str


@dataclass(frozen=True)
class Attr(Node):
    """``obj.name``: a field of a dict (rule ``attr``)."""

    obj: Node
    name: str


@dataclass(frozen=True)
class Index(Node):
    """``obj[index]``: a list item, a character of a str, or a field of a dict (rule ``index``)."""

    obj: Node
    index: Node


@dataclass(frozen=True)
class Call(Node):
    """``len(x)`` and the other FUNCTIONS (rule ``call``)."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Neg(Node):
    """``-x`` (rule ``neg``)."""

    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    """``a + b``, ``a - b``, ``a * b``, ``a / b``, ``a % b`` (rule ``binary``)."""

    op: BinaryOp
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare(Node):
    """``a == b`` and the other comparisons, ``a in b``, ``a not in b`` (rule ``compare``)."""

    op: CompareOp
    left: Node
    right: Node


@dataclass(frozen=True)
class Not(Node):
    """``not x`` (rule ``not_expr``)."""

    operand: Node


@dataclass(frozen=True)
class And(Node):
    """``a and b`` (rule ``and_expr``)."""

    left: Node
    right: Node


@dataclass(frozen=True)
class Or(Node):
    """``a or b`` (rule ``or_expr``)."""

    left: Node
    right: Node


def _children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``, in source order."""
    if isinstance(node, Literal | Name):
        return ()
    if isinstance(node, ListLit):
        return node.items
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Attr):
        return (node.obj,)
    if isinstance(node, Index):
        return (node.obj, node.index)
    if isinstance(node, Neg | Not):
        return (node.operand,)
    if isinstance(node, Binary | Compare | And | Or):
        return (node.left, node.right)
    raise TypeError(f"not an expression node: {node!r}")


# --------------------------------------------------------------------------- parsing
#
# How a text becomes an AST, and why this way (a lint of a 2,000-step scenario must stay
# well under a second, and a plain Lark parse costs ~150 us per condition):
#   1. _Scanner splits the text into tokens with the terminals of grammar/expr.lark (one
#      regex; like Lark's contextual lexer, an identifier right after '.' is a FIELD).
#   2. The sequence of token *types* decides the whole LALR parse, so Lark parses each
#      distinct sequence only once (_shape), into a short program of _Builder calls.
#   3. _replay runs that program on the real tokens: the same _Builder calls a plain
#      Lark parse with _Builder as its inline transformer makes (parse_ast_with_lark,
#      which the property tests compare against), minus the table walk and the unit
#      reductions. About 3-4x faster; repeated texts are cached whole.
# Errors take the slow road: the tokens are fed to Lark's interactive parser and its
# exception is turned into a readable message (_fault_from).


class _Tok:
    """A token of the fast path: what a Lark Token carries, at a fraction of its cost."""

    __slots__ = ("type", "value", "start_pos")

    def __init__(self, kind: str, value: str, start_pos: int) -> None:
        self.type = kind
        self.value = value
        self.start_pos = start_pos

    def __str__(self) -> str:
        return self.value

    def lark(self) -> Token:
        return Token(self.type, self.value, self.start_pos)


_AnyToken = Token | _Tok  # Lark's (reference parse, errors) or ours (fast path)


def _start(tok: _AnyToken) -> int:
    return tok.start_pos or 0


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _decode_string(tok: _AnyToken) -> str:
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
        raise _Fault(
            f"invalid escape '{shown}' in string",
            _start(tok) + 1 + m.start(),
            "escapes are \\\\, \\', \\\", \\n, \\t, \\r and \\uXXXX",
        )

    return _ESCAPE.sub(replace, body)


class _Builder:
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
        return Not(c[1], pos=_start(c[0]))

    def compare(self, c: list[Any]) -> Compare:
        return Compare(c[1], c[0], c[2], pos=c[0].pos)

    def comp_op(self, c: list[_AnyToken]) -> str:
        return " ".join(str(t) for t in c)  # "not" "in" -> "not in", whatever the spacing

    def binary(self, c: list[Any]) -> Binary:
        return Binary(str(c[1]), c[0], c[2], pos=c[0].pos)  # type: ignore[arg-type]

    def neg(self, c: list[Any]) -> Neg:
        return Neg(c[1], pos=_start(c[0]))

    def attr(self, c: list[Any]) -> Attr:
        return Attr(c[0], str(c[2]), pos=c[0].pos)

    def index(self, c: list[Any]) -> Index:
        return Index(c[0], c[2], pos=c[0].pos)

    def atom(self, c: list[Any]) -> Node:
        return typing.cast(Node, c[1])  # "(" or_expr ")"

    def name(self, c: list[_AnyToken]) -> Name:
        return Name(str(c[0]), pos=_start(c[0]))

    def call(self, c: list[Any]) -> Call:
        tok: _AnyToken = c[0]
        name = str(tok)
        args: tuple[Node, ...] = tuple(c[2] or ())
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, FUNCTIONS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "functions are " + ", ".join(sorted(FUNCTIONS))
            raise _Fault(f"unknown function '{name}'", _start(tok), hint)
        want = FUNCTIONS[name]
        if len(args) != want:
            plural = "argument" if want == 1 else "arguments"
            raise _Fault(f"{name}() takes {want} {plural}, got {len(args)}", _start(tok))
        if name == "matches":
            regex = args[1]
            if isinstance(regex, Literal) and isinstance(regex.value, str):
                try:
                    re.compile(regex.value)
                except (re.error, OverflowError, RecursionError) as exc:
                    raise _Fault(f"invalid regular expression: {exc}", regex.pos) from None
        return Call(name, args, pos=_start(tok))

    def list_lit(self, c: list[Any]) -> ListLit:
        return ListLit(tuple(c[1] or ()), pos=_start(c[0]))

    def arguments(self, c: list[Any]) -> list[Node]:
        return c[::2]  # drop the commas

    def literal(self, c: list[_AnyToken]) -> Literal:
        tok = c[0]
        kind, text = tok.type, str(tok)
        value: Scalar
        if kind == "INT":
            try:
                value = int(text)
            except ValueError:  # more digits than Python will convert
                raise _Fault("number is too long", _start(tok)) from None
        elif kind == "FLOAT":
            value = float(text)
            if math.isinf(value):
                raise _Fault("number is out of range", _start(tok))
        elif kind == "STRING":
            value = _decode_string(tok)
        else:
            value = {"TRUE": True, "FALSE": False, "NULL": None}[kind]
        return Literal(value, pos=_start(tok))


@dataclass(frozen=True)
class _Shape:
    """A reduction recorded while Lark parses a token-type sequence (see _shape)."""

    rule: str
    children: list[Any]  # Token (start_pos = its index), _Shape, or None


class _Recorder(Transformer[Token, _Shape]):
    """Lark's inline transformer: records each rule reduction, builds nothing."""

    def __default__(self, data: Any, children: list[Any], meta: Any) -> _Shape:
        return _Shape(str(data), children)


@functools.cache
def _parser() -> Lark:
    grammar = (data_dir("grammar") / "expr.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        transformer=_Recorder(),
    )


class _Scanner:
    """Splits text into tokens with the terminals of the grammar.

    Does what Lark's contextual lexer does for this grammar. The only token whose
    meaning depends on the parser state is an identifier: right after '.' it is a FIELD
    (so ``steps.x.in`` works), elsewhere a NAME or a keyword (NAME's regex excludes the
    keywords). Alternatives are tried in Lark's order.
    """

    def __init__(self, parser: Lark) -> None:
        terminals = sorted(
            parser.terminals,
            key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name),
        )
        names = {t.name for t in terminals}
        keywords = {k.upper() for k in KEYWORDS}
        if not keywords | {"NAME", "FIELD"} <= names:
            raise RuntimeError(f"grammar/expr.lark lacks terminals {keywords - names} (broken install?)")
        self._identifiers = frozenset(keywords | {"NAME"})
        self._ignore = frozenset(parser.ignore_tokens)
        alternatives = [f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals if t.name != "FIELD"]
        self._finditer = re.compile("|".join([*alternatives, "(?P<_BAD>(?s:.))"])).finditer

    def tokens(self, text: str) -> tuple[list[_Tok], int | None]:
        """The tokens of ``text``, up to the first character no token starts with (an
        unterminated string, a stray ``@``), and that character's offset or None."""
        out: list[_Tok] = []
        ignore, identifiers = self._ignore, self._identifiers
        after_dot = False
        for m in self._finditer(text):
            kind = typing.cast(str, m.lastgroup)
            if kind in ignore:
                continue
            if kind == "_BAD":
                return out, m.start()
            if after_dot and kind in identifiers:
                kind = "FIELD"
            out.append(_Tok(kind, m[0], m.start()))
            after_dot = kind == "DOT"
        return out, None


@functools.cache
def _scanner() -> _Scanner:
    return _Scanner(_parser())


@functools.cache
def _builder() -> _Builder:
    return _Builder()


# A program: one step per reduction, (builder method, argument sources); a source is a
# token index (>= 0), None (-1), or the result of step j (-2 - j).
_Program = tuple[tuple[Callable[[list[Any]], Any], tuple[int, ...]], ...]


@functools.lru_cache(maxsize=4096)
def _shape(types: tuple[str, ...]) -> _Program | None:
    """The builder program for a token-type sequence, or None if it does not parse."""
    parser = _parser().parse_interactive()
    try:
        for i, kind in enumerate(types):
            parser.feed_token(Token(kind, "", i))
        root = parser.feed_token(Token("$END", "", len(types)))
    except UnexpectedInput:
        return None
    builder = _builder()
    steps: list[tuple[Callable[[list[Any]], Any], tuple[int, ...]]] = []
    step_of: dict[int, int] = {}
    pending: list[tuple[_Shape, bool]] = [(root, False)]
    while pending:  # post-order, without recursion: input may nest thousands deep
        shape, ready = pending.pop()
        if not ready:
            pending.append((shape, True))
            pending.extend((c, False) for c in reversed(shape.children) if isinstance(c, _Shape))
            continue
        sources = tuple(
            _start(c) if isinstance(c, Token) else -1 if c is None else -2 - step_of[id(c)] for c in shape.children
        )
        step_of[id(shape)] = len(steps)
        steps.append((getattr(builder, shape.rule), sources))
    return tuple(steps)


def _replay(program: _Program, tokens: list[_Tok]) -> Node:
    results: list[Any] = []
    for method, sources in program:
        args = [tokens[s] if s >= 0 else None if s == -1 else results[-2 - s] for s in sources]
        results.append(method(args))
    return typing.cast(Node, results[-1])


_OPERAND_START = frozenset({"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "NULL"})
_COMPARE_TOKENS = frozenset({"EQ", "NE", "LT", "LE", "GT", "GE", "IN"})
_TWO_CHAR_OPS = ("==", "!=", "<=", ">=")
_CHAR_HINTS = {
    "=": "use '==' to compare",
    "!": "use 'not' to negate, '!=' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
}


def _char_fault(text: str, i: int) -> _Fault:
    """No token starts at ``text[i]``."""
    char = text[i]
    if char in "'\"":
        return _Fault("unterminated string", i, f"close it with {char}")
    if text.startswith("${", i):
        return _Fault("unexpected '${'", i, "inside when:/expect: write the expression without ${...}")
    if char in _CHAR_HINTS:
        return _Fault(f"unexpected '{char}'", i, _CHAR_HINTS[char])
    shown = char if char.isprintable() else repr(char)[1:-1]
    return _Fault(f"unexpected character '{shown}'", i)


def _describe(tok: Token) -> str:
    text = str(tok)
    if len(text) > 24:
        text = text[:21] + "..."
    if tok.type in ("NAME", "FIELD") and text not in KEYWORDS:
        return f"name '{text}'"
    if tok.type in ("INT", "FLOAT"):
        return f"number {text}"
    if tok.type == "STRING":
        return f"string {text}"
    return f"'{text}'"


def _token_before(text: str, pos: int) -> str | None:
    """The text of the token that ends just before ``pos`` (only operators and keywords
    are ever asked for), or None at the start."""
    end = len(text[:pos].rstrip())
    if end == 0:
        return None
    if text[end - 1].isalnum() or text[end - 1] == "_":
        start = end
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
            start -= 1
        return text[start:end]
    if text[max(0, end - 2) : end] in _TWO_CHAR_OPS:
        return text[end - 2 : end]
    return text[end - 1]


@functools.cache
def _plain_parser() -> Lark:
    """Lark with _Builder as its inline transformer: the plain way to parse, for errors
    and as the reference of the fast path."""
    grammar = (data_dir("grammar") / "expr.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        transformer=_builder(),  # any object with the rule methods will do
    )


def _syntax_fault(text: str, tokens: list[_Tok], bad: int | None) -> _Fault:
    """Explain why ``text`` does not parse, exactly as a plain Lark parse would: the first
    token Lark refuses, a _Builder error on the way there (say an invalid escape in an
    earlier string) or, if all the tokens are fine, the character at ``bad`` that no token
    starts with."""
    parser = _plain_parser().parse_interactive()
    try:
        for tok in tokens:
            parser.feed_token(tok.lark())
        if bad is not None:
            return _char_fault(text, bad)
        parser.feed_token(Token("$END", "", len(text)))
    except UnexpectedToken as exc:
        return _fault_from(text, exc)
    except _Fault as fault:
        return fault
    raise AssertionError(f"{text!r} parses after all")  # _shape and Lark disagree: a bug


def _open_bracket(text: str, pos: int) -> str | None:
    """The innermost bracket still open before ``pos``: ``(`` or ``[``, or None."""
    stack: list[str] = []
    for tok in _scanner().tokens(text[:pos])[0]:
        if tok.type in ("LPAR", "LSQB"):
            stack.append(tok.value)
        elif tok.type in ("RPAR", "RSQB") and stack:
            stack.pop()
    return stack[-1] if stack else None


def _fault_from(text: str, exc: UnexpectedToken) -> _Fault:
    """Turn Lark's exception into a message an exam author can act on."""
    tok = exc.token
    if tok.type in ("NAME", "FIELD"):  # Lark's root lexer says FIELD for any identifier
        tok = Token(str(tok).upper() if str(tok) in KEYWORDS else "NAME", str(tok), tok.start_pos)
    expected = set(exc.expected)
    at_end = tok.type == "$END"
    pos = len(text.rstrip()) if at_end else _start(tok)
    if expected & _OPERAND_START:
        before = _token_before(text, pos)
        if before is None:
            if at_end:
                return _Fault("empty expression", pos)
            return _Fault(f"unexpected {_describe(tok)}", pos, "an expression cannot start here")
        return _Fault(f"expected an operand after '{before}'", pos)
    if "FIELD" in expected:
        return _Fault("expected a field name after '.'", pos)
    if expected == {"IN"}:
        return _Fault("expected 'in' after 'not'", pos)
    opener = _open_bracket(text, pos)
    closer = {"(": ")", "[": "]"}.get(opener or "")
    if at_end:
        if closer:
            return _Fault(f"missing '{closer}'", pos)
        return _Fault("unexpected end of expression", pos)  # not reachable with this grammar
    if tok.type in _COMPARE_TOKENS and not expected & _COMPARE_TOKENS:
        return _Fault("comparisons cannot be chained", pos, "join them with 'and': a < b and b < c")
    if tok.type in _OPERAND_START or tok.type == "LSQB" and "LSQB" not in expected:
        return _Fault(f"unexpected {_describe(tok)}", pos, "missing an operator?")
    if tok.type == "LPAR" and "LPAR" not in expected:
        return _Fault("unexpected '('", pos, "only " + ", ".join(FUNCTIONS) + " can be called")
    if closer and tok.type in ("RPAR", "RSQB") and str(tok) != closer:
        return _Fault(f"unexpected {_describe(tok)}", pos, f"expected '{closer}'")
    return _Fault(f"unexpected {_describe(tok)}", pos)


def _check_depth(root: Node) -> None:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Fault(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", node.pos)
        stack.extend((child, depth + 1) for child in _children(node))


def _parse(text: str) -> Node:
    """Raises: _Fault."""
    tokens, bad = _scanner().tokens(text)
    program = None if bad is not None else _shape(tuple(t.type for t in tokens))
    if program is None:
        raise _syntax_fault(text, tokens, bad)
    node = _replay(program, tokens)
    if len(tokens) > MAX_DEPTH:  # every node owns a token, so only then can it be too deep
        _check_depth(node)
    return node


@functools.lru_cache(maxsize=16384)
def _parse_cached(text: str) -> Node | _Fault:
    """Parse ``text``; scenarios repeat expressions, and the AST holds no file position."""
    try:
        return _parse(text)
    except _Fault as fault:
        return fault.with_traceback(None)  # cached: keep no frames alive


def _span_at(origin: Span, text: str, offset: int, line_indent: int = 0) -> Span:
    """The file position of ``text[offset]``, where ``text[0]`` is at ``origin``."""
    line_offset = text.count("\n", 0, offset)
    if line_offset == 0:
        return Span(origin.file, origin.line, origin.col + offset)
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1 + line_indent
    return Span(origin.file, origin.line + line_offset, col)


def parse_ast(text: str) -> Node:
    """Parse ``text`` into an AST, without positions in a file.

    Raises:
        ExprError: a syntax error (positioned in file ``<expr>``).
    """
    return compile_expr(text, Span("<expr>", 1, 1)).ast


def parse_ast_with_lark(text: str) -> Node:
    """Parse ``text`` the plain way: Lark's own lexer and parser, _Builder inline.

    The reference the fast path (_Scanner, _shape, _replay) is tested against; use
    parse_ast otherwise.

    Raises:
        ExprError: a syntax error (positioned in file ``<expr>``).
    """
    try:
        node = typing.cast(Node, _plain_parser().parse(text))
        _check_depth(node)
    except UnexpectedCharacters as exc:
        fault = _char_fault(text, exc.pos_in_stream or 0)
    except UnexpectedToken as exc:
        fault = _fault_from(text, exc)
    except _Fault as exc:
        fault = exc
    else:
        return node
    span = Span("<expr>", 1, 1 + fault.offset)
    raise ExprError(fault.message, span, fault.hint, offset=fault.offset)


# --------------------------------------------------------------------------- unparsing

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


# --------------------------------------------------------------------------- evaluation


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "dict"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _equal(a: Any, b: Any) -> bool:
    """``==`` of the language: numbers compare by value, nothing else crosses types
    (``true != 1``), lists and dicts compare item by item."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if _is_list(a) and _is_list(b):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else render_value(k)): _plain(v) for k, v in value.items()}
    if _is_list(value):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def render_value(value: Any) -> str:
    """The text of a value inside a string: str as-is, everything else as JSON
    (``true``, ``null``, ``3``, ``2.5``, ``[1, "a"]``, ``{"k": 1}``)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(_plain(value), ensure_ascii=False)
    except ValueError as exc:  # ints beyond Python's digit limit, circular data
        raise EvalError(f"cannot render the value as text: {exc}") from None


def _path(node: Node) -> str:
    return unparse(node)


def _as_bool(op: str, value: Any, node: Node) -> bool:
    if isinstance(value, bool):
        return value
    raise EvalError(f"'{op}' needs true or false, got {_type_name(value)} ({_path(node)})")


def _get_item(obj: Any, key: Any, node: Node, *, dot: bool) -> Any:
    """``obj.key`` (``dot``: dicts only) or ``obj[key]``; ``node`` is obj's expression."""
    if isinstance(obj, Mapping):
        if not isinstance(key, str):
            raise EvalError(f"{_path(node)} is a dict: its keys are str, not {_type_name(key)}")
        if key not in obj:
            raise EvalError(f"{_path(node)} has no field {key!r}")
        return obj[key]
    if not dot and (_is_list(obj) or isinstance(obj, str)):
        if not isinstance(key, int) or isinstance(key, bool):
            raise EvalError(f"{_path(node)} is a {_type_name(obj)}: its index must be an int, not {_type_name(key)}")
        if not -len(obj) <= key < len(obj):
            raise EvalError(f"index {key} is out of range for {_path(node)} (length {len(obj)})")
        return obj[key]
    what = f"field {key!r}" if isinstance(key, str) else f"index {render_value(key)}"
    raise EvalError(f"cannot read {what} of {_path(node)}: it is {_type_name(obj)}")


def _arithmetic(node: Binary, a: Any, b: Any) -> Any:
    op = node.op
    if op == "+" and not (_is_number(a) and _is_number(b)):
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        if _is_list(a) and _is_list(b):
            return [*a, *b]
        raise EvalError(f"cannot apply '+' to {_type_name(a)} and {_type_name(b)}")
    if not (_is_number(a) and _is_number(b)):
        raise EvalError(f"'{op}' needs numbers, got {_type_name(a)} and {_type_name(b)}")
    if op in ("/", "%") and b == 0:
        raise EvalError(f"division by zero ({_path(node)})")
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        return a % b
    except OverflowError:
        raise EvalError(f"number too large in '{op}' ({_path(node)})") from None


def _contains(needle: Any, haystack: Any) -> bool:
    if isinstance(haystack, str):
        if not isinstance(needle, str):
            raise EvalError(f"'in' a str needs a str on the left, got {_type_name(needle)}")
        return needle in haystack
    if _is_list(haystack):
        return any(_equal(needle, item) for item in haystack)
    if isinstance(haystack, Mapping):
        if not isinstance(needle, str):
            raise EvalError(f"'in' a dict tests its keys, which are str; got {_type_name(needle)}")
        return needle in haystack
    raise EvalError(f"'in' needs a list, str or dict on the right, got {_type_name(haystack)}")


def _compare(node: Compare, a: Any, b: Any) -> bool:
    op = node.op
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op == "in":
        return _contains(a, b)
    if op == "not in":
        return not _contains(a, b)
    if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        raise EvalError(f"cannot compare {_type_name(a)} with {_type_name(b)} ('{op}')")
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def _fn_len(x: Any) -> int:
    if isinstance(x, str | Mapping) or _is_list(x):
        return len(x)
    raise EvalError(f"len() needs a str, list or dict, got {_type_name(x)}")


def _fn_matches(text: Any, regex: Any) -> bool:
    if not (isinstance(text, str) and isinstance(regex, str)):
        raise EvalError(f"matches() needs two str, got {_type_name(text)} and {_type_name(regex)}")
    try:
        return re.search(regex, text) is not None
    except (re.error, OverflowError, RecursionError) as exc:
        raise EvalError(f"matches(): invalid regular expression {regex!r}: {exc}") from None


def _fn_startswith(text: Any, prefix: Any) -> bool:
    if not (isinstance(text, str) and isinstance(prefix, str)):
        raise EvalError(f"startswith() needs two str, got {_type_name(text)} and {_type_name(prefix)}")
    return text.startswith(prefix)


def _fn_int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        raise EvalError(f"int() needs an int, float or str, got {_type_name(x)}")
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise EvalError(f"int() cannot convert {x!r}")
        return int(x)  # truncates toward zero, like the C/Go/Python conversions
    if not _INT_TEXT.fullmatch(x):
        raise EvalError(f"int(): {x[:40]!r} is not a whole number")
    try:
        return int(x)
    except ValueError:
        raise EvalError("int(): the number is too long") from None


def _call(node: Call, args: list[Any]) -> Any:
    name = node.name
    if name == "len" and len(args) == 1:
        return _fn_len(args[0])
    if name == "matches" and len(args) == 2:
        return _fn_matches(args[0], args[1])
    if name == "startswith" and len(args) == 2:
        return _fn_startswith(args[0], args[1])
    if name == "int" and len(args) == 1:
        return _fn_int(args[0])
    if name == "str" and len(args) == 1:
        return render_value(args[0])
    if name in FUNCTIONS:
        raise EvalError(f"{name}() takes {FUNCTIONS[name]} argument(s), got {len(args)}")
    raise EvalError(f"unknown function '{name}'")


def _eval(node: Node, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, Attr):
        return _get_item(_eval(node.obj, scope), node.name, node.obj, dot=True)
    if isinstance(node, Name):
        if node.name not in scope:
            known = ", ".join(sorted(str(k) for k in scope)[:12])
            raise EvalError(f"unknown name '{node.name}' (known here: {known or 'none'})")
        return scope[node.name]
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Compare):
        return _compare(node, _eval(node.left, scope), _eval(node.right, scope))
    if isinstance(node, And):
        if not _as_bool("and", _eval(node.left, scope), node.left):
            return False
        return _as_bool("and", _eval(node.right, scope), node.right)
    if isinstance(node, Or):
        if _as_bool("or", _eval(node.left, scope), node.left):
            return True
        return _as_bool("or", _eval(node.right, scope), node.right)
    if isinstance(node, Not):
        return not _as_bool("not", _eval(node.operand, scope), node.operand)
    if isinstance(node, Index):
        return _get_item(_eval(node.obj, scope), _eval(node.index, scope), node.obj, dot=False)
    if isinstance(node, Binary):
        return _arithmetic(node, _eval(node.left, scope), _eval(node.right, scope))
    if isinstance(node, Neg):
        value = _eval(node.operand, scope)
        if not _is_number(value):
            raise EvalError(f"'-' needs a number, got {_type_name(value)} ({_path(node.operand)})")
        return -value
    if isinstance(node, Call):
        return _call(node, [_eval(a, scope) for a in node.args])
    if isinstance(node, ListLit):
        return [_eval(i, scope) for i in node.items]
    raise TypeError(f"not an expression node: {node!r}")


def evaluate(node: Node, scope: Mapping[str, Any]) -> Any:
    """Evaluate an AST against ``scope`` (top-level names to plain data).

    Raises:
        EvalError: a missing name or field, a type mismatch, division by zero...
    """
    try:
        return _eval(node, scope)
    except RecursionError:  # only from hand-built ASTs or self-referential data
        raise EvalError("expression or data is nested too deeply") from None


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class NameRef:
    """A name path an expression reads, e.g. ``("steps", "fill_logs", "result", "written_mb")``.

    The path is the longest static one: it stops at an index computed at run time
    (``vars.hosts[vars.i]`` gives ``("vars", "hosts")``, plus ``("vars", "i")``).
    ``span`` is the file position of the path's first character.
    """

    path: tuple[str | int, ...]
    span: Span


def _static_key(node: Node) -> str | int | None:
    if isinstance(node, Literal):
        value = node.value
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
    return None


def _name_paths(node: Node) -> Iterator[tuple[tuple[str | int, ...], int]]:
    """(path, offset) of every name read, in source order."""
    if isinstance(node, Attr | Index):
        chain: list[Attr | Index] = []
        root: Node = node
        while isinstance(root, Attr | Index):
            chain.append(root)
            root = root.obj
        chain.reverse()
        path: list[str | int] = []
        static = isinstance(root, Name)
        if isinstance(root, Name):
            path.append(root.name)
        else:
            yield from _name_paths(root)
        dynamic: list[Node] = []
        for link in chain:
            key = link.name if isinstance(link, Attr) else _static_key(link.index)
            if static and key is not None:
                path.append(key)
            else:
                static = False
            if isinstance(link, Index):
                dynamic.append(link.index)
        if isinstance(root, Name):
            yield tuple(path), root.pos
        for index in dynamic:
            yield from _name_paths(index)
    elif isinstance(node, Name):
        yield (node.name,), node.pos
    else:
        for child in _children(node):
            yield from _name_paths(child)


# --------------------------------------------------------------------------- Expr


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
        return tuple(NameRef(path, self.span_at(offset)) for path, offset in _name_paths(self.ast))

    def span_at(self, offset: int) -> Span:
        """The file position of character ``offset`` of ``source``."""
        return _span_at(self.origin, self.source, offset, self.line_indent)

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
    result = _parse_cached(text)
    if isinstance(result, _Fault):
        span = _span_at(origin, text, result.offset, line_indent)
        raise ExprError(result.message, span, result.hint, offset=result.offset)
    return Expr(text, result, origin, line_indent)


# --------------------------------------------------------------------------- templates


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
                span = _span_at(origin, text, quote_at, line_indent)
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
                    _span_at(origin, text, j, line_indent),
                    "write $${ for a literal '${'",
                    offset=j,
                )
            if any(literal):
                parts.append("".join(literal))
            literal = []
            start = _span_at(origin, text, j + 2, line_indent)
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
