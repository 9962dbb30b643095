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
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, _log
from ._limits import check_fd_limit
from .cliparse import Parser, add_globals, apply_settings, with_command
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNTRUSTED, EXIT_USAGE, ChaosrunError, UsageError
from .session import new_seed, run_section

if TYPE_CHECKING:
    from ._spans import ScenarioError
    from .api import Exam
    from .build import Builder
    from .scenario import Scenario, Section

#: ``--env-per`` (chaosrun.inventory.ENV_PER; a literal here: the parser loads no YAML code).
ENV_PER = ("host", "group")

COMMANDS = (
    "run",
    "verify",
    "restore",
    "lint",
    "plan",
    "modules",
    "audit",
    "demo",
    "lab",
    "test",
    "serve",
    "worker",
    "token",
    "completion",
    "build",
)


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


def is_inventory_text(text: str, file: str) -> bool:
    """An inventory is named like one (``inventory.yml``, ``exam-inv.yaml``) or is one by
    :func:`chaosrun.inventory.inventory_format`: a ``.csv``, ``.ini`` or ``.cfg`` file, an
    Ansible YAML inventory, chaosrun's YAML with ``environments`` or ``defaults`` and no
    scenario keys, or a file without a YAML extension that is not a YAML mapping (Ansible
    INI, e.g. ``hosts``); everything else is a scenario."""
    from .inventory import inventory_format

    stem = Path(file).stem.lower()
    if "inventory" in stem or stem.endswith("-inv") or stem.startswith("inv-") or stem == "inv":
        return True
    return inventory_format(text, file) is not None


