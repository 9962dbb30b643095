"""``chaosrun demo``: a newcomer's first run, end to end, against a throwaway local testenv.

One command shows the whole life of an exam: a temp folder stands for a candidate's
machine, a local SSH server on 127.0.0.1 makes it reachable, the bundled scenario
``scenarios/demo.yaml`` breaks it (``run``), its probes grade it (``verify``: low points),
a scripted candidate repairs it, ``verify`` grades it again (full points), and every audit
log is checked. Everything but the audit logs lives in the temp folder and is removed at
the end, also on Ctrl-C and on errors; ``--keep`` leaves the folder for a look around.

Exit status: 0 when the run went ok and the final verify scored full points; 1 otherwise,
and for any error chaosrun raises (``ChaosrunError``: its message is printed, no traceback);
130 when interrupted.

The local SSH servers come from the test support, :mod:`chaosrun.testing`: the demo is a
user of it, like the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from ._resources import data_dir
from ._signals import sigterm_as_interrupt
from .auditcheck import verify_audit_log
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ChaosrunError
from .inventory import Inventory, load_inventory
from .lint import load_scenario
from .plan import build_plan
from .run.runner import RunOptions
from .run.signing import key_id, load_public, public_b64
from .scenario import Scenario, Section
from .session import new_seed, run_section
from .testing import LocalSshd, LocalSshdError, local_asyncssh_server, local_sshd

__all__ = ["DEMO_ENV", "Fix", "find_fixes", "run_demo", "sandbox_tree"]

SSHD = Path("/usr/sbin/sshd")
DEMO_ENV = "cand-001"  # the one environment of the demo's inventory

#: The candidate's machine in miniature: path (relative to the sandbox) -> (mode, text).
_TREE: dict[str, tuple[int, str]] = {
    "etc/hostname": (0o644, "web01\n"),
    "etc/hosts": (
        0o644,
        "127.0.0.1\tlocalhost\n127.0.1.1\tweb01\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    "etc/nginx/nginx.conf": (
        0o644,
        textwrap.dedent(
            """\
            user www-data;
            worker_processes auto;
            events { worker_connections 768; }
            http {
                access_log /var/log/nginx/access.log;
                server {
                    listen 80 default_server;
                    root /srv/www;
                    index index.html;
                }
            }
            """
        ),
    ),
    "etc/ssh/sshd_config": (
        0o644,
        textwrap.dedent(
            """\
            Include /etc/ssh/sshd_config.d/*.conf
            Port 22
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM yes
            X11Forwarding no
            Subsystem sftp /usr/lib/openssh/sftp-server
            """
        ),
    ),
    "var/log/nginx/access.log": (0o640, '127.0.0.1 - - [01/Jan/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 612\n'),
    "var/log/nginx/error.log": (0o640, ""),
    "srv/www/index.html": (0o644, "<!doctype html>\n<title>web01</title>\n<h1>It works.</h1>\n"),
}


def sandbox_tree(root: Path) -> None:
    """Create the candidate's small fake filesystem under ``root`` (an existing, empty folder)."""
    for rel, (mode, text) in _TREE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; see the module docstring.

    Args:
        args: ``server`` (``auto|openssh|asyncssh``), ``audit`` (folder for the audit logs),
            ``keep`` (leave the temp folder), ``plain`` (no live table).

    Returns:
        The exit status.
    """
    console = Console(highlight=False, soft_wrap=True)
    demo = _Demo(args, console)
    with sigterm_as_interrupt():
        try:
            return demo.main()
        except ChaosrunError as exc:
            console.print(Text(f"chaosrun demo: {exc}", style="red"))
            return exc.exit_code
        except KeyboardInterrupt:
            console.print(Text("\nchaosrun demo: interrupted", style="yellow"))
            return EXIT_INTERRUPTED


@dataclasses.dataclass(frozen=True)
class _Score:
    ok: bool
    points: float
    max_points: float
    audit: Path | None
    interrupted: bool

    @property
    def text(self) -> str:
        return f"{self.points:g}/{self.max_points:g}"

    @property
    def full(self) -> bool:
        return self.ok and self.max_points > 0 and self.points == self.max_points


class _Demo:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.audit_dir = Path(args.audit).absolute()
        self.key_path: Path | None = None  # the demo's throwaway monitor key, in the temp folder
        self.steps = 0

    # narration

    def heading(self, text: str) -> None:
        self.steps += 1
        self.console.print()
        self.console.rule(Text(f"{self.steps}. {text}", style="bold"), align="left")

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(Text(text, style=style or ""))

    # the demo

    def main(self) -> int:
        scenario_path = data_dir("scenarios") / "demo.yaml"
        workdir = Path(tempfile.mkdtemp(prefix="chaosrun-demo-"))
        try:
            if getattr(self.args, "lab", False):
                passed, verdict = self._in_lab(workdir, scenario_path)
            else:
                passed, verdict = self._in(workdir, scenario_path)
        finally:
            if self.args.keep:
                self.say(f"kept the testenv folder {workdir} (--keep); remove it when done")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
                self.say(f"removed the testenv folder {workdir}")
        self.console.print()
        self.say(verdict, "bold green" if passed else "bold red")
        return EXIT_OK if passed else EXIT_FAILED

    def _in(self, workdir: Path, scenario_path: Path) -> tuple[bool, str]:
        """The demo proper; returns whether it passed and its one-line verdict."""
        sandbox = workdir / "testenv"
        sandbox.mkdir()
        sandbox_tree(sandbox)
        remote_tmp = workdir / "testenv-tmp"  # where the chaos binaries land, briefly
        remote_tmp.mkdir(mode=0o700)
        # The audit logs are signed with a throwaway monitor key, so the demo leaves the
        # operator's real key (~/.config/chaosrun/monitor_ed25519) alone; its public half
        # is kept beside the logs, so they can be checked later.
        self.key_path = workdir / "monitor_ed25519"
        self.say("chaosrun demo: break a small web server's files, grade them, repair them, grade again.", "bold")
        self.say(f"testenv folder (the candidate's machine): {workdir}")
        self.say(f"scenario: {scenario_path}")

        with self._server(workdir) as server:
            inventory = self._write_inventory(workdir, server, remote_tmp)
            self.say(f"inventory: {inventory}")

            scenario = load_scenario(scenario_path)
            scenario = dataclasses.replace(scenario, vars={**scenario.vars, "root": str(sandbox)})
            inv = load_inventory(inventory)

            self.heading("run: inject the scenario's chaos steps")
            self.say("The first run compiles each Go module once (cached afterwards), uploads it over SSH,")
            self.say("runs it, and waits for its encrypted callback; the binary is deleted right after.")
            run = self._run(scenario, inv, Section.STEPS)
            if run.interrupted:
                raise KeyboardInterrupt
            self._show_damage(sandbox)

            self.heading("verify: grade the candidate's machine before any repair")
            before = self._run(scenario, inv, Section.VERIFY)
            if before.interrupted:
                raise KeyboardInterrupt
            self.say(f"points before the repair: {before.text} (nothing is repaired yet)", "bold")

            self.heading("repair: what a candidate would do")
            self._repair(sandbox, scenario.vars)

            self.heading("verify again: grade the repaired machine")
            after = self._run(scenario, inv, Section.VERIFY)
            if after.interrupted:
                raise KeyboardInterrupt
            self.say(f"points after the repair: {after.text}", "bold")

        self.heading("audit: check each run's hash-chained, signed log")
        public = self._keep_public_key()
        if public is not None:
            self.say(f"The demo signed its logs with a throwaway monitor key; its public half is {public}")
        audits_ok = True
        for score in (run, before, after):
            audits_ok &= self._check_audit(score.audit, public)

        passed = run.ok and after.full and audits_ok
        verdict = (
            f"demo {'passed' if passed else 'FAILED'}: run {'ok' if run.ok else 'FAILED'}, "
            f"audit logs {'intact' if audits_ok else 'BROKEN'}; {before.text} points before the repair, "
            f"{after.text} points after"
        )
        return passed, verdict

    def _in_lab(self, workdir: Path, scenario_path: Path) -> tuple[bool, str]:
        """The same exam against a real Debian VM (``chaosrun lab``): real systemd, nginx,
        sshd, real system paths; the repair is the scenario's own ``solution``."""
        from .lab import UpOptions, for_lab, lab_down, lab_up, scenario_lab
        from .run.repair import run_repair

        self.key_path = workdir / "monitor_ed25519"
        scenario = for_lab(load_scenario(scenario_path))
        solution = scenario.solution
        if solution is None:
            raise _DemoError(f"{scenario_path} has no solution to repair the lab VM with")
        self.say("chaosrun demo --lab: break a real Debian VM, grade it, repair it, grade again.", "bold")
        self.say(f'scenario: {scenario_path} (real paths: root is "")')
        self.heading("lab: a real Debian 12 VM (qemu)")
        self.say("The first time on a machine, the VM image is built from Debian's packages (~90 s) and")
        self.say("one VM is booted and saved; after that a VM is restored from it in seconds.")
        roles, ports = scenario_lab(scenario)
        inventory_path = workdir / "lab.yml"
        progress = lambda line: self.say(line, "dim")  # noqa: E731 - one line each, twice
        lab_up(UpOptions(inventory=inventory_path, roles=roles, service_ports=ports), progress)
        try:
            inv = load_inventory(inventory_path)
            self.say(f"inventory: {inventory_path}")

            self.heading("run: inject the scenario's chaos steps into the VM")
            run = self._run(scenario, inv, Section.STEPS)
            if run.interrupted:
                raise KeyboardInterrupt

            self.heading("verify: grade the VM before any repair")
            before = self._run(scenario, inv, Section.VERIFY)
            if before.interrupted:
                raise KeyboardInterrupt
            self.say(f"points before the repair: {before.text} (nothing is repaired yet)", "bold")

            self.heading("repair: the scenario's solution, run on the VM over SSH")
            for role, script in solution.scripts.items():
                self.say(f"  # on {role}:", "dim")
                for line in script.strip().splitlines():
                    self.say(f"  $ {line}", "cyan")
            plan = build_plan(scenario, seed=new_seed(), inventory=inv)
            run_id = f"demo-repair-{secrets.token_hex(3)}"
            failures, repair_log = run_repair(
                plan, solution, self.audit_dir, run_id, track="demo", key_path=self.key_path
            )
            for failure in failures:
                self.say(f"  repair failed: {failure}", "red")

            self.heading("verify again: grade the repaired VM")
            after = self._run(scenario, inv, Section.VERIFY)
            if after.interrupted:
                raise KeyboardInterrupt
            self.say(f"points after the repair: {after.text}", "bold")
        finally:
            self.heading("lab down: stop the VM, remove its overlay")
            lab_down(inventory_path, progress)

        self.heading("audit: check each run's hash-chained, signed log")
        public = self._keep_public_key()
        audits_ok = all(
            [self._check_audit(score.audit, public) for score in (run, before, after)]
            + [self._check_audit(repair_log, public)]
        )
        passed = run.ok and not failures and after.full and audits_ok
        verdict = (
            f"demo --lab {'passed' if passed else 'FAILED'}: run {'ok' if run.ok else 'FAILED'}, "
            f"audit logs {'intact' if audits_ok else 'BROKEN'}; {before.text} points before the repair, "
            f"{after.text} points after"
        )
        return passed, verdict

    # steps of the demo

    @contextlib.contextmanager
    def _server(self, workdir: Path) -> Iterator[LocalSshd]:
        choice = self.args.server
        auto = choice == "auto"
        if auto:
            # sshd needs root for its privilege separation; without it, the in-process server.
            choice = "openssh" if SSHD.is_file() and os.geteuid() == 0 else "asyncssh"
        with contextlib.ExitStack() as stack:
            server: LocalSshd | None = None
            if choice == "openssh":
                try:
                    server = stack.enter_context(local_sshd(workdir))
                    what = f"OpenSSH sshd, pid {server.pid}"
                except LocalSshdError as exc:
                    if not auto:
                        raise _DemoError(f"cannot start OpenSSH's sshd: {exc}\n(try --server asyncssh)") from None
                    self.say(f"OpenSSH's sshd did not start ({exc}); using the in-process server instead", "yellow")
            if server is None:
                try:
                    server = stack.enter_context(local_asyncssh_server(workdir))
                except LocalSshdError as exc:
                    raise _DemoError(f"cannot start the in-process SSH server: {exc}") from None
                what = f"in-process asyncssh server, pid {server.pid} (this process)"
            stack.callback(self.say, f"stopped the local SSH server on {server.host}:{server.port}")
            self.say(f"local SSH server: {what}, listening on {server.host}:{server.port}")
            yield server

    def _write_inventory(self, workdir: Path, server: LocalSshd, remote_tmp: Path) -> Path:
        host = {
            "host": server.host,
            "port": server.port,
            "user": server.user,
            "identity": str(server.identity),
            "known_hosts": str(server.known_hosts),
            "tmp_dir": str(remote_tmp),
        }
        path = workdir / "inventory.yml"
        # JSON is YAML: one line per environment, no quoting surprises.
        inventory = {"environments": {DEMO_ENV: {"web": host}}}
        path.write_text(
            "# chaosrun demo: one candidate, reached over the local SSH server\n" + json.dumps(inventory, indent=2)
        )
        return path

    def _run(self, scenario: Scenario, inventory: Inventory, section: Section) -> _Score:
        plan = build_plan(scenario, seed=new_seed(), inventory=inventory)
        options = RunOptions(audit_dir=self.audit_dir, section=section, parallel=1, key_path=self.key_path)
        report = run_section(plan, options, plain=self.args.plain, log=sys.stdout, console=self.console)
        points = sum(e.points for e in report.environments)
        max_points = sum(e.max_points for e in report.environments)
        return _Score(report.ok, points, max_points, report.audit_path, report.interrupted)

    def _show_damage(self, sandbox: Path) -> None:
        self.say("What the candidate finds now (paths relative to the testenv):")
        for path in sorted(p for p in sandbox.rglob("*") if p.is_file()):
            st = path.stat()
            rel = path.relative_to(sandbox)
            self.say(f"  {st.st_mode & 0o7777:04o} {_size(st.st_size):>8}  {rel}")

    def _repair(self, sandbox: Path, vars: Mapping[str, Any]) -> None:
        """Repair the sandbox the way a candidate would: look around, then fix what looks wrong."""
        self.say(f"The candidate logs in and looks around (here, relative to {sandbox}):")
        fixes = find_fixes(sandbox, str(vars.get("site") or ""))
        if not fixes:
            self.say("  nothing looks broken (did the run do anything?)", "yellow")
        for fix in fixes:
            self.say(f"  # {fix.why}", "dim")
            self.say(f"  $ {fix.command}", "cyan")
            fix.apply()

    def _keep_public_key(self) -> Path | None:
        """Copy the throwaway key's public half next to the audit logs; return its path there."""
        if self.key_path is None or not self.key_path.exists():
            return None
        public = load_public(self.key_path)
        kept = self.audit_dir / f"demo-key-{key_id(public)}.pub"
        kept.write_text(public_b64(public) + "\n")
        return kept

    def _check_audit(self, path: Path | None, public: Path | None) -> bool:
        """What ``chaosrun audit verify --key PUBLIC PATH`` does, on one log; True if it holds."""
        if path is None:
            self.say("  (no audit log)", "red")
            return False
        argv = ["audit", "verify", *(["--key", str(public)] if public else []), str(path)]
        self.say(f"  $ chaosrun {' '.join(argv)}", "cyan")
        verdict = verify_audit_log(path, public)
        self.say(f"  {verdict.message}", None if verdict.ok else "red")
        return verdict.ok


class _DemoError(ChaosrunError):
    """The demo cannot go on; the message says why."""


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


@dataclasses.dataclass(frozen=True)
class Fix:
    """One repair: the shell command a candidate would type, why, and the same in Python."""

    why: str
    command: str
    apply: Callable[[], None]


def find_fixes(sandbox: Path, site: str) -> list[Fix]:
    """What a candidate would find broken in the demo's sandbox, and how they would fix it.

    It looks at the files, not at what the scenario did: a runaway file under var/log,
    a config under etc/ that nobody may read, a hosts entry for ``site``, and an
    sshd_config line that ``sshd -t`` would reject.
    """
    fixes: list[Fix] = []
    for path in sorted((sandbox / "var" / "log").rglob("*")):
        if path.is_file() and path.stat().st_size >= 1 << 20:
            rel = path.relative_to(sandbox)
            why = f"du -ah var/log | sort -h: {rel} holds {_size(path.stat().st_size)} of junk"
            fixes.append(Fix(why, f"rm {rel}", path.unlink))
    for path in sorted((sandbox / "etc").rglob("*")):
        mode = path.stat().st_mode & 0o7777
        if path.is_file() and mode & 0o444 == 0:
            rel = path.relative_to(sandbox)
            why = f"nginx -t: permission denied reading {rel} (mode {mode:04o})"
            fixes.append(Fix(why, f"chmod 0644 {rel}", _chmod(path, 0o644)))
    hosts = sandbox / "etc" / "hosts"
    if site and any(_names_host(line, site) for line in hosts.read_text().splitlines()):
        why = f"getent hosts {site}: a wrong address is pinned in etc/hosts"
        fixes.append(
            Fix(why, f"sed -i '/{site}/d' etc/hosts", _drop_lines(hosts, lambda line: _names_host(line, site)))
        )
    sshd_config = sandbox / "etc" / "ssh" / "sshd_config"
    bad = [line for line in sshd_config.read_text().splitlines() if _bad_permit_root(line)]
    if bad:
        why = f"sshd -t: bad value in {bad[0].strip()!r}"
        command = "sed -i 's/^PermitRootLogin .*/PermitRootLogin prohibit-password/' etc/ssh/sshd_config"
        fixes.append(Fix(why, command, _fix_permit_root(sshd_config)))
    return fixes


def _names_host(line: str, name: str) -> bool:
    """A hosts(5) line that gives an address for ``name``."""
    fields = line.split("#", 1)[0].split()
    return name in fields[1:]


def _chmod(path: Path, mode: int) -> Callable[[], None]:
    return lambda: path.chmod(mode)


def _drop_lines(path: Path, drop: Callable[[str], bool]) -> Callable[[], None]:
    def action() -> None:
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if not drop(line)))

    return action


_PERMIT_ROOT = re.compile(r"^\s*PermitRootLogin\s+(\S+)\s*$", re.IGNORECASE)
_PERMIT_ROOT_VALUES = {"yes", "no", "prohibit-password", "without-password", "forced-commands-only"}


def _bad_permit_root(line: str) -> bool:
    if not line.lstrip().lower().startswith("permitrootlogin"):
        return False
    match = _PERMIT_ROOT.match(line)
    return match is None or match.group(1) not in _PERMIT_ROOT_VALUES


def _fix_permit_root(path: Path) -> Callable[[], None]:
    def action() -> None:
        lines = path.read_text().splitlines(keepends=True)
        fixed = ["PermitRootLogin prohibit-password\n" if _bad_permit_root(line) else line for line in lines]
        path.write_text("".join(fixed))

    return action
