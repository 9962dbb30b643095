"""``--limit PATTERN``: which environments of an inventory a command acts on.

A pattern is a comma list of environment names, shell globs (``cand-0*``) and the sets a
past run left behind: ``@failed`` (environments whose run or grade did not end ``ok``,
and those it never finished) and ``@suspect`` (integrity ``suspect``), read from the newest
audit log in the audit folder, or from the log named after a colon
(``@failed:audit/2026-12-01T10-00-00Z.jsonl``). Picks of ``one_of`` are made on the whole
inventory before the limit applies, so a re-run of some candidates gives each the same
fault as before.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import EXIT_USAGE, ChaosrunError

__all__ = ["LimitError", "past_run", "past_seed", "select"]

SETS = ("@failed", "@suspect")


class LimitError(ChaosrunError):
    """A ``--limit`` that names nothing, or a past run that cannot be read (exit 2)."""

    exit_code = EXIT_USAGE


def _newest_log(audit_dir: Path) -> Path:
    logs = [p for p in audit_dir.glob("*.jsonl") if p.is_file()]
    if not logs:
        raise LimitError(f"--limit: no audit log in {audit_dir} to take @failed or @suspect from")
    return max(logs, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _log_of(item: str, audit_dir: Path) -> Path:
    _, sep, log = item.partition(":")
    return Path(log) if sep else _newest_log(audit_dir)


def past_seed(pattern: str, audit_dir: Path) -> int | None:
    """The seed of the past run a pattern's first ``@failed``/``@suspect`` reads, so that a
    re-run without ``--seed`` deals every candidate the same ``one_of`` picks; None when the
    pattern names no past run (or its log has no seed)."""
    for item in (i.strip() for i in pattern.split(",")):
        if item.partition(":")[0] in SETS:
            path = _log_of(item, audit_dir)
            try:
                with path.open(encoding="utf-8") as fh:
                    seed = json.loads(fh.readline()).get("seed")
            except (OSError, ValueError, AttributeError):
                return None
            return seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    return None


def past_run(path: Path) -> dict[str, set[str]]:
    """``{"@failed": names, "@suspect": names}`` of the run an audit log records; an
    environment of its plan without an ``env_end`` (a run cut short) counts as failed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LimitError(f"--limit: cannot read {path}: {exc.strerror or exc}") from None
    planned: list[str] = []
    ended: dict[str, dict[str, object]] = {}
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the last line of a log whose writer was killed mid-write
            raise LimitError(f"--limit: {path}:{number}: not an audit record") from None
        event = record.get("event") if isinstance(record, dict) else None
        if number == 1 and event != "run_start":
            raise LimitError(f"--limit: {path} is not a chaosrun audit log (it does not start with run_start)")
        if event == "run_start":
            planned = [str(e.get("name")) for e in record.get("plan", {}).get("environments", [])]
        elif event == "env_end" and isinstance(record.get("env"), str):
            ended[record["env"]] = record
    failed = {name for name in planned if name not in ended or ended[name].get("ok") is not True}
    suspect = {name for name, r in ended.items() if r.get("integrity") == "suspect"}
    return {"@failed": failed, "@suspect": suspect}


def select(names: Sequence[str], pattern: str, audit_dir: Path) -> list[str]:
    """The environments of ``names`` (in their order) that ``pattern`` selects.

    Raises:
        LimitError: an item names no environment, or the whole pattern selects none.
    """
    wanted: set[str] = set()
    items = [item.strip() for item in pattern.split(",")]
    if not any(items):
        raise LimitError("--limit: empty pattern (give names, globs, @failed or @suspect)")
    for item in filter(None, items):
        which = item.partition(":")[0]
        if which in SETS:
            found = past_run(_log_of(item, audit_dir))[which]
            wanted |= found & set(names)
        elif which.startswith("@"):
            raise LimitError(f"--limit: unknown set {which!r} (sets: {', '.join(SETS)})")
        elif any(c in item for c in "*?["):
            matched = fnmatch.filter(names, item)
            if not matched:
                raise LimitError(f"--limit: {item!r} matches no environment of the inventory")
            wanted |= set(matched)
        elif item in names:
            wanted.add(item)
        else:
            close = difflib.get_close_matches(item, list(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LimitError(f"--limit: no environment {item!r} in the inventory{hint}")
    chosen = [n for n in names if n in wanted]
    if not chosen:
        raise LimitError(f"--limit {pattern}: selects no environment ({_sets_said(items)})")
    return chosen


def _sets_said(items: Iterable[str]) -> str:
    sets = [i.partition(":")[0] for i in items if i.startswith("@")]
    return "the past run has none " + " or ".join(sets) if sets else "nothing matched"
