"""Parse stage, expression tokens: the fast path's scanner, with the terminals of grammar/expr.lark."""

from __future__ import annotations

import re
import typing

from lark import Lark, Token

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})


class Tok:
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


AnyToken = Token | Tok  # Lark's (reference parse, errors) or ours (fast path)


def token_start(tok: AnyToken) -> int:
    return tok.start_pos or 0


class Scanner:
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

    def tokens(self, text: str) -> tuple[list[Tok], int | None]:
        """The tokens of ``text``, up to the first character no token starts with (an
        unterminated string, a stray ``@``), and that character's offset or None."""
        out: list[Tok] = []
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
            out.append(Tok(kind, m[0], m.start()))
            after_dot = kind == "DOT"
        return out, None
