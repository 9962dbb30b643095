"""Regular expressions with one syntax everywhere: RE2, the syntax of Go's ``regexp``.

The Go modules compile the patterns a scenario hands them with Go's regexp; lint checks
them here with RE2 (google-re2) before any candidate runs, and ``matches()`` evaluates
with it on the monitor. No look-arounds, no back-references, ``\\z`` not ``\\Z``
(docs/expressions.md).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, cast

#: What a message about a refused pattern adds.
RE2_HINT = "patterns are RE2 (Go's regexp): no look-arounds or back-references; \\z, not \\Z"


class Pattern(Protocol):
    def search(self, text: str) -> Any: ...


class RegexError(ValueError):
    """A pattern RE2 does not accept; the message is RE2's (``missing ]: [a-``)."""


@functools.cache
def _options() -> Any:
    import re2  # loaded with the first pattern: a run whose scenario has none does not pay for it

    options = re2.Options()
    options.log_errors = False  # RE2 would print each error on stderr besides raising it
    return options


@functools.lru_cache(maxsize=512)
def compile_re2(pattern: str) -> Pattern:
    """``pattern`` compiled with RE2 (cached).

    Raises:
        RegexError: RE2 refuses it.
    """
    import re2

    try:
        return cast(Pattern, re2.compile(pattern, _options()))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise RegexError(text if len(text) <= 100 else text[:97] + "...") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise RegexError(str(exc)) from None


def re2_error(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern``, or None when it compiles."""
    try:
        compile_re2(pattern)
    except RegexError as exc:
        return str(exc)
    return None
