"""The runner's own semantics, on the local connector: the real module binaries run as
local processes and call back over real TCP, but no SSH is involved, so each test takes a
fraction of a second. What only SSH can show (host keys, a dropped connection, the
tunnel, a remote Ctrl-C) stays in tests/e2e on a real sshd."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from chaosrun.build import Builder, goarch_for
from chaosrun.lint import check_scenario_text
from chaosrun.plan import build_plan
from chaosrun.run.audit import verify_file
from chaosrun.run.local import LocalConnector
from chaosrun.run.model import RunOptions, RunReport, StepOutcome, StepStatus
from chaosrun.run.runner import run_plan
from chaosrun.scenario import Section

MODULES = ("command", "file_exists", "delete_file", "kill_process")


@pytest.fixture(scope="module", autouse=True)
def _built_modules() -> None:
    """Build the modules these tests use once, before any test's clock starts."""
    builder = Builder()
    for module in MODULES:
        builder.build(module, "linux", goarch_for(platform.machine()))


@dataclass
class Ran:
    report: RunReport
    audit: list[dict[str, Any]]
    audit_path: Path

    def step(self, step_id: str, env: str = "default") -> StepOutcome:
        (environment,) = [e for e in self.report.environments if e.name == env]
        (found,) = [s for s in environment.steps if s.id == step_id]
        return found

    def events(self, name: str) -> list[dict[str, Any]]:
        """The records of one event, the baseline's guard module's own left out (a run takes
        one before its first chaos step: chaosrun.shortcuts)."""
        return [r for r in self.audit if r["event"] == name and not str(r.get("step", "")).startswith("guard:")]


class Room:
    """A scenario's target as a folder on this machine, and a way to run its steps."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.tmp_dir = tmp_path / "target-tmp"  # where the binaries go: must end up empty
        self.tmp_dir.mkdir()
        self.audit_dir = tmp_path / "audit"
        self.key = tmp_path / "keys" / "monitor_ed25519"

    def scenario(self, body: str, *, monitor: str = "") -> str:
        head = f"version: 1\nname: semantics\ntargets:\n  web: {{host: 127.0.0.1, tmp_dir: {self.tmp_dir}}}\n"
        return head + (f"monitor:\n{textwrap.indent(monitor, '  ')}\n" if monitor else "") + textwrap.dedent(body)

    async def run(self, body: str, *, section: Section = Section.STEPS, seed: int = 1, monitor: str = "") -> Ran:
        text = self.scenario(body, monitor=monitor)
        scenario, errors = check_scenario_text(text, "semantics.yaml")
        assert scenario is not None and not errors, [str(e) for e in errors]
        plan = build_plan(scenario, seed=seed)
        options = RunOptions(
            audit_dir=self.audit_dir, section=section, connector=LocalConnector(), key_path=self.key, parallel=4
        )
        report = await run_plan(plan, options)
        assert report.audit_path is not None
        records = [json.loads(line) for line in report.audit_path.read_text().splitlines()]
        return Ran(report, records, report.audit_path)

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.tmp_dir.iterdir())


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    r = Room(tmp_path)
    yield r
    assert r.leftovers() == [], "a binary was left in the target's tmp_dir"


async def test_a_probe_runs_calls_back_and_its_result_reaches_the_report(room: Room) -> None:
    marker = room.root / "there"
    marker.write_text("x")
    ran = await room.run(f"""
        steps:
          - {{id: look, target: web, probe: file_exists, with: {{path: {marker}}}}}
    """)
    assert ran.report.ok
    assert ran.step("look").result["exists"] is True
    assert [r["event"] for r in ran.audit if r.get("step") == "look"] == [
        "step_start",
        "listen",
        "deploy",
        "callback_accepted",
        "exec",
        "sensor_baseline",
        "cleanup",
        "result",
        "step_end",
    ]
    assert ran.events("connect")[0]["connector"] == "local"
    assert ran.events("run_start")[0]["connector"] == "local"
    assert verify_file(ran.audit_path).ok


async def test_chaos_changes_the_target_and_says_how(room: Room) -> None:
    victim = room.root / "victim.conf"
    victim.write_text("listen 80;\n")
    ran = await room.run(f"""
        steps:
          - {{id: rm, target: web, chaos: delete_file, with: {{path: {victim}}}}}
    """)
    assert ran.report.ok, ran.step("rm").reason
    assert not victim.exists()
    assert ran.step("rm").changes, "a chaos step reports what it changed"


async def test_needs_on_a_failed_step_skips_and_when_can_override(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: bad, target: web, chaos: kill_process, with: {name: no-such-proc-xyz}}
          - {id: skipped, target: web, probe: command, needs: [bad], with: {command: 'true'}}
          - {id: rescue, target: web, probe: command, needs: [bad], when: 'not steps.bad.ok', with: {command: 'true'}}
          - {id: after, target: web, probe: command, with: {command: 'true'}}
    """)
    assert ran.step("bad").status is StepStatus.FAILED
    assert "no process" in ran.step("bad").reason
    assert (ran.step("skipped").status, ran.step("skipped").reason) == (StepStatus.SKIPPED, "needs bad (failed)")
    assert ran.step("rescue").status is StepStatus.OK
    # without `needs`, a step runs after the one above it even when that one failed
    assert ran.step("after").status is StepStatus.OK
    assert not ran.report.ok


