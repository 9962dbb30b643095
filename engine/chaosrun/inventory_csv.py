"""Parse stage for CSV inventories: one row per host, as a spreadsheet exports them.

```
env,role,host,port,user,identity,var.seat
cand-001,web,10.0.1.11,22,root,keys/exam_ed25519,12
cand-001,db,10.0.1.12,,,,12
```

The header names the columns, in any order: ``env``, ``role`` and ``host`` are required;
``port``, ``user``, ``identity``, ``known_hosts``, ``insecure`` and ``tmp_dir`` are
optional, and so is any ``var.NAME`` (the environment's ``env.vars.NAME``). An empty cell
is a value not given. Fields are separated by commas (by semicolons when the header has
no comma), and may be double-quoted (``""`` inside for a quote). Blank lines and lines
starting with ``#`` are skipped. Every error is at its row's line and its field's column.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from ._spans import ScenarioError, Span
from .inventory_model import (
    ENV_NAME,
    ENV_NAME_RULE,
    ROLE_NAME,
    ROLE_NAME_RULE,
    Environment,
    Inventory,
    InventoryFormat,
    absolute,
)
from .scenario import TargetSpec

REQUIRED = ("env", "role", "host")
HOST_COLUMNS = ("host", "port", "user", "identity", "known_hosts", "insecure", "tmp_dir")
COLUMNS = ("env", "role", *HOST_COLUMNS)
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_LINES = re.compile(r"\r\n|\n|\r")


@dataclass(frozen=True)
class _Field:
    text: str
    span: Span


class _CsvError(Exception):
    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.col = col  # 1-based


def split_row(line: str, sep: str) -> list[tuple[str, int]]:
    """The fields of one CSV line with the 1-based column each starts at.

    Raises:
        _CsvError: a quote not closed on the line, or text after a closing quote.
    """
    fields: list[tuple[str, int]] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t" and line[i] != sep:
            i += 1
        start = i
        if i < n and line[i] == '"':
            buf = []
            i += 1
            while True:
                if i >= n:
                    raise _CsvError("a quoted field that is not closed on its line", start + 1)
                if line[i] == '"':
                    if i + 1 < n and line[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(line[i])
                i += 1
            while i < n and line[i] in " \t" and line[i] != sep:
                i += 1
            if i < n and line[i] != sep:
                raise _CsvError(f"text after a quoted field (separate fields with {sep!r})", i + 1)
            fields.append(("".join(buf), start + 1))
        else:
            end = line.find(sep, i)
            end = n if end < 0 else end
            fields.append((line[i:end].strip(), start + 1))
            i = end
        if i >= n:
            return fields
        i += 1  # the separator


def csv_value(text: str) -> Any:
    """A ``var.NAME`` cell: a whole number is an int, ``true``/``false`` a boolean, the
    rest text (``0644`` stays text)."""
    if _INT.match(text):
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_csv_inventory(text: str, file: str, base_dir: str) -> tuple[Inventory | None, list[ScenarioError]]:
    """A CSV inventory (see the module's docstring); returns it and every error."""
    errors: list[ScenarioError] = []
    rows: list[tuple[int, list[tuple[str, int]]]] = []
    header: list[tuple[str, int]] | None = None
    header_line = 1
    sep = ","
    for lineno, raw in enumerate(_LINES.split(text.lstrip("\ufeff")), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if header is None:
            sep = "," if "," in raw or ";" not in raw else ";"
        try:
            fields = split_row(raw, sep)
        except _CsvError as exc:
            errors.append(ScenarioError(exc.message, Span(file, lineno, exc.col)))
            if header is None:
                return None, errors
            continue
        if header is None:
            header, header_line = fields, lineno
        else:
            rows.append((lineno, fields))
    if header is None:
        return None, [
            ScenarioError(
                f"an empty CSV inventory: the first line names the columns ({','.join(REQUIRED)},...)", Span(file, 1, 1)
            )
        ]
    columns = _columns(header, file, header_line, errors)
    if columns is None:
        return None, errors
    if not rows and not errors:
        errors.append(
            ScenarioError("no hosts: a CSV inventory has a row per host below its header", Span(file, header_line, 1))
        )
    envs: dict[str, _Env] = {}
    for lineno, fields in rows:
        _row(columns, fields, Span(file, lineno, 1), base_dir, envs, errors)
    environments = tuple(
        Environment(e.name, e.span, e.hosts, e.given, {k: f[0] for k, f in e.vars.items()}) for e in envs.values()
    )
    return Inventory(file, None, frozenset(), environments, InventoryFormat.CSV), errors


@dataclass
class _Env:
    name: str
    span: Span
    hosts: dict[str, TargetSpec]
    given: dict[str, frozenset[str]]
    vars: dict[str, tuple[Any, Span]]
    roles: dict[str, Span]


def _columns(header: list[tuple[str, int]], file: str, line: int, errors: list[ScenarioError]) -> list[str] | None:
    """The header's column names; None when a required one is missing."""
    names = []
    seen: dict[str, int] = {}
    for text, col in header:
        name = text.strip()
        key = name.lower() if not name.lower().startswith("var.") else "var." + name[4:]
        span = Span(file, line, col)
        if key in seen:
            errors.append(ScenarioError(f"column {name!r} twice (first at column {seen[key]})", span))
        elif key.startswith("var."):
            if not key[4:]:
                errors.append(ScenarioError("a var. column names its variable: var.NAME", span))
        elif key not in COLUMNS:
            close = difflib.get_close_matches(key, (*COLUMNS, "var.NAME"), n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
            known = ", ".join((*REQUIRED, *HOST_COLUMNS[1:], "var.NAME"))
            errors.append(ScenarioError(f"unknown column {name!r} (columns: {known})", span, hint))
        seen.setdefault(key, col)
        names.append(key)
    missing = [c for c in REQUIRED if c not in seen]
    if missing:
        errors.append(
            ScenarioError(
                f"the header lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                Span(file, line, 1),
                "the first line names the columns: env,role,host,port,user,identity",
            )
        )
        return None
    return names


def _row(
    columns: list[str],
    fields: list[tuple[str, int]],
    row: Span,
    base_dir: str,
    envs: dict[str, _Env],
    errors: list[ScenarioError],
) -> None:
    if len(fields) != len(columns):
        at = fields[len(columns)][1] if len(fields) > len(columns) else row.col
        errors.append(
            ScenarioError(f"this row has {len(fields)} fields, the header {len(columns)}", Span(row.file, row.line, at))
        )
        return
    cells = {c: _Field(text, Span(row.file, row.line, col)) for c, (text, col) in zip(columns, fields, strict=True)}
    bad = False
    for column in REQUIRED:
        if not cells[column].text:
            errors.append(ScenarioError(f"{column}: empty (every row needs env, role and host)", cells[column].span))
            bad = True
    env_cell, role_cell = cells["env"], cells["role"]
    if env_cell.text and not ENV_NAME.match(env_cell.text):
        errors.append(ScenarioError(f"{ENV_NAME_RULE}: {env_cell.text!r}", env_cell.span))
        bad = True
    if role_cell.text and (not ROLE_NAME.match(role_cell.text) or role_cell.text == "vars"):
        rule = "'vars' is not a role name" if role_cell.text == "vars" else f"{ROLE_NAME_RULE}: {role_cell.text!r}"
        errors.append(ScenarioError(rule, role_cell.span))
        bad = True
    keys: dict[str, Any] = {}
    for column in HOST_COLUMNS:
        cell = cells.get(column)
        if cell is None or not cell.text:
            continue
        try:
            keys[column] = _host_value(column, cell.text)
        except ValueError as exc:
            errors.append(ScenarioError(f"{column}: {exc}", cell.span))
            bad = True
    if bad:
        return
    env = envs.get(env_cell.text)
    if env is None:
        env = envs[env_cell.text] = _Env(env_cell.text, env_cell.span, {}, {}, {}, {})
    role = role_cell.text
    if role in env.roles:
        where = env.roles[role]
        errors.append(
            ScenarioError(
                f"environment {env.name!r} has role {role!r} twice (first at line {where.line})", role_cell.span
            )
        )
        return
    env.roles[role] = role_cell.span
    for column, cell in cells.items():
        if not column.startswith("var.") or not cell.text:
            continue
        name, value = column[4:], csv_value(cell.text)
        if name in env.vars and env.vars[name][0] != value:
            first, where = env.vars[name]
            errors.append(
                ScenarioError(
                    f"environment {env.name!r}: var.{name} is {value!r} here, {first!r} at line {where.line}",
                    cell.span,
                    "the rows of one environment agree on its variables; an empty cell gives none",
                )
            )
            continue
        env.vars.setdefault(name, (value, cell.span))
    env.hosts[role] = TargetSpec(
        role=role,
        host=keys["host"],
        span=cells["host"].span,
        port=keys.get("port", 22),
        user=keys.get("user", "root"),
        identity=absolute(keys.get("identity"), base_dir),
        known_hosts=absolute(keys.get("known_hosts"), base_dir),
        insecure=keys.get("insecure", False),
        tmp_dir=keys.get("tmp_dir", "/tmp"),
    )
    env.given[role] = frozenset(keys)


def _host_value(column: str, text: str) -> Any:
    if column == "port":
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ValueError(f"a port is a number from 1 to 65535, got {text!r}")
        return int(text)
    if column == "insecure":
        if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "yes", "1")
    if column == "tmp_dir" and not text.startswith("/"):
        raise ValueError(f"tmp_dir must be an absolute path, got {text!r}")
    return text
