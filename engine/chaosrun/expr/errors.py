"""Parse stage, what needs no parser: ``ExprError`` and file positions inside an expression.

Kept apart from ``parse`` (Lark) so that a scenario already compiled -- read back from the
cache of linted scenarios -- evaluates and reports without importing the parser.
"""

from __future__ import annotations

from .._spans import ScenarioError, Span


class ExprError(ScenarioError):
    """A syntax or compile-time error in an expression, at its position in the file.

    ``offset`` is the character index of the error inside the compiled text.
    """

    def __init__(self, message: str, span: Span, hint: str | None = None, *, offset: int = 0) -> None:
        super().__init__(message, span, hint)
        self.offset = offset


def span_at(origin: Span, text: str, offset: int, line_indent: int = 0) -> Span:
    """The file position of ``text[offset]``, where ``text[0]`` is at ``origin``."""
    line_offset = text.count("\n", 0, offset)
    if line_offset == 0:
        return Span(origin.file, origin.line, origin.col + offset)
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1 + line_indent
    return Span(origin.file, origin.line + line_offset, col)