async def test_when_false_skips_and_sees_results_of_earlier_steps(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: probe, target: web, probe: command, with: {command: 'echo 7'}}
          - {id: big, target: web, probe: command, needs: [probe], when: 'int(steps.probe.result.stdout) > 5',
             with: {command: 'true'}}
          - {id: small, target: web, probe: command, needs: [probe], when: 'int(steps.probe.result.stdout) < 5',
             with: {command: 'true'}}
    """)
    assert ran.step("big").status is StepStatus.OK
    assert ran.step("small").status is StepStatus.SKIPPED
    assert ran.step("small").reason.startswith("when ") and ran.step("small").reason.endswith(" is false")
    assert [r["step"] for r in ran.events("deploy")] == ["probe", "big"], "a skipped step deploys nothing"


async def test_a_when_that_cannot_be_evaluated_fails_the_step_with_the_reason(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: probe, target: web, probe: command, with: {command: 'echo word'}}
          - {id: next, target: web, probe: command, needs: [probe], when: 'int(steps.probe.result.stdout) > 5',
             with: {command: 'true'}}
    """)
    assert ran.step("next").status is StepStatus.FAILED
    assert ran.step("next").reason.startswith("when: ")


async def test_a_template_filled_from_an_earlier_result(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: first, target: web, probe: command, with: {command: 'printf hello'}}
          - {id: second, target: web, probe: command, needs: [first],
             with: {command: 'echo got-${steps.first.result.stdout}'}}
    """)
    assert ran.step("second").result["stdout"] == "got-hello\n"


async def test_retries_run_a_failing_step_again_and_clean_up_each_attempt(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: bad, target: web, chaos: kill_process, retries: 2, with: {name: no-such-proc-xyz}}
    """)
    assert ran.step("bad").attempts == 3
    assert [r["attempt"] for r in ran.events("retry")] == [1, 2]
    assert len(ran.events("cleanup")) == 3
    assert len(ran.events("deploy")) == 3


async def test_a_retry_stops_at_the_first_success(room: Room) -> None:
    flag = room.root / "second-time"
    ran = await room.run(f"""
        steps:
          - id: flaky
            target: web
            probe: command
            retries: 3
            with: {{command: '[ -e {flag} ] || {{ touch {flag}; exit 1; }}'}}
            expect: result.exit_status == 0
    """)
    assert ran.step("flaky").status is StepStatus.OK
    assert ran.step("flaky").attempts == 2
    assert len(ran.events("retry")) == 1


async def test_a_step_timeout_stops_the_binary_and_what_it_started(room: Room) -> None:
    pidfile = room.root / "pid"
    ran = await room.run(f"""
        steps:
          - {{id: slow, target: web, probe: command, timeout: 500ms,
             with: {{command: 'echo $$ > {pidfile}; exec sleep 30', timeout_ms: 60000}}}}
          - {{id: next, target: web, probe: command, with: {{command: 'true'}}}}
    """)
    slow = ran.step("slow")
    assert (slow.status, slow.reason) == (StepStatus.TIMEOUT, "timed out after 0.5s")
    assert slow.duration < 5
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # the sleep is gone, not orphaned
        for _ in range(50):
            os.kill(pid, 0)
            await trio.sleep(0.05)
    assert ran.step("next").status is StepStatus.OK, "a timeout ends the step, not the run"
    assert [r["step"] for r in ran.events("cleanup")] == ["slow", "next"]


