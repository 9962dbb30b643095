"""Lab: the ``chaosrun lab up|status|down`` actions, from parsed arguments to printed lines.

The parser lives in ``chaosrun.cli`` with the other commands; this module turns its
arguments into ``UpOptions`` and prints what the commands report. Progress goes to
stderr, results (the inventory's path, the status table) to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import EXIT_FAILED, EXIT_OK
from ..lint import load_scenario
from ..scenario import parse_duration
from .commands import UpOptions, format_status, lab_down, lab_status, lab_up, scenario_lab
from .errors import LabError
from .network import DEFAULT_SERVICE_PORTS

__all__ = ["run_lab"]


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _seconds(text: str) -> float:
    try:
        value: float | None = float(text)  # plain seconds
    except ValueError:
        value = parse_duration(text)
    if value is None or value <= 0:
        raise LabError(f"--boot-timeout wants a duration such as 300s or 5m, not {text!r}")
    return value


def run_lab(args: argparse.Namespace) -> int:
    """Run one ``chaosrun lab`` action; returns the exit code."""
    if args.lab_action == "up":
        return _up(args)
    if args.lab_action == "status":
        return _status(args)
    return _down(args)


def _up(args: argparse.Namespace) -> int:
    roles: tuple[str, ...] = ("target",)
    ports: tuple[int, ...] = DEFAULT_SERVICE_PORTS
    if args.scenario:
        scenario = load_scenario(args.scenario)
        roles, ports = scenario_lab(scenario)
        if scenario.monitor.callback != "tunnel":
            _progress(
                f"lab: note: {args.scenario} has monitor.callback {scenario.monitor.callback}; a lab VM reaches "
                "nothing outside, so runs against it need `monitor: {callback: tunnel}`"
            )
    extra = tuple(args.port or ())
    for port in (*extra, args.ssh_port):
        if not 0 < port < 65536:
            raise LabError(f"port {port} is not a TCP port (1-65535)")
    options = UpOptions(
        inventory=Path(args.output),
        roles=roles,
        service_ports=tuple(sorted({*ports, *extra})),
        envs=args.envs,
        memory_mib=args.memory,
        cpus=args.cpus,
        ssh_port=args.ssh_port,
        accel=args.accel,
        boot_timeout=_seconds(args.boot_timeout),
        cold=args.cold,
    )
    started = time.monotonic()
    state = lab_up(options, _progress)
    _progress(
        f"lab: {len(state.vms)} VM(s) up in {time.monotonic() - started:.1f} s; "
        f"`chaosrun lab down -i {args.output}` stops them"
    )
    for vm in state.vms:
        ports_text = ", ".join(f"{f.host_port}/{f.proto}" for f in vm.forwards)
        _progress(f"lab:   {vm.env}/{vm.role}: ssh root@{vm.address} -p {vm.ssh_port} (forwards {ports_text})")
    print(args.output)
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    statuses = lab_status(Path(args.inventory))
    if args.format == "json":
        print(json.dumps([s.as_json() for s in statuses], indent=2))
    else:
        print(format_status(statuses))
    return EXIT_OK if all(s.running for s in statuses) else EXIT_FAILED


def _down(args: argparse.Namespace) -> int:
    started = time.monotonic()
    stopped = lab_down(Path(args.inventory), _progress)
    _progress(
        f"lab: down: {stopped} VM(s) stopped, overlays and lab files removed in {time.monotonic() - started:.1f} s"
    )
    return EXIT_OK
