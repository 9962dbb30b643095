"""``chaosrun restore``: undo a run's chaos on every environment, from its audit log.

The run's audit log holds every change its chaos steps made, with the state before and
after (``result`` records), and the SHA-256 of every binary it deployed (``deploy``). Restore
reads them, per environment and machine, and runs chaosrun's own ``restore`` module there
(``chaos_go/modules/restore``: deployed like any module, binary gone afterwards), which
stops the run's fault processes and undoes the changes newest first, each only where the
machine still shows what the change left. It also removes the uploads a monitor killed
mid-step left at their recorded paths (a raw upload is the binary; a gzip upload is its own
bytes, ``sent_sha256``, and may leave the binary at its ``unpack_path``), the guard pass's
included. What it did is a run of its own, with an audit log ``<run>-restore.jsonl``
(``-restore-2``... for later ones) whose ``run_start`` names the run it restores.

A change an earlier restore of the same run undid, or found already undone, is not sent
again, and a machine an earlier restore finished is not visited again unless a change of it
is still pending: restoring twice is a no-op. A log the monitor never sealed (the monitor was
killed) is read up to its last whole record; its chain must be intact. A step whose result
never came is undone from the ``change`` records its module streamed as it went, and a run
resumed with ``run --resume`` is restored with the runs it resumes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EXIT_USAGE, ChaosrunError
from .plan import EnvPlan, Plan, PlannedStep, machine_step
from .run.audit import LogError, read_intact
from .scenario import Section, StepKind

__all__ = ["PastRun", "RestoreError", "chain", "newest_run_log", "read_run", "restore_plan", "restore_summary"]

MODULE = "restore"
TIMEOUT = 900.0  # seconds one machine's restore may take (400,000 files to remove, units to start)
DONE = frozenset({"restored", "already", "superseded"})


class RestoreError(ChaosrunError):
    """No run to restore, or an audit log that cannot be trusted (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass
class Machine:
    """What one role's machine of one environment has to have undone."""

    env: str
    role: str
    changes: list[dict[str, Any]] = field(default_factory=list)  # {"step", "index", "change"}, in order
    binaries: set[str] = field(default_factory=set)  # "sha256:size"
    leftovers: dict[str, str] = field(default_factory=dict)  # path -> "sha256:size": deployed, never seen removed
    unpacked: dict[str, str] = field(default_factory=dict)  # a gzip upload's path -> its unpacked file's


@dataclass
class PastRun:
    """The chaos a run's audit log records, per machine."""

    path: Path
    run_id: str
    seed: int | None
    scenario_sha256: str | None
    sealed: bool
    machines: dict[tuple[str, str], Machine]
    environments: list[str]


def _records(path: Path) -> tuple[list[dict[str, Any]], bool]:
    return read_intact(path, " (restore trusts only an intact log)")


def chain(path: Path) -> list[tuple[Path, list[dict[str, Any]], bool]]:
    """A run's audit log and those of the runs it resumes (``run --resume``), oldest first:
    each as (path, intact records, sealed).

    Raises:
        LogError: one of them is missing or cannot be trusted.
    """
    logs: list[tuple[Path, list[dict[str, Any]], bool]] = []
    seen: set[Path] = set()
    while True:
        records, sealed = _records(path)
        logs.append((path, records, sealed))
        seen.add(path)
        earlier = records[0].get("resumes")
        if not isinstance(earlier, str):
            return logs[::-1]
        path = path.parent / f"{earlier}.jsonl"
        if path in seen:
            raise LogError(f"{path}: the logs resume each other in a loop")
        if not path.is_file():
            raise LogError(f"{logs[-1][0]} resumes run {earlier}, whose audit log {path} is not beside it")


def read_run(path: Path) -> PastRun:
    """The changes and binaries a run's audit log records, per machine, with those of the
    runs it resumes.

    A step attempt's changes are those of its ``result``; an attempt whose result never came
    (the monitor was killed, the connection cut) has the ``change`` records the module
    streamed as it made them.

    Raises:
        RestoreError: not an intact audit log of a run's steps.
    """
    logs = chain(path)
    start = logs[-1][1][0]
    if start.get("section") != Section.STEPS.value:
        raise RestoreError(f"{path} records a {start.get('section')} run, not a run of chaos steps: nothing to restore")
    machines: dict[tuple[str, str], Machine] = {}
    counts: dict[tuple[str, str], int] = {}
    environments: list[str] = []
    for _, records, _ in logs:
        roles: dict[tuple[str, str], str] = {}
        for env in records[0].get("plan", {}).get("environments", []):
            if (name := str(env.get("name"))) not in environments:
                environments.append(name)
            for step in env.get("steps", []):
                if step.get("target"):
                    roles[(name, str(step.get("id")))] = str(step["target"])
        streamed: dict[tuple[str, str], list[dict[str, Any]]] = {}

        def add(m: Machine, env: str, step: str, changes: list[Any]) -> None:
            for change in changes:
                index = counts.get((env, step), 0)
                counts[(env, step)] = index + 1
                m.changes.append({"step": step, "index": index, "change": change})

        for r in records:
            event, env, step = r.get("event"), r.get("env"), r.get("step")
            if not isinstance(env, str) or not isinstance(step, str):
                continue
            if (role := roles.get((env, step)) or _machine_role(step)) is None:
                continue
            m = machines.setdefault((env, role), Machine(env, role))
            if event == "deploy" and isinstance(r.get("sha256"), str):
                m.binaries.add(binary := f"{r['sha256']}:{int(r.get('size') or 0)}")
                if isinstance(r.get("path"), str):
                    m.leftovers[r["path"]] = _sent(r, binary)
                    if isinstance(r.get("unpack_path"), str):  # gzip: the binary may be left there too
                        m.leftovers[r["unpack_path"]] = binary
                        m.unpacked[r["path"]] = r["unpack_path"]
            elif event == "cleanup" and r.get("removed") is True:
                m.leftovers.pop(str(r.get("path")), None)
                m.leftovers.pop(m.unpacked.get(str(r.get("path")), ""), None)
            elif event == "change" and isinstance(r.get("change"), dict):
                streamed.setdefault((env, step), []).append(r["change"])
            elif event == "result":  # the attempt's whole story: its streamed changes repeat in it
                streamed.pop((env, step), None)
                add(m, env, step, list(r.get("changes") or []))
            elif event in ("listen", "step_end"):  # a new attempt, or the end: what came without a result
                add(m, env, step, streamed.pop((env, step), []))
        for (env, step), changes in streamed.items():  # in flight when the log stopped
            add(machines[(env, roles[(env, step)])], env, step, changes)
    seed = start.get("seed")
    return PastRun(
        path=path,
        run_id=path.name.removesuffix(".jsonl"),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        scenario_sha256=start.get("scenario_sha256"),
        sealed=logs[-1][2],
        machines=machines,
        environments=environments,
    )


def _machine_role(step: str) -> str | None:
    """The role of a step of chaosrun's own that the plan does not list: the guard pass's
    baseline before the first chaos step (``guard:web``), which deploys a binary too."""
    return step.removeprefix("guard:") if step.startswith("guard:") else None


def _sent(deploy: Mapping[str, Any], binary: str) -> str:
    """The ``"sha256:size"`` of the bytes a deploy record put at its ``path``: the binary's, or a
    gzip upload's own (``sent_sha256``, ``sent``)."""
    if isinstance(deploy.get("sent_sha256"), str):
        return f"{deploy['sent_sha256']}:{int(deploy.get('sent') or 0)}"
    return binary


def newest_run_log(audit_dir: Path, scenario_sha256: str | None = None) -> Path:
    """The newest audit log of a run's steps in ``audit_dir`` (of this scenario, when given).

    Raises:
        RestoreError: there is none.
    """
    found = []
    for path in audit_dir.glob("*.jsonl"):
        try:
            with path.open(encoding="utf-8") as fh:
                first = json.loads(fh.readline())
        except (OSError, ValueError):
            continue
        if not isinstance(first, dict) or first.get("event") != "run_start" or first.get("section") != "steps":
            continue
        if scenario_sha256 and first.get("scenario_sha256") != scenario_sha256:
            continue
        found.append(path)
    if not found:
        raise RestoreError(f"no audit log of a run of this scenario in {audit_dir} (--from AUDIT.jsonl names one)")
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _earlier_restores(past: PastRun) -> list[Path]:
    return sorted(past.path.parent.glob(f"{past.run_id}-restore*.jsonl"))


def next_restore_id(past: PastRun) -> str:
    """``<run>-restore``, then ``<run>-restore-2``...: one audit log per restore."""
    taken = {p.name.removesuffix(".jsonl") for p in _earlier_restores(past)}
    name, n = f"{past.run_id}-restore", 1
    while name in taken:
        n += 1
        name = f"{past.run_id}-restore-{n}"
    return name


def _settled(past: PastRun) -> tuple[set[tuple[str, str, int]], set[tuple[str, str]]]:
    """What earlier restores of this run settled: changes (env, step, index) they undid or
    found undone, and machines (env, role) they finished."""
    changes: set[tuple[str, str, int]] = set()
    visited: set[tuple[str, str]] = set()
    for path in _earlier_restores(past):
        try:
            records, _ = _records(path)
        except LogError:
            continue  # a damaged restore log settles nothing: those changes are tried again
        for r in records:
            if r.get("event") != "result" or not r.get("ok") or not isinstance(r.get("env"), str):
                continue
            result = r.get("result") or {}
            for o in result.get("outcomes") or []:
                if o.get("status") in DONE:
                    changes.add((r["env"], str(o.get("step")), int(o.get("index", -1))))
            visited.add((r["env"], str(r.get("step", "")).removeprefix("restore:")))
    return changes, visited


def restore_plan(past: PastRun, plan: Plan) -> tuple[Plan, list[str]]:
    """A plan of one ``restore`` step per machine that has something to undo, and what was
    left out (said to the operator): environments of the run the inventory no longer has.

    ``plan`` is the scenario's plan over the inventory: its targets say how to reach each
    machine. Changes settled by an earlier restore are not sent again.
    """
    settled, visited = _settled(past)
    by_env = {e.name: e for e in plan.environments}
    notes: list[str] = []
    envs: list[EnvPlan] = []
    for name in past.environments:
        env = by_env.get(name)
        mine = [m for (e, _), m in sorted(past.machines.items()) if e == name]
        if env is None:
            if any(m.changes for m in mine):
                notes.append(f"{name}: not in the inventory: its changes are not restored")
            continue
        steps = []
        for m in mine:
            pending = [c for c in m.changes if (name, c["step"], c["index"]) not in settled]
            if not pending and (name, m.role) in visited:
                continue
            target = env.targets.get(m.role)
            if target is None:
                notes.append(f"{name}: the inventory has no role {m.role!r}: its changes are not restored")
                continue
            leftovers = sorted(f"{binary}:{path}" for path, binary in m.leftovers.items())
            steps.append(_step(m.role, target, pending, sorted(m.binaries), leftovers))
        if steps:
            envs.append(EnvPlan(name, env.targets, tuple(steps), ()))
    return dataclasses.replace(plan, environments=tuple(envs)), notes


def _step(
    role: str, target: Any, changes: list[dict[str, Any]], binaries: list[str], leftovers: list[str]
) -> PlannedStep:
    params = {"changes": [json.dumps(c, separators=(",", ":")) for c in changes], "binaries": binaries}
    if leftovers:
        params["leftovers"] = leftovers
    return machine_step(
        f"restore:{role}", target, MODULE, params, kind=StepKind.CHAOS, section=Section.STEPS, timeout=TIMEOUT, level=1
    )


@dataclass(frozen=True)
class MachineSummary:
    env: str
    role: str
    ok: bool
    counts: Mapping[str, int]
    left: tuple[str, ...]  # what was not restored, one line each
    stopped: int
    error: str = ""


def restore_summary(report: Any) -> list[MachineSummary]:
    """Per machine of a restore's report: how many changes of each status, and the lines of
    what was left as it is (changed since the run, failed, irreversible)."""
    out = []
    for env in report.environments:
        for step in env.steps:
            role = step.id.removeprefix("restore:")
            result = step.result or {}
            counts: dict[str, int] = {}
            left = []
            for o in result.get("outcomes") or []:
                if o.get("status") == "superseded":
                    continue  # a step's early record, which its final one stands for: not a change of its own
                counts[o.get("status", "?")] = counts.get(o.get("status", "?"), 0) + 1
                if o.get("status") not in DONE:
                    where = o.get("path") or o.get("step")
                    left.append(f"{o.get('status')}: {o.get('action')} {where} ({o.get('step')}): {o.get('message')}")
            ok = step.ok and not left
            error = "" if step.ok else step.reason
            out.append(MachineSummary(env.name, role, ok, counts, tuple(left), len(result.get("stopped") or []), error))
    return out


def summary_lines(rows: Iterable[MachineSummary]) -> list[str]:
    lines = []
    for row in rows:
        said = ", ".join(f"{n} {status}" for status, n in sorted(row.counts.items())) or "nothing to undo"
        if row.stopped:
            said += f"; {row.stopped} fault process(es) stopped"
        if row.error:
            said = f"failed: {row.error}"
        lines.append(f"{row.env}/{row.role}: {said}")
        lines.extend(f"  {line}" for line in row.left)
    return lines
