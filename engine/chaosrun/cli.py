"""Command line: ``chaosrun lint|plan|run|verify|modules|audit|demo|lab``.

Exit codes (``chaosrun.errors``): 0 success; 1 the scenario, the run or the check failed;
2 a bad command line; 3 ``audit verify``: the log is intact but sealed by a key nobody
trusts (no ``--key``, no local monitor key, no ``--trust-embedded``); 130 interrupted.
Every error chaosrun raises on purpose derives from ``ChaosrunError``, and ``main``
catches that one class: one line on stderr (one per position for scenario errors), the
exit code its class says.

Lint and plan never import the runtime (trio, asyncssh): ``run``, ``verify``, ``audit``
and ``demo`` import it inside their functions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from ._source import ScenarioError, ScenarioErrors, load_yaml
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNTRUSTED, EXIT_USAGE, ChaosrunError
from .inventory import Inventory, load_inventory, parse_inventory
from .lint import check_scenario_text, lint_scenario, load_scenario, scenario_warnings
from .modules import MONITOR_NOTE, ModuleDecl, catalogue
from .parse import read_source
from .plan import build_plan, format_plan, plan_as_json
from .scenario import Scenario, Section, parse_duration
from .session import new_seed, run_section

COMMANDS = ("run", "verify", "restore", "lint", "plan", "modules", "audit", "demo", "lab", "test")


def _print_errors(errors: Sequence[ScenarioError], fmt: str = "text", warnings: Sequence[ScenarioError] = ()) -> None:
    if fmt == "json":
        report: dict[str, Any] = {"ok": not errors, "errors": [e.as_dict() for e in errors]}
        if warnings:
            report["warnings"] = [w.as_dict() for w in warnings]
        print(json.dumps(report, indent=2))
        return
    for err in errors:
        print(err)
    if errors:
        files = len({e.span.file for e in errors})
        print(
            f"{len(errors)} error{'s' if len(errors) != 1 else ''} in {files} file{'s' if files != 1 else ''}",
            file=sys.stderr,
        )


_SCENARIO_KEYS = frozenset({"version", "name", "steps", "verify", "targets", "vars", "monitor"})


def is_inventory_text(text: str, file: str) -> bool:
    """An inventory has ``environments`` or ``defaults`` and no scenario keys, or is named
    like one (``inventory.yml``, ``exam-inv.yaml``); everything else is a scenario."""
    stem = Path(file).stem.lower()
    if "inventory" in stem or stem.endswith("-inv") or stem.startswith("inv-") or stem == "inv":
        return True
    try:
        root = load_yaml(text, file)
    except ScenarioErrors:
        return False
    if not isinstance(root.value, dict):
        return False
    keys = set(root.value)
    return bool(keys & {"environments", "defaults"}) and not keys & _SCENARIO_KEYS


def lint_files(paths: Sequence[str], warnings: list[ScenarioError] | None = None) -> list[ScenarioError]:
    """Every error in every file, sorted by file then position; the warnings of the
    scenarios without errors go to ``warnings`` when it is given."""
    errors: list[ScenarioError] = []
    for path in paths:
        try:
            text, name = read_source(path)
        except ScenarioErrors as exc:
            errors.extend(exc.errors)
            continue
        if is_inventory_text(text, name):
            errors.extend(parse_inventory(text, name)[1])
        else:
            scenario, found = check_scenario_text(text, name)
            errors.extend(found)
            if warnings is not None and scenario is not None and not found:
                warnings.extend(scenario_warnings(scenario))
    return errors


def cmd_lint(args: argparse.Namespace) -> int:
    warnings: list[ScenarioError] = []
    errors = lint_files(args.files, warnings)
    if args.format == "json":
        _print_errors(errors, "json", warnings)
    else:
        for warning in warnings:
            print(warning)
        _print_errors(errors)
        if not errors:
            n = len(args.files)
            print(f"ok: {n} file{'s' if n != 1 else ''} checked", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


class UsageError(ChaosrunError):
    """A bad command line (exit 2)."""

    exit_code = EXIT_USAGE


def _with_vars(scenario: Scenario, assignments: Sequence[str]) -> Scenario:
    """Apply ``--var NAME=VALUE`` (VALUE read as a YAML scalar: 64 is an int)."""
    if not assignments:
        return scenario
    values = dict(scenario.vars)
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--var wants NAME=VALUE, got {item!r}")
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise UsageError(f"--var {name}: the scenario has no variable {name!r} (it has: {known})")
        values[name] = yaml.safe_load(text) if text else ""
    return dataclasses.replace(scenario, vars=values)


def _load(args: argparse.Namespace) -> tuple[Scenario, Inventory | None]:
    scenario = load_scenario(args.scenario)
    for warning in scenario_warnings(scenario):
        print(f"chaosrun: {warning}", file=sys.stderr)
    assignments = getattr(args, "var", None) or []
    if assignments:
        scenario = _with_vars(scenario, assignments)
        errors = lint_scenario(scenario)  # the new values must still fit the modules
        if errors:
            raise ScenarioErrors(errors)
    inventory = load_inventory(args.inventory) if getattr(args, "inventory", None) else None
    return scenario, inventory


def _duration_arg(flag: str, text: str) -> float:
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise UsageError(f"{flag} wants a duration such as 300s or 5m, got {text!r}")
    return seconds


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit toward the hard limit (each environment holds
    an SSH connection and a listener per running step). Returns the soft limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


def _run(args: argparse.Namespace, section: Section) -> int:
    from rich.console import Console

    from .run.runner import RunOptions

    scenario, inventory = _load(args)
    seed = args.seed
    if seed is None and getattr(args, "limit", None):
        from .limit import past_seed

        if (seed := past_seed(args.limit, Path(args.audit))) is not None:
            print(f"chaosrun: seed {seed}, the past run's (--limit {args.limit}; --seed to choose)", file=sys.stderr)
    seed = seed if seed is not None else new_seed()
    plan = build_plan(scenario, seed=seed, inventory=inventory)
    if getattr(args, "limit", None):
        plan = _limited(plan, args.limit, Path(args.audit))
    limit = raise_fd_limit()
    if limit < 4 * min(args.parallel, len(plan.environments)) + 64:
        print(
            f"chaosrun: warning: only {limit} open files allowed; raise `ulimit -n` for "
            f"{len(plan.environments)} environments at --parallel {args.parallel}",
            file=sys.stderr,
        )
    options = RunOptions(
        audit_dir=Path(args.audit),
        section=section,
        parallel=args.parallel,
        key_path=Path(args.key) if args.key else None,
        strict=getattr(args, "strict", False),
        reboot=getattr(args, "reboot", False),
        boot_timeout=_duration_arg("--boot-timeout", getattr(args, "boot_timeout", "300s")),
    )
    fmt = getattr(args, "format", "text")
    console = None if fmt != "text" else Console(highlight=False)
    if getattr(args, "watch", None):
        report = _watch(args, plan, options, fmt, console)
    else:
        report = run_section(plan, options, plain=args.plain or fmt != "text", console=console)
        if fmt != "text":
            print(_formatted(report_as_json(report), fmt), end="")
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED


def _watch(args: argparse.Namespace, plan: Any, options: Any, fmt: str, console: Any) -> Any:
    """``verify --watch``: passes until ``--until``; the last pass's report with each probe's
    time to fix, printed as ``--format`` says."""
    from .run.progress import print_summary
    from .watch import clock_starts, run_watch, watch_as_json

    if options.reboot:
        raise UsageError("--watch grades the machines as they are; it does not take --reboot")
    interval = _duration_arg("--watch", args.watch)
    until = _duration_arg("--until", args.until)
    clock, source = clock_starts(Path(args.audit), Path(args.since) if args.since else None)
    if not source:
        print("chaosrun: no run log in the audit folder: the exam clock starts with the watch", file=sys.stderr)

    def one_pass(p: Any, o: Any) -> Any:
        return run_section(p, o, plain=True)

    watch = run_watch(
        plan, options, interval=interval, until=until, clock=clock, clock_source=source, run_pass=one_pass,
        log=sys.stderr,
    )  # fmt: skip
    report = watch.last
    data = report_as_json(report)
    for env in data["environments"]:
        for step in env["steps"]:
            step["time_to_fix"] = watch.time_to_fix(env["name"], step["id"])
    data["watch"] = watch_as_json(watch)
    if fmt != "text":
        print(_formatted(data, fmt), end="")
        return report
    print_summary(report, console)
    for (env_name, step_id), w in sorted(watch.probes.items()):
        fixed = watch.time_to_fix(env_name, step_id)
        said = "never passed" if fixed is None else f"fixed after {_clock(fixed)}"
        if w.regressed:
            said += ", then failed again" + (" (passing at the end)" if w.passing else "")
        console.print(f"{env_name} {step_id}: {said}")
    return report


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


#: ``--format`` of run and verify: the live table and summary, or a report at the end.
REPORT_FORMATS = ("text", "json", "csv", "junit")


def _formatted(report: dict[str, Any], fmt: str) -> str:
    from .reports import report_as_csv, report_as_junit

    if fmt == "csv":
        return report_as_csv(report)
    if fmt == "junit":
        return report_as_junit(report)
    return json.dumps(report, indent=2) + "\n"


def _limited(plan: Any, pattern: str, audit_dir: Path) -> Any:
    """The plan with only the environments ``--limit`` selects (its picks made on all of
    them, so each keeps the fault it had), said on stderr."""
    from .limit import select

    names = [e.name for e in plan.environments]
    chosen = set(select(names, pattern, audit_dir))
    shown = ", ".join(n for n in names if n in chosen)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    print(f"chaosrun: --limit {pattern}: {len(chosen)} of {len(names)} environments ({shown})", file=sys.stderr)
    return dataclasses.replace(plan, environments=tuple(e for e in plan.environments if e.name in chosen))


def report_as_json(report: Any) -> dict[str, Any]:
    return {
        "run": report.run_id,
        "section": report.section.value,
        "ok": report.ok,
        "interrupted": report.interrupted,
        "seed": report.seed,
        "audit": str(report.audit_path),
        "points": sum(e.points for e in report.environments),
        "max_points": sum(e.max_points for e in report.environments),
        "environments": [
            {
                "name": e.name,
                "ok": e.ok,
                "points": e.points,
                "max_points": e.max_points,
                "integrity": e.integrity,
                "signals": [s.as_json() for s in e.signals],
                "zeroed": e.zeroed,
                "steps": [
                    {
                        "id": s.id,
                        "status": s.status.value,
                        "reason": s.reason,
                        "duration": s.duration,
                        "attempts": s.attempts,
                        "points": s.points,
                        "max_points": s.max_points,
                        "result": s.result,
                    }
                    for s in e.steps
                ],
            }
            for e in report.environments
        ],
    }


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, Section.STEPS)


def cmd_verify(args: argparse.Namespace) -> int:
    return _run(args, Section.VERIFY)


def cmd_restore(args: argparse.Namespace) -> int:
    from .restore import newest_run_log, next_restore_id, read_run, restore_plan, restore_summary, summary_lines
    from .run.runner import RunOptions

    scenario, inventory = _load(args)
    path = Path(args.from_log) if args.from_log else newest_run_log(Path(args.audit), scenario.sha256)
    past = read_run(path)
    if past.scenario_sha256 and past.scenario_sha256 != scenario.sha256:
        print(f"chaosrun: warning: {args.scenario} changed since the run {past.run_id}", file=sys.stderr)
    sealed = "" if past.sealed else " (never sealed: the run was cut short; restoring what it recorded)"
    print(f"chaosrun: restoring run {past.run_id} from {path}{sealed}", file=sys.stderr)
    plan = build_plan(scenario, seed=past.seed if past.seed is not None else 0, inventory=inventory)
    if args.limit:
        plan = _limited(plan, args.limit, path.parent)
    plan, notes = restore_plan(past, plan)
    for note in notes:
        print(f"chaosrun: {note}", file=sys.stderr)
    if not plan.environments:
        print(f"chaosrun: nothing to restore: run {past.run_id} is restored already", file=sys.stderr)
        if args.format == "json":
            print(json.dumps({"run": past.run_id, "restored": True, "machines": []}, indent=2))
        return EXIT_OK
    options = RunOptions(
        audit_dir=path.parent,
        parallel=args.parallel,
        key_path=Path(args.key) if args.key else None,
        run_id=next_restore_id(past),
        restores=past.run_id,
    )
    report = run_section(plan, options, plain=True)
    rows = restore_summary(report)
    ok = not report.interrupted and all(r.ok for r in rows)
    if args.format == "json":
        data = {
            "run": past.run_id,
            "audit": str(report.audit_path),
            "restored": ok,
            "interrupted": report.interrupted,
            "machines": [dataclasses.asdict(r) for r in rows],
        }
        print(json.dumps(data, indent=2))
    else:
        for line in summary_lines(rows):
            print(line)
        print(f"audit log: {report.audit_path}")
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if ok else EXIT_FAILED


def cmd_audit(args: argparse.Namespace) -> int:
    from .auditcheck import KeyMismatchError, verify_audit_log
    from .run.signing import MonitorKeyError

    key = Path(args.key) if args.key else None
    try:
        verdict = verify_audit_log(Path(args.file), key, trust_embedded=args.trust_embedded)
    except KeyMismatchError as exc:
        raise UsageError(str(exc)) from None
    except MonitorKeyError as exc:  # the key to trust is part of the command line
        raise UsageError(f"cannot read the trusted key: {exc}") from None
    print(verdict.message)
    if verdict.ok:
        return EXIT_OK
    return EXIT_UNTRUSTED if verdict.untrusted else EXIT_FAILED


def cmd_plan(args: argparse.Namespace) -> int:
    scenario, inventory = _load(args)
    seed = args.seed if args.seed is not None else new_seed()
    plan = build_plan(scenario, seed=seed, inventory=inventory)
    if args.format == "json":
        print(json.dumps(plan_as_json(plan), indent=2))
    else:
        print(format_plan(plan))
    return EXIT_OK


def _module_line(decl: ModuleDecl) -> str:
    first = decl.summary
    where = f" [from: {decl.where}]" if decl.kind.value == "probe" and decl.where != "target" else ""
    needs = f" [needs: {', '.join(decl.requires)}]" if decl.requires else ""
    return f"  {decl.name:<18} {first}{where}{needs}"


def format_module(decl: ModuleDecl) -> str:
    lines = [f"{decl.name} ({decl.kind.value})", f"  {decl.description}"]
    if decl.needs:
        lines.append(f"  needs: {decl.needs}")
    if decl.kind.value == "probe":
        lines.append(f"  runs from: {decl.where}" + (f". {MONITOR_NOTE}" if "monitor" in decl.where else ""))
    lines += ["", "parameters:"]
    if not decl.params:
        lines.append("  (none)")
    for p in decl.params:
        if p.required:
            flag = "required"
        elif p.has_default:
            flag = f"default {json.dumps(p.default)}"
        else:
            flag = "optional"
        choices = f" one of {', '.join(json.dumps(v) for v in p.enum)}." if p.enum else ""
        lines.append(f"  {p.name:<16} {p.shown_type:<16} {flag}")
        if p.description or choices:
            lines.append(f"      {p.description}{choices}")
    if decl.results:
        lines += ["", "result fields (steps.ID.result.FIELD, or result.FIELD in expect):"]
        for f in decl.results:
            lines.append(f"  {f.name:<16} {f.type:<16} {f.description}")
    return "\n".join(lines)


def cmd_modules(args: argparse.Namespace) -> int:
    cat = catalogue()
    if args.name:
        decl = cat.get(args.name)
        if decl is None:
            raise UsageError(f"unknown module {args.name!r}; `chaosrun modules` lists them")
        if args.format == "json":
            print(json.dumps(dict(decl.schema), indent=2))
        else:
            print(format_module(decl))
        return EXIT_OK
    if args.format == "json":
        print(
            json.dumps(
                [{"name": d.name, "kind": d.kind.value, "description": d.description} for d in cat.values()], indent=2
            )
        )
        return EXIT_OK
    for kind, title in (("chaos", "chaos modules"), ("probe", "probes")):
        print(f"{title}:")
        for decl in cat.values():
            if decl.kind.value == kind:
                print(_module_line(decl))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def cmd_test(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ._signals import sigterm_as_interrupt
    from .selftest import SelfTestOptions, format_details, format_report, report_as_json, run_selftest

    scenario, _ = _load(argparse.Namespace(scenario=args.scenario, var=args.var, inventory=None))
    inventory = Path(args.inventory) if args.inventory else None
    if inventory is not None:
        load_inventory(inventory)  # a bad inventory is an error before anything starts
    seed = args.seed if args.seed is not None else new_seed()
    options = SelfTestOptions(
        audit_dir=Path(args.audit),
        seed=seed,
        inventory=inventory,
        key_path=Path(args.key) if args.key else None,
        boot_timeout=_duration_arg("--boot-timeout", args.boot_timeout),
        memory_mib=args.memory,
        cpus=args.cpus,
    )
    as_json = args.format == "json"

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    progress(f"test: {scenario.name} (seed {seed}) on {'lab VMs' if inventory is None else inventory}")
    with sigterm_as_interrupt(), open(os.devnull, "w") if args.quiet else contextlib.nullcontext(sys.stderr) as log:
        report = run_selftest(scenario, options, progress, log)
    if as_json:
        print(json.dumps(report_as_json(report), indent=2))
    else:
        rows = format_report(report)
        table = Table(*rows[0], box=None, pad_edge=False, highlight=False)
        for row in rows[1:]:
            style = "bold red" if row[4] == "FAILED" else None
            table.add_row(*row, style=style)
        console = Console(highlight=False)
        console.print(table)
        for line in format_details(report):
            console.print(f"  {line}", soft_wrap=True)
        failed = sum(1 for p in report.phases if not p.ok and not p.skipped)
        skipped = sum(1 for p in report.phases if p.skipped)
        verdict = "interrupted" if report.interrupted else ("passed" if report.ok else "FAILED")
        console.print(
            f"test {verdict}: {len(report.phases)} phases, {failed} failed"
            + (f", {skipped} not tried" if skipped else "")
            + f" in {report.seconds:.0f} s; audit logs in {report.audit_dir}"
        )
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_lab(args: argparse.Namespace) -> int:
    from .lab.cli import run_lab  # qemu VMs: nothing of it loads for the other commands

    return run_lab(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaosrun", description="Agentless chaos for hands-on Linux exams.")
    parser.add_argument("--version", action="version", version=f"chaosrun {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def scenario_args(p: argparse.ArgumentParser, *, seed: bool = True) -> None:
        p.add_argument("scenario", metavar="SCENARIO.yml")
        p.add_argument("-i", "--inventory", metavar="INVENTORY.yml")
        if seed:
            p.add_argument("--seed", type=int, help="seed for one_of picks (printed when omitted)")
        p.add_argument("--var", action="append", metavar="NAME=VALUE", help="override a variable of the scenario")

    def runtime_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--parallel", type=int, default=50, metavar="N", help="environments at once (50)")
        p.add_argument("--audit", metavar="DIR", default="audit", help="directory for the audit log (./audit)")
        p.add_argument("--plain", action="store_true", help="plain log lines instead of the live table")
        p.add_argument(
            "--limit",
            metavar="PATTERN",
            help="only these environments: names, globs, a comma list, @failed or @suspect (of the newest audit log)",
        )
        p.add_argument(
            "--key",
            metavar="PATH",
            help="monitor's Ed25519 signing key ($CHAOSRUN_KEY or ~/.config/chaosrun/monitor_ed25519)",
        )

    p = sub.add_parser("lint", help="check scenario and inventory files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("plan", help="print the execution plan without touching any host")
    scenario_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="inject the scenario's steps")
    scenario_args(p)
    runtime_args(p)
    p.add_argument("--format", choices=REPORT_FORMATS, default="text", help="the report at the end (text)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("restore", help="undo a run's chaos on every environment, from its audit log")
    scenario_args(p, seed=False)
    p.add_argument("--audit", metavar="DIR", default="audit", help="where the run's audit log is (./audit); its newest")
    p.add_argument(
        "--from", dest="from_log", metavar="AUDIT.jsonl", help="the run to restore (else the newest in --audit)"
    )
    p.add_argument("--parallel", type=int, default=50, metavar="N", help="environments at once (50)")
    p.add_argument("--limit", metavar="PATTERN", help="only these environments: names, globs, a comma list, @failed")
    p.add_argument("--key", metavar="PATH", help="monitor's Ed25519 signing key (as for run)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("verify", help="run the verify probes and print points")
    scenario_args(p)
    runtime_args(p)
    p.add_argument("--format", choices=REPORT_FORMATS, default="text", help="the report at the end (text)")
    p.add_argument(
        "--strict", action="store_true", help="an environment whose integrity is suspect scores 0, with the reason"
    )
    p.add_argument("--reboot", action="store_true", help="reboot every target, wait until it is back, then grade")
    p.add_argument("--watch", metavar="INTERVAL", help="grade again every INTERVAL (30s): each probe's time to fix")
    p.add_argument("--until", metavar="DURATION", default="2h", help="with --watch: how long to watch (2h)")
    p.add_argument("--since", metavar="AUDIT.jsonl", help="with --watch: the run whose end starts each exam clock")
    p.add_argument(
        "--boot-timeout",
        default="300s",
        metavar="DURATION",
        help="how long a rebooted target has to answer again (300s); one that does not scores 0",
    )
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("test", help="the author's self-test on fresh lab VMs: chaos, solution, reboot, shortcuts")
    scenario_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--audit", metavar="DIR", default="audit", help="directory for the audit logs (./audit)")
    p.add_argument(
        "--key",
        metavar="PATH",
        help="monitor's Ed25519 signing key ($CHAOSRUN_KEY or ~/.config/chaosrun/monitor_ed25519)",
    )
    p.add_argument("--boot-timeout", default="300s", metavar="DURATION", help="for each VM and reboot (300s)")
    p.add_argument("--memory", type=int, default=1024, metavar="MiB", help="memory per lab VM (1024)")
    p.add_argument("--cpus", type=int, default=2, metavar="N", help="virtual CPUs per lab VM (2)")
    p.add_argument("--quiet", action="store_true", help="one line per phase only, not every step's")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("modules", help="the catalogue of chaos and probe modules")
    p.add_argument("name", nargs="?")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_modules)

    p = sub.add_parser("audit", help="check an audit log")
    p.add_argument("action", choices=("verify",))
    p.add_argument("file", metavar="AUDIT.jsonl")
    trust = p.add_mutually_exclusive_group()
    trust.add_argument(
        "--key", metavar="PATH", help="trusted monitor key (.pub or private); default the local monitor key"
    )
    trust.add_argument(
        "--trust-embedded", action="store_true", help="trust the key embedded in the log's seal (its id is printed)"
    )
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("demo", help="run the bundled demo against a throwaway local testenv")
    p.add_argument(
        "--server",
        choices=("auto", "openssh", "asyncssh"),
        default="auto",
        help="local SSH server: OpenSSH's sshd when installed (auto), or an in-process one",
    )
    p.add_argument("--audit", metavar="DIR", default="audit", help="directory for the audit logs (./audit)")
    p.add_argument("--keep", action="store_true", help="keep the temporary testenv folder for inspection")
    p.add_argument("--lab", action="store_true", help="run the same exam against a real Debian VM (chaosrun lab)")
    p.add_argument("--plain", action="store_true", help="plain log lines instead of the live table")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("lab", help="disposable real Debian VMs (qemu) for authors, tests and the demo")
    lab = p.add_subparsers(dest="lab_action", required=True, metavar="ACTION")
    q = lab.add_parser("up", help="boot one VM per role of SCENARIO (and environment); write an inventory")
    q.add_argument("scenario", nargs="?", metavar="SCENARIO.yml", help="its roles and probe ports (else one 'target')")
    q.add_argument("-o", "--output", required=True, metavar="INVENTORY.yml", help="the inventory to write")
    q.add_argument("--envs", type=int, default=1, metavar="N", help="environments, each with a VM per role (1)")
    q.add_argument("--memory", type=int, default=1024, metavar="MiB", help="memory per VM (1024)")
    q.add_argument("--cpus", type=int, default=2, metavar="N", help="virtual CPUs per VM (2)")
    q.add_argument("--port", type=int, action="append", metavar="PORT", help="forward this port too (repeatable)")
    q.add_argument("--ssh-port", type=int, default=22, metavar="PORT", help="host port for the guest's SSH (22)")
    q.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="qemu accelerator ($CHAOSRUN_LAB_ACCEL; auto)")
    q.add_argument("--boot-timeout", default="300s", metavar="DURATION", help="until each VM answers SSH (300s)")
    q.add_argument(
        "--cold",
        action="store_true",
        help="boot every VM instead of restoring the saved one (slower; the saved VM is made on first use)",
    )
    q = lab.add_parser("status", help="each VM of a lab: running, pid, address, uptime, SSH")
    q.add_argument("-i", "--inventory", required=True, metavar="INVENTORY.yml")
    q.add_argument("--format", choices=("text", "json"), default="text")
    q = lab.add_parser("down", help="stop a lab's VMs and remove their overlays")
    q.add_argument("-i", "--inventory", required=True, metavar="INVENTORY.yml")
    p.set_defaults(func=cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # `chaosrun SCENARIO.yml` is `chaosrun run SCENARIO.yml`
    if args_list and args_list[0] not in COMMANDS and not args_list[0].startswith("-"):
        args_list.insert(0, "run")
    args = _parser().parse_args(args_list)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # `chaosrun modules | head`: the reader left, nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except ChaosrunError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("chaosrun: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _print_error(exc: ChaosrunError) -> None:
    """One line on stderr, ``chaosrun: <message>``; scenario errors as lint prints them."""
    if isinstance(exc, ScenarioErrors):
        _print_errors(exc.errors)
    elif isinstance(exc, ScenarioError):
        _print_errors([exc])
    else:
        print(f"chaosrun: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