async def test_a_binary_killed_mid_run_fails_the_step_and_says_so(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: crash, target: web, probe: command, with: {command: 'kill -9 $PPID; sleep 5'}}
    """)
    crash = ran.step("crash")
    assert crash.status is StepStatus.FAILED
    assert "killed by signal KILL" in crash.reason, crash.reason
    (exec_record,) = ran.events("exec")
    assert exec_record["signal"] == "KILL"


async def test_one_of_picks_one_option_per_environment_and_skips_the_others(room: Room) -> None:
    body = """
        steps:
          - id: pick
            one_of:
              - {id: opt_a, target: web, probe: command, with: {command: 'echo a'}}
              - {id: opt_b, target: web, probe: command, with: {command: 'echo b'}}
          - {id: after, target: web, probe: command, needs: [pick], with: {command: 'echo ${steps.pick.result.stdout}'}}
    """
    picked: set[str] = set()
    for seed in range(6):
        ran = await room.run(body, seed=seed)
        deployed = [r["step"] for r in ran.events("deploy")]
        assert len(deployed) == 2 and deployed[1] == "after", deployed
        chosen = deployed[0]
        picked.add(chosen)
        other = "opt_b" if chosen == "opt_a" else "opt_a"
        assert other not in [s.id for s in ran.report.environments[0].steps]
        assert ran.step("after").result["stdout"] == ("a\n" if chosen == "opt_a" else "b\n")
    assert picked == {"opt_a", "opt_b"}, "six seeds pick both options"


async def test_wait_steps_pause_and_count_as_ok(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: pause, wait: 200ms}
    """)
    assert ran.step("pause").status is StepStatus.OK
    assert ran.step("pause").duration == pytest.approx(0.2)
    assert ran.events("deploy") == []


async def test_verify_awards_points_for_expectations_met_and_none_otherwise(room: Room) -> None:
    present = room.root / "present"
    present.write_text("x")
    ran = await room.run(
        f"""
        steps: []
        verify:
          - {{id: there, target: web, probe: file_exists, with: {{path: {present}}}, expect: result.exists, points: 3}}
          - {{id: gone, target: web, probe: file_exists, with: {{path: {room.root}/absent}}, expect: result.exists,
             points: 2}}
        """,
        section=Section.VERIFY,
    )
    env = ran.report.environments[0]
    assert (env.points, env.max_points) == (3, 5)
    assert ran.step("gone").status is StepStatus.FAILED
    assert ran.step("gone").reason == "expect result.exists is false"
    assert ran.events("run_end")[0]["points"] == 3
    assert ran.audit_path.name.endswith("-verify.jsonl")


async def test_expect_sees_vars_env_target_and_earlier_steps_as_lint_does(room: Room) -> None:
    present = room.root / "present"
    present.write_text("x")
    ran = await room.run(
        f"""
        vars: {{want: true, min: 0}}
        steps: []
        verify:
          - {{id: first, target: web, probe: file_exists, with: {{path: {present}}}, expect: result.exists}}
          - id: second
            target: web
            probe: file_exists
            with: {{path: {present}}}
            needs: [first]
            points: 2
            expect: >-
              result.exists == vars.want and env.name == "default" and target.role == "web"
              and target.host == "127.0.0.1" and steps.first.ok and steps.first.duration >= vars.min
        """,
        section=Section.VERIFY,
    )
    assert ran.step("second").status is StepStatus.OK, ran.step("second").reason
    assert ran.report.environments[0].points == 2


async def test_a_failed_expect_says_what_it_observed(room: Room) -> None:
    present = room.root / "present"
    present.write_text("hello")
    ran = await room.run(
        f"""
        vars: {{size: 100}}
        steps: []
        verify:
          - {{id: small, target: web, probe: file_exists, with: {{path: {present}}},
             expect: "result.exists and result.size > vars.size"}}
          - {{id: either, target: web, probe: file_exists, with: {{path: {present}}},
             expect: "result.size == 0 or not result.exists"}}
        """,
        section=Section.VERIFY,
    )
    assert ran.step("small").reason == (
        "expect result.exists and result.size > vars.size is false: result.size = 5, expected > vars.size (100)"
    )
    assert ran.step("either").reason == (
        "expect result.size == 0 or not result.exists is false: result.size = 5, expected == 0; result.exists is true"
    )


