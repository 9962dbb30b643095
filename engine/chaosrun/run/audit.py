"""Audit stage: the tamper-evident record of a run.

JSON Lines, one file per run, append-only. Every record carries ``prev``, the SHA-256 of
the previous line's bytes, so editing, deleting or reordering a line breaks the chain at
a findable place. A record is durable (written and fsync'd) before ``record()`` returns:
if it cannot be written, ``record()`` raises and the step that wanted it fails (fail
closed). Writes are group-committed by one writer task, so 200 environments writing at
once cost one fsync per batch, not one per record; ``defer()`` lets a record ride along
with the next ``record()`` where nothing happens in between that the log must precede.

Secrets never enter the log: callers pass token ids, never tokens or keys, and
:func:`clean` bounds every string a module (or a candidate) could have influenced.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import EXIT_USAGE, ChaosrunError
from . import signing

_LOG = logging.getLogger("chaosrun.audit")
_ENVELOPE = frozenset({"seq", "ts", "run", "event", "prev", "env", "step", "plan"})

GENESIS = "0" * 64
MAX_STRING = 4096
MAX_ITEMS = 200


class AuditError(ChaosrunError):
    """The audit log could not be written: the run must not go on as if it had been."""


class LogError(ChaosrunError):
    """An audit log that cannot be read back, or cannot be trusted (exit 2)."""

    exit_code = EXIT_USAGE


_SCALARS = (bool, int, float)  # a tuple: isinstance checks it faster than a union


def clean(value: Any, depth: int = 0, items: int | None = MAX_ITEMS) -> Any:
    """JSON-safe copy of untrusted data with bounded size (strings, lists, depth); with
    ``items=None`` mappings and lists keep every item (the run's own records, below)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING else value[:MAX_STRING] + f"...[{len(value) - MAX_STRING} more chars]"
    if value is None or isinstance(value, _SCALARS):
        return value
    if depth > 8:
        return "...[too deep]"
    if isinstance(value, Mapping):  # the first MAX_ITEMS, without copying the rest first
        return {str(k)[:200]: clean(v, depth + 1, items) for k, v in islice(value.items(), items)}
    if isinstance(value, list | tuple):
        return [clean(v, depth + 1, items) for v in islice(value, items)]
    return clean(str(value), depth, items)


#: Records whose mappings and lists hold one entry per environment (the plan of
#: ``run_start``, the outcomes of ``run_end``): every entry is kept, however big the room
#: (restore and ``--limit`` read them); strings and depth stay bounded.
WHOLE_ROOM = frozenset({"run_start", "run_end"})


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


# What json.dumps(record, separators=(",", ":"), ensure_ascii=True) makes, without building
# an encoder per record.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, sort_keys=False)


def encode(record: Mapping[str, Any]) -> bytes:
    """One record as the exact bytes written (without the newline)."""
    return _ENCODER.encode(record).encode()


@dataclass
class _Pending:
    line: bytes
    done: trio.Event
    error: BaseException | None = None


class AuditLog:
    """An open audit log. Use :func:`open_audit`; ``record()`` from any trio task."""

    def __init__(self, path: Path, run_id: str, fh: Any) -> None:
        self.path = path
        self.run_id = run_id
        self._fh = fh
        self._prev = GENESIS
        self._seq = 0
        self._queue: list[_Pending] = []
        self._wakeup = trio.Event()
        self._failed: BaseException | None = None
        self._last: _Pending | None = None  # the newest record appended
        self.count = 0

    async def record(self, event: str, **fields: Any) -> None:
        """Append one record and wait until it is on disk (with every record before it).

        Raises:
            AuditError: the record could not be written (disk full, I/O error, closed).
        """
        pending = self._append(event, fields)
        self._wakeup.set()
        with trio.CancelScope(shield=True):  # a cancelled step still waits for its record
            await pending.done.wait()
        if pending.error is not None:
            raise AuditError(f"cannot write audit log {self.path}: {pending.error}") from pending.error

    def defer(self, event: str, **fields: Any) -> None:
        """Append one record now (its place in the chain is fixed) without waiting for the
        disk: it is written and fsync'd together with the next ``record()`` (group commit),
        which waits for both and raises if either could not be written.

        For a record after which the caller does nothing outside the monitor before its next
        ``record()`` (e.g. ``step_start`` before ``listen``, ``result`` before ``step_end``):
        durability is then the same as with ``record()``, one fsync wait fewer.

        Raises:
            AuditError: the log failed earlier.
        """
        self._append(event, fields)

    async def sync(self) -> None:
        """Wait until every record appended so far (``defer()`` included) is on disk.

        Raises:
            AuditError: one of them could not be written.
        """
        last = self._last
        if last is None:
            return
        if not last.done.is_set():
            self._wakeup.set()
            with trio.CancelScope(shield=True):
                await last.done.wait()
        if last.error is not None:
            raise AuditError(f"cannot write audit log {self.path}: {last.error}") from last.error

    def _append(self, event: str, fields: Mapping[str, Any]) -> _Pending:
        if self._failed is not None:
            raise AuditError(f"audit log {self.path} failed earlier: {self._failed}")
        record: dict[str, Any] = {
            "seq": self._seq,
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "run": self.run_id,
            "event": event,
        }
        record.update(clean(fields, items=None if event in WHOLE_ROOM else MAX_ITEMS))
        record["prev"] = self._prev
        line = encode(record)
        self._prev = line_hash(line)
        self._seq += 1
        if _LOG.isEnabledFor(logging.DEBUG):  # -v, --log-file: one line per record
            _LOG.debug("%s", describe(record))
        pending = _Pending(line, trio.Event())
        self._queue.append(pending)
        self._last = pending
        return pending

    @property
    def last_hash(self) -> str:
        return self._prev

    def _write_batch(self, lines: list[bytes]) -> None:
        self._fh.write(b"".join(line + b"\n" for line in lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    async def _writer(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            error: BaseException | None = self._failed
            if error is None:
                try:
                    await trio.to_thread.run_sync(self._write_batch, [p.line for p in batch])
                except (OSError, ValueError) as exc:  # ValueError: the file was closed under us
                    error = self._failed = exc
                else:
                    self.count += len(batch)
            for p in batch:
                p.error = error
                p.done.set()

    async def _drain(self) -> None:
        while self._queue:
            await trio.sleep(0)
            self._wakeup.set()
            await trio.sleep(0.001)


@asynccontextmanager
async def open_audit(
    directory: Path, run_id: str, *, name: str | None = None, key: Ed25519PrivateKey | None = None
) -> AsyncIterator[AuditLog]:
    """Create ``DIR/<name or run id>.jsonl`` (never overwriting) and its writer task.

    With ``key``, the log is closed by a ``seal`` record: the hash of the record before
    it, signed with the monitor's Ed25519 key, so truncation and re-chaining show.

    Raises:
        AuditError: the directory or file cannot be created.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name or run_id}.jsonl"
        fh = open(path, "xb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise AuditError(f"cannot create audit log in {directory}: {exc.strerror or exc}") from None
    log = AuditLog(path, run_id, fh)
    # The block's own error leaves as itself, not wrapped in the writer nursery's
    # ExceptionGroup, so callers can catch e.g. RunError (cancellation passes as usual).
    error: Exception | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(log._writer)
            try:
                yield log
            except Exception as exc:
                error = exc
            finally:
                with trio.CancelScope(shield=True):
                    if key is not None and log._failed is None:
                        public = key.public_key()
                        await log.record(
                            "seal",
                            head=log.last_hash,
                            key_id=signing.key_id(public),
                            public_key=signing.public_b64(public),
                            sig=signing.sign(key, log.last_hash),
                        )
                    await log._drain()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the writer failed too: keep both
        if error is None:
            raise
        raise BaseExceptionGroup("audit log failed", [error, *group.exceptions]) from None
    finally:
        fh.close()
    if error is not None:
        raise error


def read_intact(path: Path, why: str = "") -> tuple[list[dict[str, Any]], bool]:
    """The whole records of an audit log whose hash chain holds, and whether it is sealed.

    A log the monitor never sealed (it was killed) is read up to its last whole record: the
    torn last line of a writer killed mid-write is left out. ``why`` ends the message of a
    broken chain (what the caller does not trust it for).

    Raises:
        LogError: unreadable, not JSON records, a broken chain, or not a chaosrun log.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LogError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    lines.pop()  # b"" after the last newline, or the torn last line
    records: list[dict[str, Any]] = []
    prev = GENESIS
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise LogError(f"{path}:{number}: not a JSON record") from None
        if not isinstance(record, dict) or record.get("seq") != number - 1 or record.get("prev") != prev:
            raise LogError(f"{path}:{number}: hash chain broken: this record or the one before it was altered{why}")
        prev = line_hash(line)
        records.append(record)
    if not records or records[0].get("event") != "run_start":
        raise LogError(f"{path} is not a chaosrun audit log (it does not start with run_start)")
    return records, records[-1].get("event") == "seal"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    message: str
    line: int | None = None  # 1-based line of the first broken record
    key_id: str | None = None  # the key whose signature on the seal holds
    # intact, but sealed by a key nobody said to trust (ok is then False): see auditcheck
    untrusted: bool = False


def _is_json(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _where_it_stopped(records: list[dict[str, Any]]) -> str:
    """For a log that was never sealed: its run, its last record, and what was under way
    then (steps started and not ended, environments not ended), so an operator knows what
    may have been applied on which machine."""
    if not records:
        return ""
    last = records[-1]
    running: dict[str, list[str]] = {}
    ended_envs = set()
    planned: list[str] = []
    for r in records:
        event, env, step = r.get("event"), r.get("env"), r.get("step")
        if event == "run_start":
            planned = [str(e.get("name")) for e in r.get("plan", {}).get("environments", []) if isinstance(e, dict)]
        elif event == "step_start" and isinstance(env, str) and isinstance(step, str):
            running.setdefault(env, []).append(step)
        elif event == "step_end" and isinstance(env, str) and step in running.get(env, []):
            running[env].remove(step)
        elif event == "env_end" and isinstance(env, str):
            ended_envs.add(env)
    in_flight = [f"{env}/{step}" for env, steps in running.items() for step in steps]
    unfinished = [e for e in planned if e not in ended_envs]
    said = f"; run {records[0].get('run', '?')}, last record seq {last.get('seq')}"
    said += f" ({last.get('event')} at {last.get('ts')})"
    said += f"; steps in flight: {', '.join(in_flight[:20]) or 'none'}" + (" ..." if len(in_flight) > 20 else "")
    if unfinished:
        said += f"; environments not finished: {len(unfinished)} of {len(planned)} ({', '.join(unfinished[:10])}"
        said += " ...)" if len(unfinished) > 10 else ")"
    return said


def verify_file(path: Path, trusted: Ed25519PublicKey | None = None) -> Verdict:
    """Check the hash chain and the seal of an audit log; name the first record where
    it breaks. With ``trusted``, the seal must be signed by that key.

    Without ``trusted`` the seal is checked against the key embedded in it, which proves
    the log intact but not who sealed it: whoever rewrites a log can re-seal it with a key
    of their own. :func:`chaosrun.auditcheck.verify_audit_log` decides whom to trust.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Verdict(False, 0, f"cannot read {path}: {exc.strerror or exc}")
    if not data:
        return Verdict(False, 0, f"{path}: empty audit log")
    if not data.endswith(b"\n"):
        lines = data.split(b"\n")
        whole = [json.loads(x) for x in lines[:-1] if _is_json(x)]
        return Verdict(
            False,
            len(lines) - 1,
            f"{path}:{len(lines)}: truncated record (no newline at end of file){_where_it_stopped(whole)}",
            len(lines),
        )
    prev = GENESIS
    lines = data[:-1].split(b"\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            return Verdict(False, number - 1, f"{path}:{number}: not a JSON record", number)
        if not isinstance(record, dict):
            return Verdict(False, number - 1, f"{path}:{number}: not a JSON object", number)
        if record.get("seq") != number - 1:
            return Verdict(
                False,
                number - 1,
                f"{path}:{number}: record out of sequence (seq {record.get('seq')}, expected {number - 1}): "
                "a record was deleted, inserted or moved",
                number,
            )
        if record.get("prev") != prev:
            return Verdict(
                False,
                number - 1,
                f"{path}:{number}: hash chain broken: this record or the one before it was altered",
                number,
            )
        last_prev, prev = prev, line_hash(line)
        records.append(record)
    n = len(lines)
    if record.get("event") != "seal":
        return Verdict(
            False,
            n,
            f"{path}:{n}: log ends without its signed seal record: truncated, or the run is still going"
            + _where_it_stopped(records),
            n,
        )
    if n < 2 or json.loads(lines[-2]).get("event") != "run_end":
        return Verdict(False, n, f"{path}:{n}: the seal does not follow a run_end record", n)
    if record.get("head") != last_prev:
        return Verdict(False, n, f"{path}:{n}: the seal signs another head than the record before it", n)
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(record.get("public_key", ""))))
    except (ValueError, binascii.Error):
        return Verdict(False, n, f"{path}:{n}: the seal's public key is malformed", n)
    if not signing.check(public, last_prev, str(record.get("sig", ""))):
        return Verdict(False, n, f"{path}:{n}: bad signature on the seal", n)
    if trusted is not None and signing.public_b64(trusted) != signing.public_b64(public):  # the whole key, not its id
        return Verdict(
            False,
            n,
            f"{path}:{n}: signed by key {signing.key_id(public)}, not the trusted key {signing.key_id(trusted)}",
            n,
            signing.key_id(public),
        )
    who = (
        f"trusted key {signing.key_id(public)}"
        if trusted is not None
        else (f"key {signing.key_id(public)} (embedded; pass --key to check it is the monitor's)")
    )
    return Verdict(True, n, f"{path}: OK, {n} records, chain intact, sealed by {who}", key_id=signing.key_id(public))


def describe(record: Mapping[str, Any]) -> str:
    """One line for the log: ``cand-001 kill_web deploy host="root@..." size=2801664``.

    Values are JSON (escaped: a target's text cannot paint a terminal) and cut at 120
    characters; the run's plan is left out (it is in the audit log).
    """
    where = " ".join(str(record[k]) for k in ("env", "step") if isinstance(record.get(k), str))
    fields = " ".join(
        f"{k}={json.dumps(v, ensure_ascii=True, default=str)[:120]}" for k, v in record.items() if k not in _ENVELOPE
    )
    return " ".join(part for part in (where, str(record.get("event")), fields) if part)
