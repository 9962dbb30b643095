"""Command line: ``chaosrun lint|plan|run|verify|modules|audit|demo``.

Exit codes (``chaosrun.errors``): 0 success; 1 the scenario, the run or the check failed;
2 a bad command line; 130 interrupted. Every error chaosrun raises on purpose derives from
``ChaosrunError``, and ``main`` catches that one class: one line on stderr (one per
position for scenario errors), the exit code its class says.

Lint and plan never import the runtime (trio, asyncssh): ``run``, ``verify``, ``audit``
and ``demo`` import it inside their functions.
"""

from __future__ import annotations

import argparse
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
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ChaosrunError
from .inventory import Inventory, load_inventory, parse_inventory
from .lint import check_scenario_text, lint_scenario, load_scenario
from .modules import ModuleDecl, catalogue
from .parse import read_source
from .plan import build_plan, format_plan, plan_as_json
from .scenario import Scenario, Section
from .session import new_seed, run_section

COMMANDS = ("run", "verify", "lint", "plan", "modules", "audit", "demo")


def _print_errors(errors: Sequence[ScenarioError], fmt: str = "text") -> None:
    if fmt == "json":
        print(json.dumps({"ok": not errors, "errors": [e.as_dict() for e in errors]}, indent=2))
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


def lint_files(paths: Sequence[str]) -> list[ScenarioError]:
    """Every error in every file, sorted by file then position."""
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
            errors.extend(check_scenario_text(text, name)[1])
    return errors


def cmd_lint(args: argparse.Namespace) -> int:
    errors = lint_files(args.files)
    if args.format == "json":
        _print_errors(errors, "json")
    else:
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
    assignments = getattr(args, "var", None) or []
    if assignments:
        scenario = _with_vars(scenario, assignments)
        errors = lint_scenario(scenario)  # the new values must still fit the modules
        if errors:
            raise ScenarioErrors(errors)
    inventory = load_inventory(args.inventory) if getattr(args, "inventory", None) else None
    return scenario, inventory


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
    seed = args.seed if args.seed is not None else new_seed()
    plan = build_plan(scenario, seed=seed, inventory=inventory)
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
    )
    as_json = getattr(args, "format", "text") == "json"
    console = None if as_json else Console(highlight=False)
    report = run_section(plan, options, plain=args.plain or as_json, console=console)
    if as_json:
        print(json.dumps(report_as_json(report), indent=2))
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED


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


def cmd_audit(args: argparse.Namespace) -> int:
    from .auditcheck import verify_audit_log
    from .run.signing import MonitorKeyError

    try:
        verdict = verify_audit_log(Path(args.file), Path(args.key) if args.key else None)
    except MonitorKeyError as exc:  # the key to trust is part of the command line
        raise UsageError(f"cannot read the trusted key: {exc}") from None
    print(verdict.message)
    return EXIT_OK if verdict.ok else EXIT_FAILED


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
    first = decl.description.split(". ")[0].rstrip(".")
    return f"  {decl.name:<18} {first}"


def format_module(decl: ModuleDecl) -> str:
    lines = [f"{decl.name} ({decl.kind.value})", f"  {decl.description}", "", "parameters:"]
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
        lines.append(f"  {p.name:<16} {p.type:<16} {flag}")
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
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("verify", help="run the verify probes and print points")
    scenario_args(p)
    runtime_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("modules", help="the catalogue of chaos and probe modules")
    p.add_argument("name", nargs="?")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_modules)

    p = sub.add_parser("audit", help="check an audit log")
    p.add_argument("action", choices=("verify",))
    p.add_argument("file", metavar="AUDIT.jsonl")
    p.add_argument("--key", metavar="PATH", help="trusted monitor key (.pub or private); default the local monitor key")
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
    p.add_argument("--plain", action="store_true", help="plain log lines instead of the live table")
    p.set_defaults(func=cmd_demo)
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
