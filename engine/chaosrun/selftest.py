"""``chaosrun test SCENARIO``: the author's self-test, the way Molecule tests a role.

An exam is only fair when its fault really breaks what the probes grade, its reference
repair really earns full points (also after a reboot), and the wrong repairs an author can
think of do not. ``run_selftest`` proves each of these on real machines, fresh lab VMs by
default (``chaosrun lab``), in *tracks*:

- the **solution** track, on a fresh machine: ``chaos`` (run the steps: every chaos step
  ok), ``broken`` (verify: below full points, and every graded probe that ran fails: one
  that passes on the broken machine grades nothing), ``repair`` (the scenario's
  ``solution``, per role), ``fixed`` (verify: full points), ``reboot`` (verify --reboot:
  still full);
- one track per **shortcut**, each on a fresh machine: ``chaos``, ``repair`` (the
  shortcut), ``reboot`` (verify --reboot: below full; the report names the probes that
  caught it).

Every phase writes its own audit log (run and verify through the runtime as ``chaosrun
run|verify`` do; a repair through :func:`chaosrun.run.repair.run_repair`, records per role). All phases share
one seed, so ``one_of`` picks are the same for the chaos and the probes.

Lab VMs reach nothing outside, so on them the callbacks go through the SSH tunnel whatever
the scenario's ``monitor.callback`` says (a lab is not the exam network).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import ChaosrunError
from .inventory import load_inventory
from .limit import select
from .plan import Plan, build_plan, pick_option
from .run.repair import run_repair
from .scenario import Repair, Scenario, Section, StepKind
from .shortcuts import Baseline, load_baseline

__all__ = [
    "Phase",
    "SelfTestOptions",
    "SelfTestReport",
    "format_details",
    "format_report",
    "report_as_json",
    "run_selftest",
]

Progress = Callable[[str], None]

NOT_FRESH = "not tried: a shortcut needs fresh machines (run without -i, or with a lab inventory)"
SEED_SEARCH = 10_000  # seeds tried to find one that picks a wanted one_of option


class SelfTestError(ChaosrunError):
    """The self-test cannot start (no solution to test, a scenario without verify)."""


@dataclass
class Phase:
    """One phase of a track: what was expected, and whether it held."""

    track: str
    name: str
    expect: str
    ok: bool = False
    points: float | None = None
    max_points: float | None = None
    detail: str = ""
    audit: str | None = None
    seconds: float = 0.0
    skipped: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "phase": self.name,
            "expect": self.expect,
            "ok": self.ok,
            "skipped": self.skipped,
            "points": self.points,
            "max_points": self.max_points,
            "detail": self.detail,
            "audit": self.audit,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class SelfTestReport:
    scenario: str
    name: str
    seed: int
    machines: str  # "lab VMs" or the inventory's path
    audit_dir: Path
    phases: list[Phase] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(p.ok or p.skipped for p in self.phases)


@dataclass(frozen=True)
class SelfTestOptions:
    audit_dir: Path
    seed: int
    inventory: Path | None = None  # None: fresh lab VMs per track
    key_path: Path | None = None
    boot_timeout: float = 300.0
    memory_mib: int = 1024
    cpus: int = 2
    limit: str | None = None  # --limit: only these environments of each track's machines
    env_per: str = "host"  # --env-per: what an environment is in an Ansible inventory


class _Interrupted(Exception):
    pass


# -- machines -------------------------------------------------------------------------------


class _Machines:
    """Where the tracks run: a fresh lab per track, or the one inventory given."""

    def __init__(self, scenario: Scenario, options: SelfTestOptions, work: Path, progress: Progress) -> None:
        self._scenario = scenario
        self._options = options
        self._work = work
        self._progress = progress
        self._current: Path | None = None
        self._used = False

    @property
    def label(self) -> str:
        return str(self._options.inventory) if self._options.inventory else "lab VMs"

    def fresh(self, track: str) -> Path | None:
        """An inventory of fresh machines for ``track``; None when none can be had (the
        inventory given was used already and is not a lab's)."""
        from .lab import UpOptions, lab_down, lab_up, load_state, scenario_lab
        from .lab.state import is_lab_inventory

        given = self._options.inventory
        if given is not None:
            if not self._used:
                self._used = True
                return given
            if not is_lab_inventory(given):
                return None
            state = load_state(given.resolve())
            roles = tuple(dict.fromkeys(vm.role for vm in state.vms))
            envs = len({vm.env for vm in state.vms})
            forwards = state.vms[0].forwards if state.vms else ()
            ports = tuple(sorted({f.guest_port for f in forwards if f.guest_port != 22}))
            lab_down(given, self._progress)
            lab_up(
                UpOptions(
                    inventory=given,
                    roles=roles,
                    service_ports=ports,
                    envs=envs,
                    memory_mib=state.memory_mib,
                    cpus=state.cpus,
                    boot_timeout=self._options.boot_timeout,
                ),
                self._progress,
            )
            return given
        self.close()
        roles, ports = scenario_lab(self._scenario)
        inventory = self._work / f"lab-{track}.yml"
        lab_up(
            UpOptions(
                inventory=inventory,
                roles=roles,
                service_ports=ports,
                memory_mib=self._options.memory_mib,
                cpus=self._options.cpus,
                boot_timeout=self._options.boot_timeout,
            ),
            self._progress,
        )
        self._current = inventory
        return inventory

    def close(self) -> None:
        from .lab import lab_down

        if self._current is not None:
            with contextlib.suppress(ChaosrunError):
                lab_down(self._current, self._progress)
            self._current = None


# -- phases ---------------------------------------------------------------------------------


def run_selftest(scenario: Scenario, options: SelfTestOptions, progress: Progress, log: IO[str]) -> SelfTestReport:
    """Run every track of the self-test. ``progress`` gets one line per phase; ``log`` the
    runtime's own progress lines.

    Raises:
        SelfTestError: the scenario has no solution or no graded probe.
        ChaosrunError: machines could not be had (a lab error), or an audit log could not
            be written; the lab VMs started are stopped first.
    """
    solution = scenario.solution
    if solution is None:
        raise SelfTestError(f"{scenario.file}: the scenario has no `solution:`; `chaosrun test` tests one")
    if not any(s.points > 0 for s in scenario.verify):
        raise SelfTestError(f"{scenario.file}: the scenario grades nothing (no verify probe with points)")
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    audit_dir = options.audit_dir / f"test-{scenario.name or 'scenario'}-{stamp}"
    work = audit_dir / "lab"
    report = SelfTestReport(scenario.file, scenario.name, options.seed, "", audit_dir)
    if options.inventory is None:
        from .lab import for_lab

        scenario = for_lab(scenario)
    machines = _Machines(scenario, options, work, progress)
    report.machines = machines.label
    runner = _Tracks(report, scenario, options, audit_dir, progress, log)
    try:
        with _lab_folder(work, options.inventory is None):
            try:
                runner.all_tracks(machines, _Track("solution", "solution", solution))
            finally:
                machines.close()
    except _Interrupted:
        report.interrupted = True
    finally:
        report.seconds = time.monotonic() - started
    return report


@dataclass(frozen=True)
class _Track:
    name: str
    kind: str  # solution, variant (another one_of option: chaos and broken only), shortcut
    repair: Repair | None
    picks: Mapping[str, str] = field(default_factory=dict)  # one_of group -> the option wanted


def _other_options(plan: Plan) -> list[tuple[str, str]]:
    """(group, option) for every one_of option the plan's environments did not pick."""
    out = []
    for step in plan.scenario.steps:
        if step.kind is StepKind.ONE_OF:
            picked = {picks.get(step.id) for picks in plan.picks.values()}
            out += [(step.id, o.id) for o in step.options if o.id not in picked]
    return out


def _seed_picking(scenario: Scenario, envs: Sequence[str], wanted: Mapping[str, str], start: int) -> int | None:
    """A seed whose one_of picks are ``wanted`` (group -> option) in every environment."""
    groups = {s.id: [o.id for o in s.options] for s in scenario.steps if s.kind is StepKind.ONE_OF}
    for seed in range(start, start + SEED_SEARCH):
        picks = ((g, option, env) for g, option in wanted.items() for env in envs)
        if all(groups[g][pick_option(seed, env, g, len(groups[g]))] == option for g, option, env in picks):
            return seed
    return None


@contextlib.contextmanager
def _lab_folder(work: Path, wanted: bool) -> Iterator[None]:
    if wanted:
        work.mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        if wanted:
            with contextlib.suppress(OSError):
                work.rmdir()  # empty once every lab is down


class _Tracks:
    """Runs the phases of each track and keeps what the coverage check needs."""

    def __init__(
        self,
        report: SelfTestReport,
        scenario: Scenario,
        options: SelfTestOptions,
        audit_dir: Path,
        progress: Progress,
        log: IO[str],
    ) -> None:
        self.report = report
        self.scenario = scenario
        self.options = options
        self.audit_dir = audit_dir
        self.progress = progress
        self.log = log
        self.caught: set[str] = set()  # graded probes that failed somewhere they had to

    def all_tracks(self, machines: _Machines, first: _Track) -> None:
        """The solution track, then (once its picks are known) a track per other one_of
        option and per shortcut, each on fresh machines; then the coverage check."""
        tracks = [first]
        while tracks:
            track = tracks.pop(0)
            inventory = machines.fresh(track.name)
            if inventory is None:
                self.report.phases.append(Phase(track.name, "all", "a fresh machine", skipped=True, detail=NOT_FRESH))
                continue
            plan = self.plan_for(inventory, track)
            if plan is None:
                continue
            self.run(track, plan)
            if track.kind == "solution":
                tracks += [_Track(f"variant-{o}", "variant", None, {g: o}) for g, o in _other_options(plan)]
                tracks += [_Track(s.name, "shortcut", s) for s in self.scenario.shortcuts]
        self.coverage()

    def plan_for(self, inventory_path: Path, track: _Track) -> Plan | None:
        inventory = load_inventory(inventory_path, env_per=self.options.env_per)
        seed = self.options.seed
        envs = [e.name for e in build_plan(self.scenario, seed=seed, inventory=inventory).environments]
        if self.options.limit:
            envs = select(envs, self.options.limit, self.options.audit_dir)
        if track.picks:
            found = _seed_picking(self.scenario, envs, track.picks, seed + 1)
            if found is None:
                self.report.phases.append(
                    Phase(track.name, "all", "a seed picking it", skipped=True, detail="no seed picks it everywhere")
                )
                return None
            seed = found
        plan = build_plan(self.scenario, seed=seed, inventory=inventory)
        return dataclasses.replace(plan, environments=tuple(e for e in plan.environments if e.name in envs))

    def _phase(self, track: str, name: str, expect: str, body: Callable[[Phase], None]) -> bool:
        p = Phase(track, name, expect)
        t0 = time.monotonic()
        try:
            body(p)
        except ChaosrunError as exc:
            p.ok, p.detail = False, str(exc)
        p.seconds = time.monotonic() - t0
        self.report.phases.append(p)
        mark = "ok" if p.ok else "FAILED"
        self.progress(f"test: {track}/{name}: {mark}{' (' + p.detail + ')' if p.detail else ''} [{p.seconds:.1f} s]")
        return p.ok

    def run(self, track: _Track, plan: Plan) -> None:
        name = track.name

        def section(p: Phase, which: Section, reboot: bool = False) -> tuple[Any, list[str], list[str]]:
            chaos_log = self.audit_dir / f"{name}-chaos.jsonl"
            baseline = load_baseline(chaos_log) if which is Section.VERIFY and chaos_log.is_file() else None
            result = _run(plan, self.options, self.audit_dir, f"{name}-{p.name}", which, reboot, self.log, baseline)
            p.audit = str(result.audit_path) if result.audit_path else None
            if result.interrupted:
                raise _Interrupted
            p.points = sum(e.points for e in result.environments)
            p.max_points = sum(e.max_points for e in result.environments)
            envs = result.environments
            suspect = [f"suspect {e.name}: {', '.join(s.signal for s in e.signals)}" for e in envs if e.signals]
            suspect += [f"shortcuts {e.name}: {', '.join(_said(c) for c in e.shortcuts)}" for e in envs if e.shortcuts]
            failing = sorted({s.id for e in envs for s in e.steps if s.max_points > 0 and not _passed(s)})
            return result, failing, suspect

        def chaos(p: Phase) -> None:
            result, _, suspect = section(p, Section.STEPS)
            steps = [s for e in result.environments for s in e.steps]
            failed = [f"{s.id}: {s.reason or s.status.value}" for s in steps if not _fine(s)]
            p.ok = not failed
            p.points = p.max_points = None
            p.detail = "; ".join(failed + suspect)

        def broken(p: Phase) -> None:
            result, failing, suspect = section(p, Section.VERIFY)
            self.caught.update(failing)
            p.ok = all(e.points < e.max_points for e in result.environments)
            told = f"caught by: {', '.join(failing)}" if p.ok else "full points on the broken machine"
            p.detail = "; ".join([told, *suspect])

        def full(p: Phase, reboot: bool) -> None:
            result, failing, suspect = section(p, Section.VERIFY, reboot)
            reasons = {s.id: s.reason for e in result.environments for s in e.steps if s.id in failing}
            p.ok = all(e.points == e.max_points for e in result.environments)
            told = ", ".join(f"{i} ({reasons[i] or 'expect false'})" for i in failing)
            notes = [f"not passing: {told}"] if failing else []
            p.detail = "; ".join(notes + suspect)

        def refused(p: Phase) -> None:
            result, failing, suspect = section(p, Section.VERIFY, True)
            self.caught.update(failing)
            p.ok = all(e.points < e.max_points for e in result.environments)
            penalised = sorted({c.guard for e in result.environments for c in e.shortcuts if c.penalty and c.guard})
            caught = [*failing, *(f"guard {g}" for g in penalised)]
            told = f"caught by: {', '.join(caught)}" if p.ok else "the shortcut earns full points"
            if not p.ok and any(e.shortcuts for e in result.environments):
                told += " (seen as a shortcut, but no guard with a penalty covers it: add one to `guards:`)"
            p.detail = "; ".join([told, *suspect])

        def apply(p: Phase) -> None:
            assert track.repair is not None
            failures, path = run_repair(
                plan, track.repair, self.audit_dir, f"{name}-{p.name}", track=name, key_path=self.options.key_path
            )
            p.audit = str(path)
            p.ok = not failures
            p.detail = "; ".join(failures)

        if not self._phase(name, "chaos", "every chaos step ok", chaos):
            return
        if track.kind == "variant":
            self._phase(name, "broken", "below full points", broken)
            return
        if track.kind == "solution":
            self._phase(name, "broken", "below full points", broken)  # the repair is worth trying even so
            if not self._phase(name, "repair", "the solution runs (exit 0)", apply):
                return
            self._phase(name, "fixed", "full points", lambda p: full(p, False))
            self._phase(name, "reboot", "full points after a reboot", lambda p: full(p, True))
            return
        if self._phase(name, "repair", "the shortcut runs (exit 0)", apply):
            self._phase(name, "reboot", "below full after a reboot", refused)

    def coverage(self) -> None:
        """Every graded probe must fail somewhere: on a broken machine (some one_of option)
        or after some shortcut; one that never does gives its points for nothing."""
        if any(p.skipped or (not p.ok and p.name in ("chaos", "repair")) for p in self.report.phases):
            return  # a track did not get as far as grading: nothing to conclude
        graded = [s.id for s in self.scenario.verify if s.points > 0]
        never = [i for i in graded if i not in self.caught]

        def body(p: Phase) -> None:
            p.ok = not never
            p.detail = f"never fails: {', '.join(never)}" if never else f"{len(graded)} graded probes, each caught"

        self._phase("all", "coverage", "every graded probe fails somewhere", body)


def _said(cut: Any) -> str:
    return f"{cut.kind} {cut.subject}" + (f" (guard {cut.guard}, -{cut.penalty:g})" if cut.penalty else "")


def _fine(step: Any) -> bool:
    return bool(step.status.value in ("ok", "skipped"))


def _passed(step: Any) -> bool:
    return bool(step.status.value == "ok" and step.points >= step.max_points)


def _run(
    plan: Plan,
    options: SelfTestOptions,
    audit_dir: Path,
    run_id: str,
    section: Section,
    reboot: bool,
    log: IO[str],
    baseline: Baseline | None = None,
) -> Any:
    from .run.runner import RunOptions
    from .session import run_section

    run_options = RunOptions(
        audit_dir=audit_dir,
        section=section,
        run_id=run_id,
        key_path=options.key_path,
        reboot=reboot,
        boot_timeout=options.boot_timeout,
        baseline=baseline,
    )
    return run_section(plan, run_options, plain=True, log=log)


# -- output ---------------------------------------------------------------------------------


def report_as_json(report: SelfTestReport) -> dict[str, Any]:
    return {
        "scenario": report.scenario,
        "name": report.name,
        "seed": report.seed,
        "machines": report.machines,
        "ok": report.ok,
        "interrupted": report.interrupted,
        "audit": str(report.audit_dir),
        "seconds": round(report.seconds, 1),
        "phases": [p.as_json() for p in report.phases],
    }


def _points(p: Phase) -> str:
    if p.points is None or p.max_points is None:
        return "-"
    return f"{p.points:g}/{p.max_points:g}"


def format_report(report: SelfTestReport) -> list[Sequence[str]]:
    """The rows of the phases table (header first); the details go below it
    (:func:`format_details`), where they can be read whole."""
    rows: list[Sequence[str]] = [("TRACK", "PHASE", "EXPECT", "POINTS", "RESULT", "TIME")]
    for p in report.phases:
        result = "not tried" if p.skipped else ("ok" if p.ok else "FAILED")
        rows.append((p.track, p.name, p.expect, _points(p), result, f"{p.seconds:.0f}s"))
    return rows


def format_details(report: SelfTestReport) -> list[str]:
    """``track/phase: detail`` for each phase that has one."""
    return [f"{p.track}/{p.name}: {p.detail}" for p in report.phases if p.detail]
