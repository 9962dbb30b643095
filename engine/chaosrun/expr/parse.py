"""Parse stage, expression parsing: text -> AST through the one Lark parser of grammar/expr.lark.

How a text becomes an AST, and why this way (a lint of a 2,000-step scenario must stay
well under a second, and a plain Lark parse costs ~150 us per condition):
  1. Scanner (lexer.py) splits the text into tokens with the terminals of the grammar
     (one regex; like Lark's contextual lexer, an identifier right after '.' is a FIELD).
  2. The sequence of token *types* decides the whole LALR parse, so Lark parses each
     distinct sequence only once (_shape), into a short program of Builder calls.
  3. _replay runs that program on the real tokens: the same Builder calls a plain Lark
     parse makes (parse_ast_with_lark, which the property tests compare against), minus
     the table walk and the unit reductions. About 3-4x faster; repeated texts are
     cached whole.
Errors take the slow road: the tokens are fed to Lark's interactive parser and its
exception is turned into a readable message (_fault_from).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .._resources import data_dir
from .._spans import Span
from .ast import FUNCTIONS, Node, children
from .builder import Builder, Fault
from .errors import ExprError, span_at
from .lexer import KEYWORDS, Scanner, Tok, token_start

#: Deeper expressions are refused at compile time, so that evaluating, printing and
#: walking a compiled expression can never hit Python's recursion limit.
MAX_DEPTH = 200


# --------------------------------------------------------------------------- the one parser


@dataclass(frozen=True)
class _Shape:
    """A reduction recorded while Lark parses a token-type sequence (see _shape)."""

    rule: str
    children: list[Any]  # Token (start_pos = its index), _Shape, or None


def _is_stand_in(child: Any) -> bool:
    # Lark refuses zero-width terminals, so only _shape feeds tokens with empty text
    return isinstance(child, _Shape) or (isinstance(child, Token) and not child)


class _Reduce(Transformer[Token, Any]):
    """Lark's inline transformer, for both uses of the one parser.

    Fed real tokens (a plain parse, an error being explained), each reduction builds
    its node with the Builder, so a Builder fault comes exactly where a plain parse
    meets it. Fed _shape's stand-in tokens, each reduction is recorded as a _Shape.
    """

    def __init__(self, builder: Builder) -> None:
        super().__init__()
        self._builder = builder

    def __default__(self, data: Any, children: list[Any], meta: Any) -> Any:
        build = getattr(self._builder, data, None)
        if build is None or any(_is_stand_in(c) for c in children):
            # stand-ins, or a rule Lark made up for a repetition: it splices the
            # children of that one into its parent's
            return _Shape(str(data), children)
        return build(children)


@functools.cache
def _builder() -> Builder:
    return Builder()


@functools.cache
def _parser() -> Lark:
    """The Lark parser of grammar/expr.lark, the only one built: the Scanner takes its
    terminals, _shape its LALR table, the plain parse and _syntax_fault all of it."""
    grammar = (data_dir("grammar") / "expr.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        transformer=_Reduce(_builder()),
    )


@functools.cache
def _scanner() -> Scanner:
    return Scanner(_parser())


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
            token_start(c) if isinstance(c, Token) else -1 if c is None else -2 - step_of[id(c)] for c in shape.children
        )
        step_of[id(shape)] = len(steps)
        steps.append((getattr(builder, shape.rule), sources))
    return tuple(steps)


def _replay(program: _Program, tokens: list[Tok]) -> Node:
    results: list[Any] = []
    for method, sources in program:
        args = [tokens[s] if s >= 0 else None if s == -1 else results[-2 - s] for s in sources]
        results.append(method(args))
    return typing.cast(Node, results[-1])


# --------------------------------------------------------------------------- faults

_OPERAND_START = frozenset({"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "NULL"})
_COMPARE_TOKENS = frozenset({"EQ", "NE", "LT", "LE", "GT", "GE", "IN"})
_TWO_CHAR_OPS = ("==", "!=", "<=", ">=")
_CHAR_HINTS = {
    "=": "use '==' to compare",
    "!": "use 'not' to negate, '!=' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
}


def _char_fault(text: str, i: int) -> Fault:
    """No token starts at ``text[i]``."""
    char = text[i]
    if char in "'\"":
        return Fault("unterminated string", i, f"close it with {char}")
    if text.startswith("${", i):
        return Fault("unexpected '${'", i, "inside when:/expect: write the expression without ${...}")
    if char in _CHAR_HINTS:
        return Fault(f"unexpected '{char}'", i, _CHAR_HINTS[char])
    shown = char if char.isprintable() else repr(char)[1:-1]
    return Fault(f"unexpected character '{shown}'", i)


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


def _syntax_fault(text: str, tokens: list[Tok], bad: int | None) -> Fault:
    """Explain why ``text`` does not parse, exactly as a plain Lark parse would: the first
    token Lark refuses, a Builder error on the way there (say an invalid escape in an
    earlier string) or, if all the tokens are fine, the character at ``bad`` that no token
    starts with."""
    parser = _parser().parse_interactive()
    try:
        for tok in tokens:
            parser.feed_token(tok.lark())
        if bad is not None:
            return _char_fault(text, bad)
        parser.feed_token(Token("$END", "", len(text)))
    except UnexpectedToken as exc:
        return _fault_from(text, exc)
    except Fault as fault:
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


def _fault_from(text: str, exc: UnexpectedToken) -> Fault:
    """Turn Lark's exception into a message an exam author can act on."""
    tok = exc.token
    if tok.type in ("NAME", "FIELD"):  # Lark's root lexer says FIELD for any identifier
        tok = Token(str(tok).upper() if str(tok) in KEYWORDS else "NAME", str(tok), tok.start_pos)
    expected = set(exc.expected)
    at_end = tok.type == "$END"
    pos = len(text.rstrip()) if at_end else token_start(tok)
    if expected & _OPERAND_START:
        before = _token_before(text, pos)
        if before is None:
            if at_end:
                return Fault("empty expression", pos)
            return Fault(f"unexpected {_describe(tok)}", pos, "an expression cannot start here")
        return Fault(f"expected an operand after '{before}'", pos)
    if "FIELD" in expected:
        return Fault("expected a field name after '.'", pos)
    if expected == {"IN"}:
        return Fault("expected 'in' after 'not'", pos)
    opener = _open_bracket(text, pos)
    closer = {"(": ")", "[": "]"}.get(opener or "")
    if at_end:
        if closer:
            return Fault(f"missing '{closer}'", pos)
        return Fault("unexpected end of expression", pos)  # not reachable with this grammar
    if tok.type in _COMPARE_TOKENS and not expected & _COMPARE_TOKENS:
        return Fault("comparisons cannot be chained", pos, "join them with 'and': a < b and b < c")
    if tok.type in _OPERAND_START or tok.type == "LSQB" and "LSQB" not in expected:
        return Fault(f"unexpected {_describe(tok)}", pos, "missing an operator?")
    if tok.type == "LPAR" and "LPAR" not in expected:
        return Fault("unexpected '('", pos, "only " + ", ".join(FUNCTIONS) + " can be called")
    if closer and tok.type in ("RPAR", "RSQB") and str(tok) != closer:
        return Fault(f"unexpected {_describe(tok)}", pos, f"expected '{closer}'")
    return Fault(f"unexpected {_describe(tok)}", pos)