async def test_environments_run_at_once_and_one_failure_does_not_touch_the_others(room: Room) -> None:
    body = """
        steps:
          - {id: s, target: web, probe: command, with: {command: 'sleep 0.3; [ ${env.name} != env-2 ]'},
             expect: result.exit_status == 0}
    """
    text = room.scenario(body)
    scenario, errors = check_scenario_text(text, "semantics.yaml")
    assert scenario is not None and not errors
    from chaosrun.inventory import parse_inventory

    inventory_text = json.dumps({"environments": {f"env-{i}": {"web": {"host": "127.0.0.1"}} for i in range(1, 4)}})
    inventory, inv_errors = parse_inventory(inventory_text, "inventory.yml")
    assert inventory is not None and not inv_errors
    plan = build_plan(scenario, seed=1, inventory=inventory)
    options = RunOptions(audit_dir=room.audit_dir, connector=LocalConnector(), key_path=room.key, parallel=3)
    report = await run_plan(plan, options)
    assert {e.name: e.ok for e in report.environments} == {"env-1": True, "env-2": False, "env-3": True}
    assert report.audit_path is not None
    events = [json.loads(line)["event"] for line in report.audit_path.read_text().splitlines()]
    assert events.index("env_end") > max(i for i, e in enumerate(events) if e == "env_start"), (
        "all three environments started before the first one ended"
    )


async def test_parallel_one_runs_environments_one_after_the_other(room: Room) -> None:
    from chaosrun.inventory import parse_inventory

    scenario, _ = check_scenario_text(
        room.scenario("steps:\n  - {id: s, target: web, probe: command, with: {command: 'true'}}\n"), "s.yaml"
    )
    assert scenario is not None
    inventory, _ = parse_inventory(
        json.dumps({"environments": {e: {"web": {"host": "127.0.0.1"}} for e in "ab"}}), "inventory.yml"
    )
    plan = build_plan(scenario, seed=1, inventory=inventory)
    options = RunOptions(audit_dir=room.audit_dir, connector=LocalConnector(), key_path=room.key, parallel=1)
    report = await run_plan(plan, options)
    assert report.ok and report.audit_path is not None
    events = [(r["event"], r.get("env")) for r in map(json.loads, report.audit_path.read_text().splitlines())]
    envs = [env for event, env in events if event in ("env_start", "env_end")]
    assert envs in (["a", "a", "b", "b"], ["b", "b", "a", "a"])


async def test_tunnel_mode_runs_on_the_local_connector_too(room: Room) -> None:
    ran = await room.run(
        """
        steps:
          - {id: s, target: web, probe: command, with: {command: 'true'}}
        """,
        monitor="callback: tunnel",
    )
    assert ran.report.ok, ran.step("s").reason
    assert len(ran.events("tunnel")) == 1


async def test_an_unresolvable_monitor_address_fails_the_run_before_any_step(room: Room) -> None:
    from chaosrun.run.model import RunError

    with pytest.raises(RunError, match="does not resolve"):
        await room.run(
            "steps:\n  - {id: s, target: web, probe: command, with: {command: 'true'}}\n",
            monitor="advertise: no-such-host.invalid",
        )
    (log,) = room.audit_dir.glob("*.jsonl")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-2]["event"] == "run_end" and records[-2]["ok"] is False
    assert verify_file(log).ok


async def test_ctrl_c_mid_step_stops_the_binary_cleans_up_and_closes_the_audit_log(room: Room) -> None:
    pidfile = room.root / "pid"
    body = f"""
        steps:
          - {{id: long, target: web, probe: command, with: {{command: 'echo $$ > {pidfile}; exec sleep 60',
             timeout_ms: 120000}}}}
          - {{id: later, target: web, probe: command, with: {{command: 'true'}}}}
    """
    reports: list[Ran] = []

    async def run() -> None:
        reports.append(await room.run(body))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        with trio.fail_after(10):
            while not pidfile.exists() or not pidfile.read_text().strip():
                await trio.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)  # the runner's signal receiver turns it into a cancel
    (ran,) = reports
    assert ran.report.interrupted
    assert (ran.step("long").status, ran.step("long").reason) == (StepStatus.FAILED, "interrupted")
    assert (ran.step("later").status, ran.step("later").reason) == (
        StepStatus.SKIPPED,
        "run interrupted before this step started",
    )
    assert ran.events("run_end")[0]["interrupted"] is True
    assert ran.audit[-1]["event"] == "seal"
    assert len(ran.events("cleanup")) == 1
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(int(pidfile.read_text()), 0)
            await trio.sleep(0.05)
    assert verify_file(ran.audit_path).ok


