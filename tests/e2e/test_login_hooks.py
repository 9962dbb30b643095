"""Hooks in the SSH login itself, on a real sshd: the candidate's ~/.bashrc, which bash
reads before every command sshd runs for that user (on a stock sshd: no ``SetEnv
SHLVL=1``), and a ``ForceCommand`` wrapper in sshd_config that runs in place of every
command chaosrun sends. Each hook logs the commands and the stdin it sees (the step's
config, token included), then runs the original command: untouched (passthrough) or
with the probe pointed at a decoy (altering).

An altering hook never earns the points (``params_altered``); a passthrough hook leaves
the grade right but the environment suspect, with the signal that names the hook
(``changed_since_baseline`` for a startup file that changed under a run, ``force_command``
for a forced command)."""

from __future__ import annotations

import contextlib
import json
import pwd
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Exam, RunResult, servers_inventory

from chaosrun.run.audit import verify_file
from chaosrun.testing import local_sshd

MODES = ["direct", "tunnel"]

# The hook, in bash. It logs each command; for chaosrun's exec wrapper (the command that
# runs /proc/self/fd/3) it takes the config line off stdin, logs it, and runs the wrapper
# with the line (altered or not) on stdin. {command} is how the hook sees the command.
HOOK = r"""
printf 'command: %s\n' "{command}" >> "{log}"
if [ -z "$HOOKED" ]; then
  case "{command}" in
    *"/proc/self/fd/3"*)
      IFS= read -r config
      printf 'stdin: %s\n' "$config" >> "{log}"
      {alter}
      export HOOKED=1
      exec /bin/bash -c "{command}" <<<"$config"
      ;;
  esac
fi
"""
ALTER = r"config=${config//\/missing/\/decoy}"


def hook(log: Path, *, altering: bool, command: str = "$BASH_EXECUTION_STRING") -> str:
    return HOOK.format(log=log, alter=ALTER if altering else ":", command=command)


def captured(log: Path) -> tuple[list[str], list[dict[str, object]]]:
    """The commands the hook saw, and the configs it took off stdin."""
    lines = log.read_text().splitlines() if log.exists() else []
    commands = [x.removeprefix("command: ") for x in lines if x.startswith("command: ")]
    configs = [json.loads(x.removeprefix("stdin: ")) for x in lines if x.startswith("stdin: ")]
    return commands, configs


def scenario(exam: Exam, callback: str, body: str, name: str = "s.yaml") -> Path:
    path = exam.workdir / name
    path.write_text(
        f"version: 1\nname: hooks\ntargets:\n  web: {{host: 127.0.0.1}}\nmonitor: {{callback: {callback}}}\n" + body
    )
    return path


def signals_of(r: RunResult) -> list[tuple[str, str, str]]:
    return [(s["step"], s["signal"], s["detail"]) for s in r.events("signal")]


def assert_every_report_traced(r: RunResult) -> None:
    """Each result the monitor took from a binary has its sensors' digest and the step's
    signals in its audit record (not only the environment's first one)."""
    results = r.events("result")
    assert results
    for record in results:
        trace = record["sensors"]
        assert len(trace["sha256"]) == 64 and isinstance(trace["elapsed_us"], int), record
        step_signals = sorted({s for step, s, _ in signals_of(r) if step == record["step"]})
        assert trace["signals"] == step_signals, (record["step"], trace, step_signals)


# -- a throwaway user whose ~/.bashrc is the hook -------------------------------------------


@pytest.fixture
def candidate() -> Iterator[pwd.struct_passwd]:
    """A real user with bash as login shell; removed with its home afterwards. Its password
    is ``*`` (no password, but not a locked account, which sshd refuses without PAM)."""
    name = "chr" + secrets.token_hex(4)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@contextlib.contextmanager
def as_candidate(tmp_path: Path, user: pwd.struct_passwd) -> Iterator[Exam]:
    """A stock-like sshd (no SetEnv SHLVL=1) logging in as ``user``; the exam's files and
    upload folder are in the user's home, where the user's probes can look."""
    home = Path(user.pw_dir)
    upload = home / "tmp"
    upload.mkdir()
    for path in (home, upload):
        subprocess.run(["chown", f"{user.pw_uid}:{user.pw_gid}", str(path)], check=True)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with local_sshd(tmp_path, user=user.pw_name, shlvl=False) as sshd:
        exam = Exam(sshd, home, upload, workdir)
        yield exam
    assert exam.leftovers() == [], "a binary was left on the target"


def set_bashrc(user: pwd.struct_passwd, text: str) -> Path:
    bashrc = Path(user.pw_dir) / ".bashrc"
    bashrc.write_text(text)
    subprocess.run(["chown", f"{user.pw_uid}:{user.pw_gid}", str(bashrc)], check=True)
    return bashrc


def file_probe(step: str, path: Path, points: int = 5) -> str:
    return f"  - {{id: {step}, target: web, probe: file_exists, with: {{path: {path}}}, expect: result.exists, points: {points}}}\n"


