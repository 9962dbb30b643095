"""The tamper sensors' red flags, baseline comparison and cross-environment check, timing
outliers (which leave the ``from: monitor`` probes alone) and the compact trace every
sensors report leaves in the audit log (pure, and one run of `_judge_integrity`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaosrun.run.audit import open_audit
from chaosrun.run.integrity import (
    SIGNALS,
    Signal,
    baseline_changes,
    program_outliers,
    sensor_baseline,
    sensor_flags,
    sensor_trace,
    timing_outliers,
)
from chaosrun.run.model import EnvOutcome, StepOutcome, StepStatus
from chaosrun.run.runner import _judge_integrity
from chaosrun.scenario import StepKind


def clean(**over: Any) -> dict[str, Any]:
    sensors: dict[str, Any] = {
        "pid": 4242,
        "tracer_pid": 0,
        "stdin_holders": [],
        "exe_holders": [],
        "env": {"PATH": "/usr/bin:/bin"},
        "ld_so_preload": None,
        "sshd": {"lines": ["AcceptEnv LANG LC_*"], "sha256": "s1", "files": 1},
        "login": {"user": "cand", "shell": "/bin/bash", "files": {"/home/cand/.bashrc": "b1"}},
        "mounts": ["/proc proc proc", "/proc/sys/fs/binfmt_misc binfmt_misc binfmt_misc"],
        "proc_fs": True,
        "programs": {"sh": {"path": "/bin/sh", "sha256": "sh1"}},
        "proc_masked": [],
        "elapsed_us": 2100,
    }
    sensors.update(over)
    return sensors


def names(flags: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in flags]


def test_a_clean_report_raises_no_flag() -> None:
    assert sensor_flags(clean(), {"path": "/srv/x"}) == []


def test_every_red_flag_has_its_signal_and_a_precise_detail() -> None:
    cases = [
        ({"tracer_pid": 77}, "traced", "process 77 ptraces"),
        ({"stdin_holders": [5, 6]}, "pipe_watched", "5, 6"),
        ({"exe_holders": [9]}, "binary_watched", "9"),
        ({"env": {"BASH_ENV": "/tmp/hook"}}, "shell_hook", "BASH_ENV=/tmp/hook"),
        ({"env": {"PROMPT_COMMAND": "x"}}, "shell_hook", "PROMPT_COMMAND"),
        ({"env": {"LD_PRELOAD": "/x.so"}}, "ld_preload", "LD_PRELOAD=/x.so"),
        ({"env": {"LD_AUDIT": "/a.so"}}, "ld_preload", "LD_AUDIT"),
        ({"ld_so_preload": {"sha256": "ab", "size": 12}}, "ld_preload", "12 bytes"),
        ({"sshd": {"lines": ["ForceCommand /tmp/wrap"], "sha256": "x"}}, "force_command", "/tmp/wrap"),
        ({"sshd": {"lines": ["SetEnv BASH_ENV=/h"], "sha256": "x"}}, "shell_hook", "SetEnv BASH_ENV=/h"),
        ({"sshd": {"lines": ["PermitUserEnvironment=yes"], "sha256": "x"}}, "shell_hook", "PermitUserEnvironment"),
        ({"proc_fs": False}, "proc_faked", "0x9fa0"),
        ({"mounts": ["/proc/4242 tmpfs none"]}, "mount_over", "/proc/4242"),
        ({"mounts": ["/usr/bin overlay o"]}, "mount_over", "/usr/bin"),
        ({"mounts": ["/etc/ssh/sshd_config tmpfs t"]}, "mount_over", "/etc/ssh"),
        ({"mounts": ["/srv/x tmpfs fake"]}, "mount_over", "/srv/x"),
    ]
    for over, signal, detail in cases:
        flags = sensor_flags(clean(**over), {"path": "/srv/x", "n": 3})
        assert names(flags) == [signal], (over, flags)
        assert detail in flags[0][1], (over, flags)
        assert signal in SIGNALS


def test_harmless_settings_and_sensor_errors_are_not_flags() -> None:
    harmless = clean(
        sshd={"lines": ["ForceCommand none", "PermitUserEnvironment no", "AcceptEnv LANG"], "sha256": "x"},
        mounts=["/proc/4243 tmpfs none", "/srv/xy tmpfs t", "/proc proc proc"],
        env={"PATH": "/x", "SHELLOPTS": "braceexpand", "PS4": "+ "},
        tracer_pid="error: no status",
        stdin_holders="error: /proc unreadable",
        proc_fs="error: statfs",
    )
    assert sensor_flags(harmless, {"path": "/srv/x", "root": "/"}) == []


def test_the_baseline_is_compact_hashes_not_contents() -> None:
    assert sensor_baseline(clean()) == {
        "login_shell": "/bin/bash",
        "login:/home/cand/.bashrc": "b1",
        "sshd": "s1",
        "ld_so_preload": "absent",
        "program:sh": "/bin/sh sh1",
    }
    assert sensor_baseline({"login": "error: x", "sshd": "error: y"}) == {}


def test_a_changed_startup_file_sshd_line_program_or_preload_is_a_change_since_the_baseline() -> None:
    base = sensor_baseline(clean())
    later = sensor_baseline(
        clean(
            login={"shell": "/bin/bash", "files": {"/home/cand/.bashrc": "b2", "/home/cand/.ssh/rc": "r"}},
            sshd={"lines": [], "sha256": "s2"},
            ld_so_preload={"sha256": "p", "size": 3},
            programs={"sh": {"path": "/bin/sh", "sha256": "sh2"}, "systemctl": {"path": "/x", "sha256": "y"}},
        )
    )
    changes = dict(baseline_changes(base, later))
    assert sorted(changes) == [
        "ld_so_preload",
        "login:/home/cand/.bashrc",
        "login:/home/cand/.ssh/rc",
        "program:sh",
        "sshd",
    ]
    assert changes["login:/home/cand/.bashrc"].endswith("b1 -> b2")
    assert changes["login:/home/cand/.ssh/rc"].endswith("absent -> r")
    assert changes["ld_so_preload"].endswith("absent -> p")
    assert baseline_changes(base, sensor_baseline(clean())) == []
    gone = sensor_baseline(clean(login={"shell": "/bin/bash", "files": {}}))
    assert [k for k, _ in baseline_changes(base, gone)] == ["login:/home/cand/.bashrc"]
    assert baseline_changes(base, sensor_baseline(clean(sshd="error: unreadable"))) == []


def test_a_program_differing_from_the_majority_of_three_environments_is_flagged() -> None:
    real, fake = "/usr/bin/systemctl aaa", "/tmp/fake/systemctl bbb"
    programs = {
        "cand-1": {"systemctl": (real, "s"), "sh": ("/bin/sh x", "a")},
        "cand-2": {"systemctl": (fake, "s"), "sh": ("/bin/sh x", "a")},
        "cand-3": {"systemctl": (real, "s"), "sh": ("/bin/sh x", "a")},
    }
    found = list(program_outliers(programs))
    assert [(env, sig.signal, sig.step) for env, sig in found] == [("cand-2", "program_differs", "s")]
    assert "/tmp/fake/systemctl bbb" in found[0][1].detail and "2 of 3" in found[0][1].detail
    assert list(program_outliers({k: programs[k] for k in ("cand-1", "cand-2")})) == []  # too few to tell
    split = {"a": {"t": ("/t 1", "s")}, "b": {"t": ("/t 2", "s")}, "c": {"t": ("/t 3", "s")}}
    assert list(program_outliers(split)) == []  # no majority
    assert isinstance(found[0][1], Signal)


SLOW = {"cand-1": {"svc": 1.0, "web": 1.0}, "cand-2": {"svc": 1.1, "web": 1.2}, "cand-3": {"svc": 30.0, "web": 40.0}}


def test_a_step_far_slower_in_one_environment_is_a_timing_outlier() -> None:
    found = [(env, s.step) for env, s in timing_outliers(SLOW)]
    assert found == [("cand-3", "svc"), ("cand-3", "web")]


def test_timing_outliers_ignore_the_probes_that_ran_from_the_monitor() -> None:
    # "web" is an http probe from: monitor: a slow web server is not a held binary.
    found = [(env, s.step) for env, s in timing_outliers(SLOW, from_monitor={"web"})]
    assert found == [("cand-3", "svc")]
    assert list(timing_outliers(SLOW, from_monitor={"web", "svc"})) == []


async def test_the_run_judges_timing_without_the_monitor_probes(tmp_path: Path) -> None:
    def env(name: str) -> EnvOutcome:
        steps = [
            StepOutcome(step, step, StepKind.PROBE, module, StepStatus.OK, duration=SLOW[name][step])
            for step, module in (("svc", "service_active"), ("web", "http"))
        ]
        return EnvOutcome(name, steps)

    envs = [env(name) for name in SLOW]
    async with open_audit(tmp_path, "run-1") as audit:
        await _judge_integrity(audit, envs, strict=True, from_monitor=frozenset({"web"}))
    assert [(e.name, [(s.step, s.signal) for s in e.signals]) for e in envs] == [
        ("cand-1", []),
        ("cand-2", []),
        ("cand-3", [("svc", "timing_outlier")]),
    ]
    assert envs[2].zeroed == "suspect (--strict): timing_outlier in svc"
    records = [json.loads(line) for line in (tmp_path / "run-1.jsonl").read_text().splitlines()]
    assert [(r["env"], r["step"]) for r in records if r["event"] == "signal"] == [("cand-3", "svc")]


def test_a_mount_over_another_processs_proc_directory_is_mount_over() -> None:
    masked = ["/proc/977 tmpfs none", "/proc/978/comm ext4 /dev/vda1", "/proc/4242/fd tmpfs x"]
    flags = sensor_flags(clean(proc_masked=masked), {"name": "miner"})
    assert [name for name, _ in flags] == ["mount_over", "mount_over"]  # 4242 is the binary's own: not twice
    assert flags[0][1].startswith("mounted over /proc/977 (that process is hidden from, or faked to,")
    assert flags[1][1].startswith("mounted over /proc/978 ") and flags[1][1].endswith("/proc/978/comm ext4 /dev/vda1")
    own = sensor_flags(clean(proc_masked=masked[2:], mounts=["/proc/4242/fd tmpfs x"]), {})
    assert own == [("mount_over", "mounted over /proc/4242: /proc/4242/fd tmpfs x")]
    assert sensor_flags(clean(proc_masked="error: no mountinfo"), {}) == []


def test_ssh_original_command_in_the_environment_is_a_forced_command() -> None:
    env = {"PATH": "/usr/bin", "SSH_ORIGINAL_COMMAND": "exec 3</tmp/tmp.abc || exit 97; rm -f /tmp/tmp.abc"}
    ((name, detail),) = sensor_flags(clean(env=env), {})
    assert name == "force_command" and name in SIGNALS
    assert "sshd ran a forced command" in detail and "exec 3</tmp/tmp.abc" in detail


def test_the_trace_of_a_sensors_report_is_its_canonical_digest_its_cost_and_the_steps_signals() -> None:
    report = clean()
    trace = sensor_trace(report, [Signal("look", "pipe_watched", "x"), Signal("look", "traced", "y")])
    assert trace == {"sha256": trace["sha256"], "elapsed_us": 2100, "signals": ["pipe_watched", "traced"]}
    assert len(trace["sha256"]) == 64
    reordered = dict(reversed(list(report.items())))
    assert sensor_trace(reordered, [])["sha256"] == trace["sha256"]  # canonical: key order does not matter
    assert sensor_trace(clean(tracer_pid=77), [])["sha256"] != trace["sha256"]
    assert sensor_trace(None, [Signal("look", "no_sensors", "z")]) == {
        "sha256": None,
        "elapsed_us": None,
        "signals": ["no_sensors"],
    }
    assert len(json.dumps(sensor_trace(report, []))) < 200  # a digest, not the report


def test_a_login_startup_file_differing_from_most_environments_is_program_differs() -> None:
    stock, hooked = "aaa", "bbb"
    files = {env: {"login:/root/.bashrc": (stock, "look")} for env in ("cand-0", "cand-1", "cand-2")}
    files["cand-1"] = {"login:/root/.bashrc": (hooked, "look")}
    ((env, signal),) = program_outliers(files)
    assert (env, signal.step, signal.signal) == ("cand-1", "look", "program_differs")
    assert signal.detail == "login:/root/.bashrc is bbb; 2 of 3 environments have sha256 aaa"