# -- what the audit trail claims is what was seen ------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs mounted on ``path`` for the test (root only, as CI runs)."""
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


async def test_an_append_only_upload_folder_fails_the_step_and_names_the_path(room: Room) -> None:
    subprocess.run(["chattr", "+a", str(room.tmp_dir)], check=True)
    try:
        ran = await room.run("steps:\n  - {id: s, target: web, probe: command, with: {command: 'true'}}\n")
        left = room.leftovers()
    finally:
        subprocess.run(["chattr", "-a", str(room.tmp_dir)], check=True)
        for name in room.leftovers():
            (room.tmp_dir / name).unlink()
    step = ran.step("s")
    assert step.status is StepStatus.FAILED
    assert len(left) == 1 and str(room.tmp_dir / left[0]) in step.reason, step.reason
    assert step.reason.startswith("cleanup: the binary is still on the target at "), step.reason
    (cleanup,) = ran.events("cleanup")
    assert cleanup["removed"] is False and cleanup["left"].startswith("still there")
    assert not ran.report.ok


async def test_a_full_upload_folder_says_so_before_the_upload(room: Room) -> None:
    with _tmpfs(room.tmp_dir, "size=512k"):
        ran = await room.run("steps:\n  - {id: s, target: web, probe: command, with: {command: 'true'}}\n")
        assert room.leftovers() == []
    reason = ran.step("s").reason
    assert reason.startswith(f"No space left on device in {room.tmp_dir} on "), reason
    assert "KiB free; the module needs" in reason
    assert ran.events("deploy") == []


async def test_an_upload_folder_out_of_inodes_says_so(room: Room) -> None:
    with _tmpfs(room.tmp_dir, "size=16m,nr_inodes=1"):
        ran = await room.run("steps:\n  - {id: s, target: web, probe: command, with: {command: 'true'}}\n")
    assert ran.step("s").reason.startswith(f"No space left on device in {room.tmp_dir} on "), ran.step("s").reason
    assert "(no inode free" in ran.step("s").reason


async def test_a_read_only_upload_folder_says_so(room: Room) -> None:
    with _tmpfs(room.tmp_dir, "size=16m,ro"):
        ran = await room.run("steps:\n  - {id: s, target: web, probe: command, with: {command: 'true'}}\n")
    assert ran.step("s").reason.startswith(f"read-only file system: cannot deploy to {room.tmp_dir}"), ran.step(
        "s"
    ).reason


async def test_a_binary_stopped_mid_step_is_recorded_as_still_running_and_terminated(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: stopped, target: web, probe: command, timeout: 700ms, with: {command: 'kill -STOP $PPID; sleep 5'}}
    """)
    assert ran.step("stopped").status is StepStatus.TIMEOUT
    (exec_record,) = ran.events("exec")
    assert exec_record["still_running"] == "when the step ended"
    assert exec_record["ended"] == "terminated by the monitor"


# -- integrity: what an honest run would not show ------------------------------------------------


async def test_a_binary_killed_before_it_reports_makes_the_environment_suspect(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: fine, target: web, probe: command, with: {command: 'true'}}
          - {id: crash, target: web, probe: command, with: {command: 'kill -9 $PPID; sleep 5'}}
    """)
    env = ran.report.environments[0]
    assert env.integrity == "suspect"
    assert [(s.step, s.signal) for s in env.signals] == [("crash", "binary_killed")]
    assert [(r["step"], r["signal"]) for r in ran.events("signal")] == [("crash", "binary_killed")]
    assert ran.events("run_end")[0]["environments"]["default"]["integrity"] == "suspect"


async def test_a_binary_stopped_mid_step_is_a_signal_not_just_a_timeout(room: Room) -> None:
    ran = await room.run("""
        steps:
          - {id: held, target: web, probe: command, timeout: 700ms, with: {command: 'kill -STOP $PPID; sleep 5'}}
    """)
    assert ran.step("held").status is StepStatus.TIMEOUT
    assert [(s.step, s.signal) for s in ran.report.environments[0].signals] == [("held", "binary_stopped")]


