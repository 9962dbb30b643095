"""Run stage: a repair, the shell of a scenario's ``solution`` or of one of its ``shortcuts``,
run on each of its roles' machines, every environment, through the connection seam, and
recorded in an audit log of its own (for ``chaosrun test`` and ``chaosrun demo --lab``):
``run_start`` (section ``repair``), per role ``repair`` and ``repair_end``, ``run_end``, the
seal; ``chaosrun audit verify`` checks it like any run's.

The shell is run as ``sh -es`` with the script on its stdin: the first failing command stops
it and fails the repair. The audit log holds the script's SHA-256 (not its text: the
scenario has it), how it ended, and the tails of its output.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import trio

from ..errors import ChaosrunError
from ..plan import Plan
from ..scenario import Repair
from .audit import clean, open_audit
from .connection import Connector
from .runner import default_connector
from .signing import load_or_create_key

__all__ = ["REPAIR_TIMEOUT", "run_repair"]

REPAIR_TIMEOUT = 300.0  # seconds one role's repair shell may take
TAIL = 2000  # characters of a repair's output kept in the audit log
CONNECT_TIMEOUT = 10.0


def run_repair(
    plan: Plan,
    repair: Repair,
    audit_dir: Path,
    run_id: str,
    *,
    track: str,
    key_path: Path | None = None,
    connector: Connector | None = None,
) -> tuple[list[str], Path]:
    """Run ``repair`` on every environment of ``plan`` and record it in
    ``audit_dir/<run_id>.jsonl``, sealed with the monitor's key.

    Returns:
        What failed, one line each (``lab-1/web: exit 1: chmod: cannot access ...``),
        and the audit log's path.

    Raises:
        AuditError: the audit log could not be written.
    """
    key = load_or_create_key(key_path)
    failures: list[str] = []
    path = audit_dir / f"{run_id}.jsonl"

    async def main() -> None:
        conn_source = connector or default_connector()
        async with open_audit(audit_dir, run_id, key=key) as audit, conn_source.open_shared():
            await audit.record(
                "run_start",
                section="repair",
                track=track,
                repair=repair.name,
                scenario=plan.scenario.file,
                scenario_sha256=plan.scenario.sha256,
                environments=len(plan.environments),
                connector=conn_source.name,
            )
            for env in plan.environments:
                for role, script in repair.scripts.items():
                    failure = await _one(audit, conn_source, env.name, role, env.targets.get(role), script)
                    if failure:
                        failures.append(f"{env.name}/{role}: {failure}")
            await audit.record("run_end", ok=not failures, failures=failures)

    trio.run(main)
    return failures, path


async def _one(audit: Any, connector: Connector, env: str, role: str, target: Any, script: str) -> str | None:
    if target is None:
        return "the environment has no such role"
    digest = hashlib.sha256(script.encode()).hexdigest()
    started = time.monotonic()
    try:
        async with connector.open_connection(target, connect_timeout=CONNECT_TIMEOUT) as conn:
            await audit.record("repair", env=env, role=role, host=conn.label, script_sha256=digest)
            done = await conn.run("sh -es", input=script.encode(), timeout=REPAIR_TIMEOUT)
    except ChaosrunError as exc:
        await audit.record("repair_end", env=env, role=role, ok=False, error=str(exc))
        return str(exc)
    out = done.stdout.decode("utf-8", "replace")[-TAIL:]
    err = done.stderr.decode("utf-8", "replace")[-TAIL:]
    await audit.record(
        "repair_end",
        env=env,
        role=role,
        ok=done.ok,
        exit_status=done.exit_status,
        signal=done.signal,
        stdout=clean(out),
        stderr=clean(err),
        seconds=round(time.monotonic() - started, 3),
    )
    if done.ok:
        return None
    last = err.strip().splitlines()[-1:] or ["no output"]
    how = f"signal {done.signal}" if done.signal else f"exit {done.exit_status}"
    return f"{how}: {last[0][:200]}"
