"""The Python API: what ``chaosrun run|verify|restore`` and ``verify --watch`` do, as calls
a program makes -- the same code the command line and ``chaosrun serve`` run.

An :class:`Exam` is a scenario and an inventory, loaded (and linted) once::

    exam = chaosrun.api.load_exam("exam.yaml", "inventory.yml", audit_dir="audit")
    report = await chaosrun.api.run(exam)                      # the chaos
    graded = await chaosrun.api.verify(exam, limit="@failed")  # the grading
    print(graded["points"], "of", graded["max_points"])

The ``async`` functions run the engine (trio, in a thread of its own) and wait for it
without blocking the caller's event loop, under asyncio and under trio alike (they go
through anyio). Their blocking twins (:func:`run_exam`, :func:`restore_exam`,
:func:`watch_exam`) do the work in the calling thread. Reports are the JSON of
``--format json`` (:func:`chaosrun.reports.report_as_json`).

``on_event`` receives every step as it starts and ends and each environment as it is
graded, as JSON-ready dicts (:class:`EventReporter` says which); it is called in the
engine's thread, so hand the event to your own loop from there (asyncio's
``loop.call_soon_threadsafe``, trio's ``TrioToken.run_sync_soon``). ``on_start`` receives
a function that stops the operation from any thread, as Ctrl-C does: the steps under way
end, the audit log is sealed, the report says ``interrupted``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._spans import ScenarioErrors
from .errors import UsageError
from .inventory_model import Inventory
from .linted import load_inventory_cached, load_scenario_cached
from .plan import Plan, PlannedStep, build_plan
from .scenario import Scenario, Section, Transfer
from .session import new_seed

if TYPE_CHECKING:
    from .restore import MachineSummary
    from .run.model import EnvOutcome, Reporter, RunOptions, RunReport, StepOutcome
    from .watch import WatchReport

__all__ = [
    "EventReporter",
    "Exam",
    "RestoreResult",
    "exam_from_text",
    "limited",
    "load_exam",
    "note_on_stderr",
    "plan_steps",
    "prepare",
    "restore",
    "restore_exam",
    "run",
    "run_exam",
    "verify",
    "watch",
    "watch_exam",
]

Event = dict[str, Any]
Note = Callable[[str], None]


def note_on_stderr(line: str) -> None:
    """The command line's notes: ``chaosrun: LINE`` on stderr."""
    print(f"chaosrun: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Exam:
    """A scenario and the inventory it runs on, with where its audit logs go."""

    scenario: Scenario
    inventory: Inventory | None
    audit_dir: Path
    key_path: Path | None = None  # the monitor's signing key; None: the default one

    @property
    def name(self) -> str:
        return self.scenario.name


def load_exam(
    scenario: str | Path,
    inventory: str | Path | None = None,
    *,
    audit_dir: str | Path = "audit",
    key_path: str | Path | None = None,
    assignments: Sequence[str] = (),
    note: Note = note_on_stderr,
    env_per: str = "host",
) -> Exam:
    """Load and lint a scenario file and an inventory file; ``assignments`` are
    ``--var NAME=VALUE`` (VALUE read as a YAML scalar: 64 is an int); ``env_per``
    (``--env-per``) is what an environment is in an Ansible inventory, a ``"host"`` or
    a ``"group"``.

    Raises:
        ScenarioErrors: every error of either file, each with its file, line and column.
        UsageError: an assignment names no variable of the scenario.
    """
    loaded, warnings = load_scenario_cached(str(scenario), assignments)
    for warning in warnings:
        note(str(warning))
    inv = load_inventory_cached(str(inventory), env_per=env_per) if inventory is not None else None
    for warning in inv.warnings if inv is not None else ():
        note(str(warning))
    return Exam(loaded, inv, Path(audit_dir), Path(key_path) if key_path else None)


def exam_from_text(
    scenario_text: str,
    inventory_text: str | None,
    folder: Path,
    *,
    audit_dir: Path | None = None,
    key_path: Path | None = None,
) -> Exam:
    """An exam from the text of its files, written to ``folder`` as ``scenario.yaml`` and
    ``inventory.yml`` (``.csv`` or ``.ini`` when the text is one: :func:`inventory_name`;
    errors name those files). Raises ScenarioErrors like :func:`load_exam`."""
    folder.mkdir(parents=True, exist_ok=True)
    scenario = folder / "scenario.yaml"
    scenario.write_text(scenario_text)
    inventory = None
    if inventory_text is not None:
        inventory = folder / inventory_name(inventory_text)
        inventory.write_text(inventory_text)
    return load_exam(scenario, inventory, audit_dir=audit_dir or folder / "audit", key_path=key_path, note=_quiet)


def inventory_name(text: str) -> str:
    """The file name an inventory given as text is kept under, so that its format is
    read as the operator wrote it: ``inventory.csv`` when its first line is the CSV
    header (``env,...``), ``inventory.yml`` when it is a YAML mapping (chaosrun's own or
    Ansible's YAML), else ``inventory.ini`` (Ansible INI)."""
    from ._source import load_yaml

    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    if first.replace(" ", "").startswith("env,"):
        return "inventory.csv"
    try:
        root = load_yaml(text, "inventory")
    except ScenarioErrors:
        return "inventory.ini"
    return "inventory.yml" if isinstance(root.value, dict) else "inventory.ini"


def _quiet(line: str) -> None:
    pass


def limited(plan: Plan, pattern: str, audit_dir: Path, note: Note = note_on_stderr) -> Plan:
    """The plan with only the environments ``--limit PATTERN`` selects (its picks made on
    all of them, so each keeps the fault it had)."""
    from .limit import select

    names = [e.name for e in plan.environments]
    chosen = set(select(names, pattern, audit_dir))
    shown = ", ".join(n for n in names if n in chosen)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    note(f"--limit {pattern}: {len(chosen)} of {len(names)} environments ({shown})")
    return dataclasses.replace(plan, environments=tuple(e for e in plan.environments if e.name in chosen))


def prepare(
    exam: Exam,
    section: Section,
    *,
    limit: str | None = None,
    seed: int | None = None,
    resume: Path | None = None,
    parallel: int = 20,
    strict: bool = False,
    reboot: bool = False,
    boot_timeout: float = 300.0,
    since: Path | None = None,
    transfer: Transfer | str | None = None,
    note: Note = note_on_stderr,
) -> tuple[Plan, RunOptions]:
    """The plan and options of one ``run`` or ``verify``: the seed (``--resume``'s, a past
    run's for ``--limit``, or a new one), the environments ``--limit`` selects, the
    baseline the guard pass compares with (verify). ``transfer`` (``auto``, ``raw``,
    ``gzip``; ``--transfer``) overrides the scenario's ``monitor.transfer``."""
    from .resume import next_resume_id
    from .run.model import RunOptions

    past = _resumed(exam, resume, seed, note) if resume is not None else None
    if past is not None:
        seed = past.seed
    elif seed is None and limit:
        from .limit import past_seed

        if (seed := past_seed(limit, exam.audit_dir)) is not None:
            note(f"seed {seed}, the past run's (--limit {limit}; --seed to choose)")
    plan = build_plan(exam.scenario, seed=seed if seed is not None else new_seed(), inventory=exam.inventory)
    if limit:
        plan = limited(plan, limit, exam.audit_dir, note)
    options = RunOptions(
        audit_dir=past.path.parent if past else exam.audit_dir,
        run_id=next_resume_id(past) if past else None,
        resume=past,
        section=section,
        parallel=parallel,
        key_path=exam.key_path,
        strict=strict,
        reboot=reboot,
        boot_timeout=boot_timeout,
        transfer=_transfer(transfer),
    )
    if section is Section.VERIFY:
        options = dataclasses.replace(options, baseline=_baseline(exam, since, note))
    return plan, options


def _transfer(name: Transfer | str | None) -> Transfer | None:
    if name is None:
        return None
    try:
        return Transfer(name)
    except ValueError:
        raise UsageError(f"--transfer {name}: one of {', '.join(t.value for t in Transfer)}") from None


def _resumed(exam: Exam, path: Path, seed: int | None, note: Note) -> Any:
    """The run ``--resume`` names, checked to be this scenario's."""
    from .resume import ResumeError, read_interrupted

    past = read_interrupted(path)
    if past.scenario_sha256 != exam.scenario.sha256:
        raise ResumeError(
            f"{exam.scenario.file} changed since run {past.resumes} (SHA-256 {str(past.scenario_sha256)[:12]}..., "
            f"now {exam.scenario.sha256[:12]}...): --resume goes on with the scenario the run ran"
        )
    if seed is not None and seed != past.seed:
        raise UsageError(f"--seed {seed}: run {past.resumes} ran with seed {past.seed}, which --resume keeps")
    note(f"resuming run {past.resumes} from {path}: {past.steps_done()} step(s) that ended there are not run again")
    return past


def _baseline(exam: Exam, since: Path | None, note: Note) -> Any:
    """The baselines of the run being graded (``since``, else the newest run of this
    scenario in the audit folder), for the guard pass; None, said, when there is none."""
    from .restore import RestoreError, newest_run_log
    from .run.audit import LogError
    from .shortcuts import load_baseline

    try:
        path = since or newest_run_log(exam.audit_dir, exam.scenario.sha256)
    except RestoreError:
        if exam.scenario.guards:  # asked for: say it cannot be done
            note(f"no run of {exam.scenario.file} in {exam.audit_dir}: shortcuts are not looked for")
        return None
    try:
        return load_baseline(path)
    except (LogError, RestoreError) as e:
        if exam.scenario.guards:
            note(f"{e}: shortcuts are not looked for")
        return None


def plan_steps(plan: Plan, section: Section) -> list[dict[str, Any]]:
    """The steps of one section across the plan's environments, in order, once each:
    ``{"id", "section", "points"}``."""
    steps: dict[str, PlannedStep] = {}
    for env in plan.environments:
        for step in env.verify if section is Section.VERIFY else env.steps:
            if not _internal(step.id):
                steps.setdefault(step.id, step)
    return [{"id": s.id, "section": section.value, "points": s.points} for s in steps.values()]


def _internal(step_id: str) -> bool:
    """A step of chaosrun's own (the guard pass's, restore's), not the scenario's."""
    return step_id.startswith(("guard:", "restore:"))


class EventReporter:
    """A run's progress as events, one dict each, to ``on_event``:

    - ``{"type": "run_started", "section", "audit", "environments": [name...],
      "steps": [{"id", "section", "points"}...]}``
    - ``{"type": "step_started", "env", "step"}``
    - ``{"type": "step_ended", "env", "step", "status", "reason", "points", "max_points",
      "duration"}``
    - ``{"type": "env_ended", "env", "ok", "points", "max_points"}``
    - once the run is over, per environment, ``{"type": "env_graded", "env", "ok",
      "points", "max_points", "integrity", "signals", "shortcuts", "penalty", "zeroed"}``
      (integrity is judged on the whole run, so it comes last)
    """

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self.on_event = on_event

    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None:
        self.on_event(
            {
                "type": "run_started",
                "section": section.value,
                "audit": str(audit_path),
                "environments": [e.name for e in plan.environments],
                "steps": plan_steps(plan, section),
            }
        )

    def step_started(self, env: str, step: PlannedStep) -> None:
        if not _internal(step.id):
            self.on_event({"type": "step_started", "env": env, "step": step.id})

    def step_finished(self, env: str, outcome: StepOutcome) -> None:
        if _internal(outcome.id):
            return
        self.on_event(
            {
                "type": "step_ended",
                "env": env,
                "step": outcome.id,
                "status": outcome.status.value,
                "reason": outcome.reason,
                "points": outcome.points,
                "max_points": outcome.max_points,
                "duration": round(outcome.duration, 3),
            }
        )

    def env_finished(self, env: EnvOutcome) -> None:
        self.on_event(
            {"type": "env_ended", "env": env.name, "ok": env.ok, "points": env.points, "max_points": env.max_points}
        )

    def graded(self, report: RunReport) -> None:
        for env in report.environments:
            self.on_event(
                {
                    "type": "env_graded",
                    "env": env.name,
                    "ok": env.ok,
                    "points": env.points,
                    "max_points": env.max_points,
                    "integrity": env.integrity,
                    "signals": [s.as_json() for s in env.signals],
                    "shortcuts": [s.as_json() for s in env.shortcuts],
                    "penalty": env.penalty,
                    "zeroed": env.zeroed,
                }
            )


def _engine(
    plan: Plan,
    options: RunOptions,
    on_event: Callable[[Event], None] | None,
    on_start: Callable[[Callable[[], None]], None] | None,
    reporter: Reporter | None = None,
) -> RunReport:
    """Run one section in this thread (trio.run), its progress as events (or to
    ``reporter``: the command line's terminal)."""
    from .session import run_section

    events = EventReporter(on_event or _ignore)
    report = run_section(plan, dataclasses.replace(options, on_start=on_start), reporter=reporter or events)
    if reporter is None:
        events.graded(report)
    return report


def _ignore(event: Event) -> None:
    pass


def run_exam(
    exam: Exam,
    section: Section = Section.STEPS,
    *,
    on_event: Callable[[Event], None] | None = None,
    on_start: Callable[[Callable[[], None]], None] | None = None,
    note: Note = _quiet,
    **how: Any,
) -> dict[str, Any]:
    """Run the exam's chaos (``section`` STEPS) or grade it (VERIFY) in this thread; the
    report as JSON. ``how`` are :func:`prepare`'s keywords (limit, seed, resume, strict...)."""
    from .reports import report_as_json

    plan, options = prepare(exam, section, note=note, **how)
    return report_as_json(_engine(plan, options, on_event, on_start))


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did: per machine, what was undone and what was left as it is."""

    run: str  # the run restored
    audit: str | None  # the restore's own audit log; None when there was nothing to restore
    restored: bool  # every change is undone (or was already)
    interrupted: bool
    machines: tuple[MachineSummary, ...]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": self.run}
        if self.audit is not None:
            out.update(audit=self.audit, restored=self.restored, interrupted=self.interrupted)
        else:
            out["restored"] = True
        out["machines"] = [dataclasses.asdict(m) for m in self.machines]
        return out


def restore_exam(
    exam: Exam,
    *,
    from_log: Path | None = None,
    limit: str | None = None,
    parallel: int = 20,
    on_event: Callable[[Event], None] | None = None,
    on_start: Callable[[Callable[[], None]], None] | None = None,
    note: Note = _quiet,
    reporter: Reporter | None = None,
) -> RestoreResult:
    """Undo a run's chaos (``from_log``, else the newest run of the scenario in the audit
    folder) on every environment, in this thread."""
    from .restore import newest_run_log, next_restore_id, read_run, restore_plan, restore_summary
    from .run.model import RunOptions

    path = from_log or newest_run_log(exam.audit_dir, exam.scenario.sha256)
    past = read_run(path)
    if past.scenario_sha256 and past.scenario_sha256 != exam.scenario.sha256:
        note(f"warning: {exam.scenario.file} changed since the run {past.run_id}")
    sealed = "" if past.sealed else " (never sealed: the run was cut short; restoring what it recorded)"
    note(f"restoring run {past.run_id} from {path}{sealed}")
    plan = build_plan(exam.scenario, seed=past.seed if past.seed is not None else 0, inventory=exam.inventory)
    if limit:
        plan = limited(plan, limit, path.parent, note)
    plan, notes = restore_plan(past, plan)
    for line in notes:
        note(line)
    if not plan.environments:
        note(f"nothing to restore: run {past.run_id} is restored already")
        return RestoreResult(past.run_id, None, True, False, ())
    options = RunOptions(
        audit_dir=path.parent,
        parallel=parallel,
        key_path=exam.key_path,
        run_id=next_restore_id(past),
        restores=past.run_id,
    )
    report = _engine(plan, options, on_event, on_start, reporter)
    rows = tuple(restore_summary(report))
    ok = not report.interrupted and all(r.ok for r in rows)
    return RestoreResult(past.run_id, str(report.audit_path), ok, report.interrupted, rows)


def watch_exam(
    exam: Exam,
    *,
    interval: float,
    until: float,
    since: Path | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_start: Callable[[Callable[[], None]], None] | None = None,
    note: Note = _quiet,
    run_pass: Callable[[Plan, RunOptions], RunReport] | None = None,
    **how: Any,
) -> tuple[WatchReport, dict[str, Any]]:
    """Grade the exam again and again (``verify --watch``), in this thread: the watch, and
    the last pass's report with each probe's ``time_to_fix`` and the watch's record. Each
    pass's events go to ``on_event``, then ``{"type": "time_to_fix", "env", "step",
    "seconds", "regressed", "passing"}`` per probe."""
    import threading

    from .reports import report_as_json
    from .watch import clock_starts, run_watch, watch_as_json

    if how.get("reboot"):
        raise UsageError("--watch grades the machines as they are; it does not take --reboot")
    plan, options = prepare(exam, Section.VERIFY, since=since, note=note, **how)
    clock, source = clock_starts(exam.audit_dir, since)
    if not source:
        note("no run log in the audit folder: the exam clock starts with the watch")
    stopped = threading.Event()
    stoppers: list[Callable[[], None]] = []

    def stop() -> None:
        stopped.set()
        for s in list(stoppers):
            s()

    if on_start is not None:
        on_start(stop)

    def one_pass(p: Plan, o: RunOptions) -> RunReport:
        if stopped.is_set():
            from .run.model import RunReport

            return RunReport(o.run_id or "", Section.VERIFY, None, p.seed, [], interrupted=True)
        return _engine(p, o, on_event, stoppers.append)

    def pause(seconds: float) -> None:
        if stopped.wait(seconds):
            raise KeyboardInterrupt

    watched = run_watch(
        plan, options, interval=interval, until=until, clock=clock, clock_source=source,
        run_pass=run_pass or one_pass, note=note, sleep=pause if run_pass is None else _sleep,
    )  # fmt: skip
    data = report_as_json(watched.last)
    for env in data["environments"]:
        for step in env["steps"]:
            step["time_to_fix"] = watched.time_to_fix(env["name"], step["id"])
    data["watch"] = watch_as_json(watched)
    if on_event is not None:
        for (env_name, step_id), w in sorted(watched.probes.items()):
            on_event(
                {
                    "type": "time_to_fix",
                    "env": env_name,
                    "step": step_id,
                    "seconds": watched.time_to_fix(env_name, step_id),
                    "regressed": w.regressed,
                    "passing": w.passing,
                }
            )
    return watched, data


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


async def _in_thread(fn: Callable[[], Any]) -> Any:
    import anyio.to_thread

    return await anyio.to_thread.run_sync(fn)


async def run(exam: Exam, **how: Any) -> dict[str, Any]:
    """:func:`run_exam` (the chaos), without blocking the caller's event loop."""
    return await _in_thread(lambda: run_exam(exam, Section.STEPS, **how))  # type: ignore[no-any-return]


async def verify(exam: Exam, **how: Any) -> dict[str, Any]:
    """:func:`run_exam` of the ``verify`` section (the grading), without blocking the loop."""
    return await _in_thread(lambda: run_exam(exam, Section.VERIFY, **how))  # type: ignore[no-any-return]


async def restore(exam: Exam, **how: Any) -> dict[str, Any]:
    """:func:`restore_exam`, without blocking the loop; its JSON."""
    result: RestoreResult = await _in_thread(lambda: restore_exam(exam, **how))
    return result.as_json()


async def watch(exam: Exam, *, interval: float, until: float, **how: Any) -> dict[str, Any]:
    """:func:`watch_exam`, without blocking the loop; the last pass's report with time to fix."""
    _, data = await _in_thread(lambda: watch_exam(exam, interval=interval, until=until, **how))
    return data  # type: ignore[no-any-return]