async def test_a_stranger_on_the_callback_port_is_refused_and_flagged(room: Room) -> None:
    body = "steps:\n  - {id: slow, target: web, probe: command, with: {command: 'sleep 1'}}\n"
    reports: list[Ran] = []

    async def run() -> None:
        reports.append(await room.run(body))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        with trio.fail_after(10):
            while True:
                logs = list(room.audit_dir.glob("*.jsonl")) if room.audit_dir.exists() else []
                listen = [
                    r for log in logs for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "listen"
                ]
                if listen:
                    break
                await trio.sleep(0.01)
        host, port = listen[0]["address"].rsplit(":", 1)
        stranger = await trio.open_tcp_stream(host, int(port))
        await stranger.send_all(b"\x00\x00\x00\x40" + b"x" * 64)  # a frame no key opens
        await stranger.aclose()
    (ran,) = reports
    assert ran.step("slow").status is StepStatus.OK, "the real binary still got through"
    assert [(s.step, s.signal) for s in ran.report.environments[0].signals] == [("slow", "callback_rejected")]


async def test_strict_scores_a_suspect_environment_zero_and_says_why(room: Room) -> None:
    body = """
        steps: []
        verify:
          - {id: good, target: web, probe: command, with: {command: 'true'}, expect: result.exit_status == 0, points: 3}
          - {id: crash, target: web, probe: command, with: {command: 'kill -9 $PPID'}, expect: true, points: 2}
    """
    lenient = await room.run(body, section=Section.VERIFY)
    env = lenient.report.environments[0]
    assert (env.points, env.max_points, env.integrity, env.zeroed) == (3, 5, "suspect", None)
    text = room.scenario(body)
    scenario, _ = check_scenario_text(text, "semantics.yaml")
    assert scenario is not None
    options = RunOptions(
        audit_dir=room.audit_dir, section=Section.VERIFY, connector=LocalConnector(), key_path=room.key, strict=True
    )
    report = await run_plan(build_plan(scenario, seed=1), options)
    strict = report.environments[0]
    assert (strict.points, strict.max_points) == (0, 5)
    assert strict.zeroed == "suspect (--strict): binary_killed in crash"


def test_a_step_far_slower_than_elsewhere_is_a_timing_outlier() -> None:
    from chaosrun.run.integrity import timing_outliers

    durations = {f"env-{i}": {"s": 1.0 + i * 0.1, "t": 2.0} for i in range(5)}
    durations["env-slow"] = {"s": 30.0, "t": 2.1}
    found = list(timing_outliers(durations))
    assert [(env, sig.step, sig.signal) for env, sig in found] == [("env-slow", "s", "timing_outlier")]
    assert list(timing_outliers({"a": {"s": 1.0}, "b": {"s": 60.0}})) == [], "two environments are no baseline"


async def test_verify_reboot_never_reboots_the_monitor_itself(room: Room) -> None:
    """The local connector's target is this machine: same boot id, so no reboot, and the
    probes score 0 with the reason (a real reboot is tested on lab VMs, tests/lab)."""
    text = room.scenario("""
        steps: []
        verify:
          - {id: up, target: web, probe: command, with: {command: 'true'}, expect: result.exit_status == 0, points: 2}
    """)
    scenario, _ = check_scenario_text(text, "semantics.yaml")
    assert scenario is not None
    options = RunOptions(
        audit_dir=room.audit_dir, section=Section.VERIFY, connector=LocalConnector(), key_path=room.key, reboot=True
    )
    report = await run_plan(build_plan(scenario, seed=1), options)
    up = report.environments[0].steps[0]
    assert (up.status, up.points) == (StepStatus.FAILED, 0)
    assert up.reason == "127.0.0.1 is the monitor's own machine (same boot id): chaosrun does not reboot the monitor"


async def test_the_summary_marks_a_suspect_environment_and_the_json_report_carries_its_signals(room: Room) -> None:
    import io

    from rich.console import Console

    from chaosrun.reports import report_as_json
    from chaosrun.run.progress import print_summary

    ran = await room.run("steps:\n  - {id: crash, target: web, probe: command, with: {command: 'kill -9 $PPID'}}\n")
    out = io.StringIO()
    print_summary(ran.report, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "SUSPECT" in text and "binary_killed: killed by signal KILL before it reported" in text
    assert "SUSPECT, review before grading: default" in text
    (env,) = report_as_json(ran.report)["environments"]
    assert env["integrity"] == "suspect"
    assert env["signals"] == [
        {"step": "crash", "signal": "binary_killed", "detail": "killed by signal KILL before it reported"}
    ]
