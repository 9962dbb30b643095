"""Parse stage for Ansible INI inventories, read without Ansible (``inventory_ansible.py``
merges what they define): ``[group]`` sections of hosts, one per line with ``key=value``
variables; ``[group:vars]``; ``[group:children]``; hosts before the first section are
``ungrouped``. Values are read as Ansible reads them: the shell's quoting, then a Python
literal when the text is one (``42``, ``True``, ``'text'``), else the text.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ._spans import ScenarioError, Span
from .inventory_ansible import SPECIAL_GROUPS, VAR_NAME, Builder, Var
from .inventory_model import Inventory, InventoryFormat

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?$")
_LINES = re.compile(r"\r\n|\n|\r")


_QUOTING = re.compile(r"""['"\\]""")
_WORD = re.compile(r"\S+")
_PLAIN_INT = re.compile(r"^(0|[1-9][0-9]*)$")
# text no Python literal starts like: a letter not before a quote (b'', r''), a slash, or
# dotted digits (an address)
_NOT_LITERAL = re.compile(r"""^(?:[A-Za-z_](?!['"])|/|[0-9]+\.[0-9]+\.)""")


class _SyntaxError(Exception):
    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.col = col  # 0-based


def _tokens(line: str) -> list[tuple[str, int, str]]:
    """A host line split as the shell splits it (Ansible uses shlex): (text, 0-based
    column, raw text) per word; ``#`` outside quotes starts a comment."""
    if not _QUOTING.search(line):  # most lines: words and a comment, nothing to unquote
        return [(m.group(), m.start(), m.group()) for m in _WORD.finditer(line.partition("#")[0])]
    out = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        if line[i] == "#":
            break
        start = i
        buf = []
        while i < n and not line[i].isspace():
            c = line[i]
            if c == "#":
                break
            if c in "'\"":
                j = i + 1
                while j < n and line[j] != c:
                    if c == '"' and line[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(line[j])
                    j += 1
                if j >= n:
                    raise _SyntaxError(f"a {c} quote that is not closed on this line", i)
                i = j + 1
            elif c == "\\" and i + 1 < n:
                buf.append(line[i + 1])
                i += 2
            else:
                buf.append(c)
                i += 1
        out.append(("".join(buf), start, line[start:i]))
        if i < n and line[i] == "#":
            break
    return out


def _literal(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal when it is one, else text."""
    if _PLAIN_INT.match(text):
        return int(text)
    if _NOT_LITERAL.match(text) and text not in ("True", "False", "None"):
        return text  # a name, a path, an address: compiling it would only say so, slowly
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _plain(value, text)


def _plain(value: Any, text: str) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        return [_plain(v, text) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, text) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return text  # bytes, complex, sets: the text as written


def _strip_comment(text: str) -> str:
    """``text`` up to a ``#`` that follows a space outside quotes."""
    quote = None
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text


def parse_ini_inventory(
    text: str, file: str, base_dir: str, env_per: str
) -> tuple[Inventory | None, list[ScenarioError]]:
    """An Ansible INI inventory: ``[group]`` (hosts, one per line, with ``key=value``
    variables), ``[group:vars]`` (``key=value``), ``[group:children]`` (group names);
    lines before the first section are hosts of ``ungrouped``."""
    b = Builder(file, base_dir, InventoryFormat.ANSIBLE_INI)
    kind, group = "hosts", "ungrouped"
    pending_vars: dict[str, Span] = {}  # [g:vars] of a group not (yet) defined
    pending_children: dict[str, Span] = {}  # a child not (yet) defined
    defined: set[str] = set(SPECIAL_GROUPS)
    for lineno, raw in enumerate(_LINES.split(text.lstrip("\ufeff")), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        col = len(raw) - len(raw.lstrip()) + 1
        if line.startswith("["):
            match = _SECTION.match(line)
            if match is None:
                b.error(
                    f"not a section: {line!r}",
                    Span(file, lineno, col),
                    "a section is [group], [group:vars] or [group:children], without spaces",
                )
                kind = "skip"
                continue
            name, modifier = match.group(1), match.group(2) or "hosts"
            span = Span(file, lineno, col + 1)
            if modifier not in ("hosts", "vars", "children"):
                where = Span(file, lineno, col + 2 + len(name))
                b.error(
                    f"unknown section type {modifier!r} (a section is [group], [group:vars] or [group:children])", where
                )
                kind = "skip"
                continue
            if not b.group_name_ok(name, span):
                kind = "skip"
                continue
            kind, group = modifier, name
            if modifier == "vars":
                if name not in defined:
                    pending_vars.setdefault(name, span)
            else:
                b.group(name, span)
                defined.add(name)
                pending_children.pop(name, None)
            continue
        if kind == "skip":
            continue
        if kind == "vars":
            _ini_var(b, group, raw, Span(file, lineno, col))
        elif kind == "children":
            _ini_child(b, group, raw, lineno, pending_children, defined)
        else:
            _ini_host(b, group, raw, lineno)
    for name, span in pending_vars.items():
        if name not in defined:
            b.error(f"[{name}:vars] is for a group this inventory does not define", span)
    for name, span in pending_children.items():
        b.error(f"child group {name!r} is not defined (give it a [{name}] or [{name}:children] section)", span)
    return b.finish(env_per)


def _ini_var(b: Builder, group: str, raw: str, span: Span) -> None:
    line = raw.strip()
    key, sep, value = line.partition("=")
    key = key.strip()
    if not sep:
        b.error(f"expected key=value, got {line!r}", span)
        return
    if not VAR_NAME.match(key):
        b.error(f"not a variable name: {key!r}", span)
        return
    value_col = span.col + len(line) - len(value.lstrip()) if value.strip() else span.col + len(line)
    b.group(group, span).vars[key] = Var(_literal(_strip_comment(value.strip())), Span(span.file, span.line, value_col))


def _ini_child(b: Builder, group: str, raw: str, lineno: int, pending: dict[str, Span], defined: set[str]) -> None:
    try:
        tokens = _tokens(raw)
    except _SyntaxError as exc:
        b.error(exc.message, Span(b.file, lineno, exc.col + 1))
        return
    name, col, _ = tokens[0]
    span = Span(b.file, lineno, col + 1)
    if len(tokens) > 1:
        b.error("one group name per line in a [group:children] section", Span(b.file, lineno, tokens[1][1] + 1))
        return
    if not b.group_name_ok(name, span):
        return
    if name not in defined:
        pending.setdefault(name, span)
    b.group(name, span)
    b.groups[group].children.setdefault(name, span)


def _ini_host(b: Builder, group: str, raw: str, lineno: int) -> None:
    try:
        tokens = _tokens(raw)
    except _SyntaxError as exc:
        b.error(exc.message, Span(b.file, lineno, exc.col + 1))
        return
    if not tokens:
        return
    pattern, col, _ = tokens[0]
    host_vars: dict[str, Var] = {}
    for text, at, raw_token in tokens[1:]:
        key, sep, value = text.partition("=")
        span = Span(b.file, lineno, at + 1)
        if not sep:
            b.error(f"expected key=value after the host name, got {raw_token!r}", span)
            continue
        if not VAR_NAME.match(key):
            b.error(f"not a variable name: {key!r}", span)
            continue
        value_at = at + raw_token.find("=") + 2 if "=" in raw_token else at + 1
        host_vars[key] = Var(_literal(value), Span(b.file, lineno, value_at))
    b.add_hosts(group, pattern, Span(b.file, lineno, col + 1), host_vars)