@pytest.mark.parametrize("callback", MODES)
def test_a_bashrc_that_alters_the_config_never_earns_the_points(
    tmp_path: Path, candidate: pwd.struct_passwd, callback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    log = Path(candidate.pw_dir) / "hook.log"  # the hook runs as the candidate's user
    with as_candidate(tmp_path, candidate) as exam:
        set_bashrc(candidate, hook(log, altering=True))
        (exam.sandbox / "decoy").write_text("the hook points the probe here\n")
        missing = exam.sandbox / "missing"  # what the exam grades: the candidate never made it
        s = scenario(exam, callback, "steps: []\nverify:\n" + file_probe("made", missing))
        r = exam.chaosrun("verify", s, "-i", exam.inventory(["web"]), "--plain")
    commands, configs = captured(log)
    # The attack is real: bash ran the hook for chaosrun's commands and it took the config.
    assert any("/proc/self/fd/3" in c for c in commands), commands
    assert len(configs) == 1 and configs[0]["token"] and configs[0]["params"] == {"path": str(missing)}
    end = r.step_end("made")
    assert (end["status"], end["points"]) == ("failed", 0), end
    assert end["reason"] == "the step's parameters were altered on the target", end
    assert "params_altered" in [s for _, s, _ in signals_of(r)]
    env = r.events("run_end")[0]["environments"]["cand-001"]
    assert env["integrity"] == "suspect" and env["points"] == 0
    assert r.audit_path is not None and verify_file(r.audit_path).ok


@pytest.mark.parametrize("callback", MODES)
def test_a_bashrc_hook_put_in_during_a_run_is_flagged_as_a_changed_startup_file(
    tmp_path: Path, candidate: pwd.struct_passwd, callback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The candidate installs a passthrough hook after the run's first step (the
    environment's baseline): it captures the next step's config, the grade stays right,
    and the environment is suspect with the startup file named."""
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    log = Path(candidate.pw_dir) / "hook.log"  # the hook runs as the candidate's user
    with as_candidate(tmp_path, candidate) as exam:
        bashrc = set_bashrc(candidate, "# the skeleton's, harmless\n")
        present = exam.sandbox / "present"
        present.write_text("made by the candidate\n")
        body = (
            "steps:\n"
            + file_probe("before", present).replace(", points: 5", "")
            + "  - {id: pause, wait: 1s}\n"
            + file_probe("after", present).replace(", points: 5", "")
        )
        s = scenario(exam, callback, body)

        def install() -> None:  # the candidate, as soon as the first step is over
            audit = exam.workdir / "audit"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for path in audit.glob("*.jsonl") if audit.exists() else []:
                    if '"event":"step_end","env":"cand-001","step":"before"' in path.read_text():
                        set_bashrc(candidate, hook(log, altering=False))
                        return
                time.sleep(0.005)

        installer = threading.Thread(target=install, daemon=True)
        installer.start()
        r = exam.chaosrun("run", s, "-i", exam.inventory(["web"]), "--plain")
        installer.join(10)
    commands, configs = captured(log)
    assert [c["step"] for c in configs] == ["after"], commands  # it captured the second step's config
    assert r.step_end("before")["status"] == "ok" and r.step_end("after")["status"] == "ok"  # the grade is right
    (baseline,) = r.events("sensor_baseline")
    assert baseline["step"] == "before" and f"login:{bashrc}" in baseline["baseline"]
    changed = [(step, d) for step, s, d in signals_of(r) if s == "changed_since_baseline"]
    assert [step for step, _ in changed] == ["after"], signals_of(r)
    assert changed[0][1].startswith(f"login:{bashrc} changed since the baseline: "), changed
    assert r.events("run_end")[0]["environments"]["cand-001"]["integrity"] == "suspect"
    assert_every_report_traced(r)


def test_the_bashrc_is_read_for_ssh_commands_only_without_setenv_shlvl(
    tmp_path: Path, candidate: pwd.struct_passwd
) -> None:
    """The control: the same user, the same ~/.bashrc; sshd's ``SetEnv SHLVL=1`` (the
    test sshd's default) is what keeps bash from reading it."""
    marker = Path(candidate.pw_dir) / "read"
    marker.touch()
    marker.chmod(0o666)
    set_bashrc(candidate, f"echo read >> {marker}\n")
    for shlvl in (True, False):
        with local_sshd(tmp_path, user=candidate.pw_name, shlvl=shlvl) as sshd:
            done = subprocess.run(
                ["ssh", "-F", "/dev/null", "-i", str(sshd.identity), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                 "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(sshd.port),
                 f"{sshd.user}@{sshd.host}", "id -un"],
                capture_output=True, timeout=30,
            )  # fmt: skip
        assert done.stdout.decode().strip() == candidate.pw_name, done.stderr
        assert marker.read_text().count("read") == (0 if shlvl else 1), shlvl


# -- a ForceCommand wrapper in sshd_config ---------------------------------------------------


@pytest.mark.parametrize("callback", MODES)
@pytest.mark.parametrize("altering", [False, True], ids=["passthrough", "altering"])
def test_a_force_command_wrapper_is_flagged_and_an_altering_one_earns_nothing(
    tmp_path: Path, callback: str, altering: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    log = tmp_path / "wrapper.log"
    wrapper = tmp_path / "wrapper.sh"
    body = hook(log, altering=altering, command="$SSH_ORIGINAL_COMMAND").replace(
        'if [ -z "$HOOKED" ]; then', "if :; then"
    )
    wrapper.write_text("#!/bin/bash\n" + body + 'exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"\n')
    wrapper.chmod(0o755)
    folders = [tmp_path / name for name in ("remote-tmp", "sandbox", "work")]
    for folder in folders:
        folder.mkdir()
    with local_sshd(tmp_path, extra_config=(f"ForceCommand {wrapper}",)) as sshd:
        exam = Exam(sshd, folders[1], folders[0], folders[2])
        (exam.sandbox / "decoy").write_text("the wrapper points the probe here\n")
        present, missing = exam.sandbox / "present", exam.sandbox / "missing"
        present.write_text("made by the candidate\n")
        s = scenario(exam, callback, "steps: []\nverify:\n" + file_probe("made", present) + file_probe("gone", missing))
        r = exam.chaosrun("verify", s, "-i", exam.inventory(["web"]), "--plain")
        assert exam.leftovers() == []
    commands, configs = captured(log)
    assert any(c.startswith("/usr/lib/openssh/sftp-server") or "sftp" in c for c in commands), commands
    assert [c["step"] for c in configs] == ["made", "gone"], commands  # it saw both configs, tokens and all
    made, gone = r.step_end("made"), r.step_end("gone")
    env = r.events("run_end")[0]["environments"]["cand-001"]
    assert env["integrity"] == "suspect"
    # "made" went through untouched (the wrapper only rewrites /missing): the grade is right,
    # and the forced command is named.
    assert (made["status"], made["points"]) == ("ok", 5)
    forced = [(step, d) for step, s, d in signals_of(r) if s == "force_command"]
    assert "made" in {step for step, _ in forced}, signals_of(r)
    assert "sshd ran a forced command" in forced[0][1] and "exec 3<" in forced[0][1]
    assert (gone["status"], gone["points"]) == ("failed", 0), gone
    if altering:  # "gone" was pointed at the decoy, which exists: no points all the same
        assert gone["reason"] == "the step's parameters were altered on the target", gone
        assert ("gone", "params_altered") in [(step, s) for step, s, _ in signals_of(r)]
    else:
        assert gone["reason"] == "expect result.exists is false", gone
        assert {step for step, _ in forced} == {"made", "gone"}, signals_of(r)
    assert env["points"] == 5
    assert_every_report_traced(r)
    assert r.audit_path is not None and verify_file(r.audit_path).ok


def test_a_bashrc_that_differs_from_the_other_machines_is_flagged_from_the_first_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook there from the start is the environment's baseline, so nothing changes under
    the run; among three machines, though, the one whose ~/.bashrc differs shows. The
    second machine's sshd runs in a mount namespace of its own where a hooked .bashrc is
    bind-mounted over root's (so this machine's own file is never touched)."""
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    bashrc = Path(pwd.getpwuid(0).pw_dir) / ".bashrc"
    if not bashrc.is_file():
        pytest.skip(f"{bashrc} does not exist on this machine")
    hooked = tmp_path / "hooked.bashrc"
    hooked.write_text(bashrc.read_text() + hook(tmp_path / "never.log", altering=False))
    bind = f'mount --bind {hooked} {bashrc} && exec "$@"'
    prefixes: tuple[tuple[str, ...], ...] = (
        (),
        ("unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", bind, "sh"),
        (),
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(local_sshd(tmp_path, prefix=p)) for p in prefixes]
        inventory = servers_inventory(servers, tmp_path)
        exam = Exam(servers[0], tmp_path, tmp_path / "remote-tmp-0", workdir)
        s = scenario(exam, "direct", "steps: []\nverify:\n" + file_probe("look", tmp_path))
        r = exam.chaosrun("verify", s, "-i", inventory, "--plain")
    assert f" {bashrc} " not in Path("/proc/self/mountinfo").read_text()  # never on this machine
    by_env = r.events("run_end")[0]["environments"]
    assert [by_env[e]["points"] for e in ("cand-0", "cand-1", "cand-2")] == [5, 5, 5]
    assert by_env["cand-0"]["signals"] == [] and by_env["cand-2"]["signals"] == []
    (found,) = by_env["cand-1"]["signals"]
    assert (found["step"], found["signal"]) == ("look", "program_differs"), found
    assert found["detail"].startswith(f"login:{bashrc} is ") and "2 of 3 environments" in found["detail"]