def lint_files(paths: Sequence[str], warnings: list[ScenarioError] | None = None) -> list[ScenarioError]:
    """Every error in every file, sorted by file then position; the warnings of the
    scenarios without errors go to ``warnings`` when it is given."""
    from ._spans import ScenarioErrors
    from .inventory import parse_inventory
    from .lint import check_scenario_text, scenario_warnings
    from .parse import read_source

    errors: list[ScenarioError] = []
    for path in paths:
        try:
            text, name = read_source(path)
        except ScenarioErrors as exc:
            errors.extend(exc.errors)
            continue
        if is_inventory_text(text, name):
            inventory, found = parse_inventory(text, name)
            errors.extend(found)
            if warnings is not None and inventory is not None and not found:
                warnings.extend(inventory.warnings)
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
        if not errors and not args.quiet:
            n = len(args.files)
            print(f"ok: {n} file{'s' if n != 1 else ''} checked", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


def _exam(args: argparse.Namespace, *, inventory: bool = True) -> Exam:
    """The scenario (with ``--var``) and the inventory the command line names."""
    from .api import load_exam

    return load_exam(
        args.scenario,
        getattr(args, "inventory", None) if inventory else None,
        audit_dir=getattr(args, "audit", None) or "audit",
        key_path=getattr(args, "key", None),
        assignments=getattr(args, "var", None) or (),
        env_per=getattr(args, "env_per", "host"),
    )


def _note(line: str) -> None:
    """A note of the engine's (``chaosrun.api``'s ``note``): on stderr unless ``-q``."""
    _log.LOG.info("%s", line)


def _path(args: argparse.Namespace, name: str) -> Path | None:
    value = getattr(args, name, None)
    return Path(value) if value else None


def _duration_arg(flag: str, text: str) -> float:
    from .scenario import parse_duration

    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise UsageError(f"{flag} wants a duration such as 300s or 5m, got {text!r}")
    return seconds


def _run(args: argparse.Namespace, section: Section) -> int:
    from rich.console import Console

    from .api import prepare, watch_exam
    from .reports import formatted, report_as_json

    exam = _exam(args)
    builder = _build_ahead(exam.scenario, section, args.quiet)
    how: dict[str, Any] = {
        "limit": getattr(args, "limit", None),
        "seed": args.seed,
        "resume": _path(args, "resume"),
        "parallel": args.parallel,
        "strict": getattr(args, "strict", False),
        "transfer": getattr(args, "transfer", None),
        "reboot": getattr(args, "reboot", False),
        "boot_timeout": _duration_arg("--boot-timeout", getattr(args, "boot_timeout", "300s")),
        "note": _note,
    }
    fmt = getattr(args, "format", "text")
    console = None if fmt != "text" else Console(highlight=False)
    if getattr(args, "watch", None):
        interval, until = _duration_arg("--watch", args.watch), _duration_arg("--until", args.until)
        check_fd_limit(exam.inventory, args.parallel)
        watch, data = watch_exam(
            exam, interval=interval, until=until, since=_path(args, "since"),
            run_pass=lambda p, o: run_section(p, replace(o, builder=builder), plain=True), **how,
        )  # fmt: skip
        report = watch.last
        if fmt != "text":
            print(formatted(data, fmt), end="")
        else:
            from .watch import print_watch

            print_watch(watch, console, full=args.full)
    else:
        plan, options = prepare(exam, section, since=_path(args, "since"), **how)
        options = replace(options, builder=builder)
        check_fd_limit(exam.inventory, args.parallel, len(plan.environments))
        quiet = open(os.devnull, "w") if args.quiet else None  # noqa: SIM115 - closed below
        try:
            report = run_section(
                plan, options, plain=args.plain or fmt != "text" or args.quiet, log=quiet, console=console,
                full=args.full,
            )  # fmt: skip
        finally:
            if quiet is not None:
                quiet.close()
        if fmt != "text":
            print(formatted(report_as_json(report), fmt), end="")
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED


def _build_ahead(scenario: Scenario, section: Section, quiet: bool) -> Builder:
    """Build what the run needs before it connects anywhere (chaosrun.prebuild): progress
    on a cold cache, and a missing Go toolchain is an error before any target is touched."""
    from .build import Builder
    from .prebuild import build_on_terminal, modules_for

    builder = Builder()
    build_on_terminal(builder, modules_for(scenario, section), quiet=quiet)
    return builder


#: ``--format`` of run and verify: the live table and summary, or a report at the end.
REPORT_FORMATS = ("text", "json", "csv", "junit")


def cmd_run(args: argparse.Namespace) -> int:
    from .scenario import Section

    return _run(args, Section.STEPS)


def cmd_verify(args: argparse.Namespace) -> int:
    from .scenario import Section

    return _run(args, Section.VERIFY)


def cmd_restore(args: argparse.Namespace) -> int:
    from .api import restore_exam
    from .restore import summary_lines
    from .run.progress import PlainReporter

    exam = _exam(args)
    _build_restore_module(args.quiet)
    quiet = open(os.devnull, "w") if args.quiet else None  # noqa: SIM115 - closed below
    try:
        result = restore_exam(
            exam, from_log=_path(args, "from_log"), limit=args.limit, parallel=args.parallel,
            note=_note, reporter=PlainReporter(quiet),
        )  # fmt: skip
    finally:
        if quiet is not None:
            quiet.close()
    if args.format == "json":
        print(json.dumps(result.as_json(), indent=2))
    elif result.audit is not None:
        for line in summary_lines(result.machines):
            print(line)
        print(f"audit log: {result.audit}")
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.restored else EXIT_FAILED


def _build_restore_module(quiet: bool) -> None:
    from .build import Builder
    from .prebuild import RESTORE, build_on_terminal

    build_on_terminal(Builder(), [RESTORE], quiet=quiet)


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
    from .plan import build_plan, format_plan, plan_as_json

    exam = _exam(args)
    seed = args.seed if args.seed is not None else new_seed()
    plan = build_plan(exam.scenario, seed=seed, inventory=exam.inventory)
    if args.format == "json":
        print(json.dumps(plan_as_json(plan), indent=2))
    else:
        print(format_plan(plan))
    return EXIT_OK


def cmd_modules(args: argparse.Namespace) -> int:
    from .modules import catalogue, format_module, module_line

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
                print(module_line(decl))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    try:
        import hypercorn  # noqa: F401
        import sse_starlette  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        missing = f"chaosrun serve needs the server extra ({exc.name} is missing)"
        raise UsageError(f"{missing}: pip install 'chaosrun[server]'") from None

    return serve(
        args.listen,
        Path(args.data),
        cert=_path(args, "cert"),
        key=_path(args, "tls_key"),
        files=tuple(Path(f) for f in args.files or ()),
        monitor_key=_path(args, "monitor_key"),
        db=args.db,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    from .server.worker import run_worker

    return run_worker(
        args.db,
        Path(args.audit),
        name=args.name,
        parallel=args.parallel,
        lease=_duration_arg("--lease", args.lease),
        key_path=_path(args, "key"),
        transfer=args.transfer,
    )


def cmd_token(args: argparse.Namespace) -> int:
    from .server.db import open_store

    store = open_store(Path(args.data), args.db)
    try:
        if args.token_action == "create":
            print(store.create_token(args.name, args.role))
            print(f"chaosrun: token for {args.name} ({args.role}); it is not shown again", file=sys.stderr)
        elif args.token_action == "list":
            for row in store.tokens():
                print(f"{row.name}\t{row.role}\t{row.created}")
        elif not store.revoke_token(args.name):
            raise UsageError(f"no token named {args.name!r} in {store.where}")
    finally:
        store.close()
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from .prebuild import build_command

    return build_command(args)


def cmd_completion(args: argparse.Namespace) -> int:
    from .completion import script

    print(script(args.shell), end="")
    return EXIT_OK


def _complete(rest: Sequence[str]) -> int:
    """``completion --cword N -- WORDS...``: the candidates for ``WORDS[N]``, one per line."""
    from .completion import candidates

    if len(rest) < 2 or rest[1] != "--" or not rest[0].isdigit():
        print("chaosrun: completion --cword N -- WORDS...", file=sys.stderr)
        return EXIT_USAGE
    words = list(rest[2:])
    for line in candidates(_parser(), words, int(rest[0])):
        print(line)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def cmd_test(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ._signals import sigterm_as_interrupt
    from .api import limited
    from .inventory import load_inventory
    from .plan import build_plan
    from .selftest import SelfTestOptions, format_details, format_report, report_as_json, run_selftest

    scenario = _exam(args, inventory=False).scenario
    inventory = Path(args.inventory) if args.inventory else None
    if inventory is not None:
        # a bad inventory, or a --limit that selects none of it, is an error before anything starts
        plan = build_plan(scenario, seed=0, inventory=load_inventory(inventory, env_per=args.env_per))
        if args.limit:
            limited(plan, args.limit, Path(args.audit), note=_note)
    seed = args.seed if args.seed is not None else new_seed()
    options = SelfTestOptions(
        audit_dir=Path(args.audit),
        seed=seed,
        inventory=inventory,
        key_path=Path(args.key) if args.key else None,
        boot_timeout=_duration_arg("--boot-timeout", args.boot_timeout),
        memory_mib=args.memory,
        cpus=args.cpus,
        limit=args.limit,
        env_per=args.env_per,
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
    parser = Parser(prog="chaosrun", description="Agentless chaos for hands-on Linux exams.")
    parser.add_argument("--version", action="version", version=f"chaosrun {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def scenario_args(p: argparse.ArgumentParser, *, seed: bool = True) -> None:
        p.add_argument("scenario", metavar="SCENARIO.yml")
        p.add_argument("-i", "--inventory", metavar="INVENTORY.yml")
        p.add_argument(
            "--env-per", choices=ENV_PER, default="host", help="an Ansible inventory: an environment per host or group"
        )
        if seed:
            p.add_argument("--seed", type=int, help="seed for one_of picks (printed when omitted)")
        p.add_argument("--var", action="append", metavar="NAME=VALUE", help="override a variable of the scenario")

    def runtime_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--parallel", type=int, default=50, metavar="N", help="environments at once (50)")
        p.add_argument("--audit", metavar="DIR", default="audit", help="directory for the audit log (./audit)")
        p.add_argument("--plain", action="store_true", help="plain log lines instead of the live table")
        p.add_argument(
            "--full",
            action="store_true",
            default=None,
            help="at the end, every step of every environment (else only when it fits on the screen)",
        )
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
        p.add_argument(
            "--transfer",
            choices=("auto", "raw", "gzip"),
            help="how module binaries travel to the targets; overrides the scenario's monitor.transfer (auto)",
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
    p.add_argument(
        "--resume",
        metavar="AUDIT.jsonl",
        help="go on with the run of that audit log, cut short: the steps that ended there are not run again",
    )
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
    p.add_argument(
        "--limit",
        metavar="PATTERN",
        help="only these environments of the machines: names, globs, a comma list, @failed or @suspect",
    )
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

    p = sub.add_parser("build", help="compile the modules of scenarios (or all) ahead of exam day")
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO.yml", help="build what these need")
    p.add_argument("--all", action="store_true", help="every module of the catalogue")
    p.add_argument(
        "--arch",
        metavar="LIST",
        help="the targets' architectures, comma-separated: amd64,arm64 (or uname -m names; the monitor's own)",
    )
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="modules compiled at once (2)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("completion", help="print the shell completion script for bash, zsh or fish")
    p.add_argument("shell", choices=("bash", "zsh", "fish"))
    p.set_defaults(func=cmd_completion)

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

    p = sub.add_parser("serve", help="the exam room over HTTP: the API and the live proctor page")
    p.add_argument("--listen", default="127.0.0.1:8420", metavar="HOST:PORT", help="where to listen (127.0.0.1:8420)")
    p.add_argument("--data", default="chaosrun-data", metavar="DIR", help="its database and exams (./chaosrun-data)")
    p.add_argument("--cert", metavar="FILE", help="TLS certificate (PEM), with --key")
    p.add_argument("--key", dest="tls_key", metavar="FILE", help="TLS private key (PEM)")
    p.add_argument(
        "--files",
        action="append",
        metavar="DIR",
        help="a folder whose scenarios and inventories exams may name by path (repeatable; none by default)",
    )
    p.add_argument("--monitor-key", metavar="FILE", help="the monitor's signing key (default: the user's)")
    p.add_argument(
        "--db",
        metavar="URL",
        help="keep everything in PostgreSQL (postgresql://...), shared with `chaosrun worker`s (default: SQLite)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="one more monitor: run the environments of exams a `serve --db` keeps")
    p.add_argument("--db", required=True, metavar="URL", help="the PostgreSQL database of the `chaosrun serve --db`")
    p.add_argument("--audit", default="audit", metavar="DIR", help="this worker's audit logs, AUDIT/EXAM/ (./audit)")
    p.add_argument("--name", metavar="NAME", help="unique in the fleet (default: HOST-PID)")
    p.add_argument("--parallel", type=int, default=20, metavar="N", help="environments at once (20)")
    p.add_argument(
        "--lease", default="30s", metavar="DURATION", help="a claim not renewed for this long is taken over (30s)"
    )
    p.add_argument(
        "--key", metavar="PATH", help="the Ed25519 key that signs this worker's logs (default: the monitor's own)"
    )
    p.add_argument(
        "--transfer",
        choices=("auto", "raw", "gzip"),
        help="how this worker sends module binaries: its links are its own (default: the scenario's monitor.transfer)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("token", help="the access tokens of a `chaosrun serve`")
    token = p.add_subparsers(dest="token_action", required=True, metavar="ACTION")
    q = token.add_parser("create", help="a new token for NAME, printed once (only its SHA-256 is kept)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--role", choices=("operator", "proctor"), required=True, help="operators act, proctors read")
    q.add_argument("--data", default="chaosrun-data", metavar="DIR")
    q.add_argument("--db", metavar="URL", help="the tokens of a `serve --db URL` (PostgreSQL)")
    q = token.add_parser("list", help="the tokens' names and roles")
    q.add_argument("--data", default="chaosrun-data", metavar="DIR")
    q.add_argument("--db", metavar="URL", help="the tokens of a `serve --db URL` (PostgreSQL)")
    q = token.add_parser("revoke", help="remove NAME's token")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--data", default="chaosrun-data", metavar="DIR")
    q.add_argument("--db", metavar="URL", help="the tokens of a `serve --db URL` (PostgreSQL)")
    p.set_defaults(func=cmd_token)
    add_globals(parser, suppress=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:2] == ["completion", "--cword"]:  # a shell asking on TAB (chaosrun.completion)
        return _complete(args_list[2:])
    try:
        parser = _parser()
        args_list = with_command(args_list, COMMANDS)
        args = parser.parse_args(args_list)
        counts = apply_settings(parser, args)
        args = parser.parse_args(args_list)  # again: the command line over the defaults just set
        for name, value in counts.items():
            setattr(args, name, getattr(args, name) or value)
        _log.setup(-1 if args.quiet else args.verbose, args.log_file)
    except ChaosrunError as exc:
        _print_error(exc)
        return exc.exit_code
    _log.LOG.debug("chaosrun %s", " ".join(args_list), extra=_log.FILE_ONLY)
    try:
        code = _call(args)
        _log.LOG.debug("exit status %d", code, extra=_log.FILE_ONLY)
        return code
    finally:
        _log.teardown()


def _call(args: argparse.Namespace) -> int:
    """The command's exit status; chaosrun's own errors and Ctrl-C as one line on stderr."""
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
    from ._spans import ScenarioError, ScenarioErrors

    _log.LOG.error("%s", exc, extra=_log.FILE_ONLY)
    if isinstance(exc, ScenarioErrors):
        _print_errors(exc.errors)
    elif isinstance(exc, ScenarioError):
        _print_errors([exc])
    else:
        print(f"chaosrun: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