def _check_depth(root: Node) -> None:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Fault(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", node.pos)
        stack.extend((child, depth + 1) for child in children(node))


# --------------------------------------------------------------------------- entry points


def _parse(text: str) -> Node:
    """Raises: Fault."""
    tokens, bad = _scanner().tokens(text)
    program = None if bad is not None else _shape(tuple(t.type for t in tokens))
    if program is None:
        raise _syntax_fault(text, tokens, bad)
    node = _replay(program, tokens)
    if len(tokens) > MAX_DEPTH:  # every node owns a token, so only then can it be too deep
        _check_depth(node)
    return node


@functools.lru_cache(maxsize=16384)
def _parse_cached(text: str) -> Node | Fault:
    """Parse ``text``; scenarios repeat expressions, and the AST holds no file position."""
    try:
        return _parse(text)
    except Fault as fault:
        return fault.with_traceback(None)  # cached: keep no frames alive


def parse_at(text: str, origin: Span, line_indent: int = 0) -> Node:
    """The AST of ``text``, whose first character is at ``origin`` in a file.

    Raises:
        ExprError: a syntax or compile-time error, positioned inside ``text``.
    """
    result = _parse_cached(text)
    if isinstance(result, Fault):
        span = span_at(origin, text, result.offset, line_indent)
        raise ExprError(result.message, span, result.hint, offset=result.offset)
    return result


def parse_ast(text: str) -> Node:
    """Parse ``text`` into an AST, without positions in a file.

    Raises:
        ExprError: a syntax error (positioned in file ``<expr>``).
    """
    return parse_at(text, Span("<expr>", 1, 1))


def parse_ast_with_lark(text: str) -> Node:
    """Parse ``text`` the plain way: Lark's own lexer and parser, the Builder inline.

    The reference the fast path (Scanner, _shape, _replay) is tested against; use
    parse_ast otherwise.

    Raises:
        ExprError: a syntax error (positioned in file ``<expr>``).
    """
    try:
        node = typing.cast(Node, _parser().parse(text))
        _check_depth(node)
    except UnexpectedCharacters as exc:
        fault = _char_fault(text, exc.pos_in_stream or 0)
    except UnexpectedToken as exc:
        fault = _fault_from(text, exc)
    except Fault as exc:
        fault = exc
    else:
        return node
    span = Span("<expr>", 1, 1 + fault.offset)
    raise ExprError(fault.message, span, fault.hint, offset=fault.offset)
