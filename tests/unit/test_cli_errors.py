"""Every error a user can cause reaches them as one line and the documented exit code, never
as a traceback: ``main`` catches ``ChaosrunError`` once (docs/guide-operators.md, "Exit codes").

Some cases run the installed ``chaosrun`` script in a subprocess, so that the whole of
stderr is seen, as a user sees it; the others call ``main()`` in this process.

Not here: ``BuildError`` cannot reach the command line. A module is built only once SSH
has told the target's architecture, and a failed build fails its step (the run then exits
1 through its report). That needs an sshd: tests/e2e.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chaosrun.cli import main
from chaosrun.errors import EXIT_FAILED, EXIT_UNTRUSTED, EXIT_USAGE

OK = "version: 1\nname: t\nsteps:\n  - { id: p, wait: 1s }\n"
BAD = "version: 1\nname: t\nsteps:\n  - { id: p, wait: 1 }\n  - { id: p, wait: 1s }\n"
UNRESOLVABLE = "version: 1\nname: t\nmonitor: { advertise: no-such-host.invalid }\nsteps:\n  - { id: p, wait: 1s }\n"

#: A line of the plain progress log (``[   0.01s] run t: ...``): output, not an error.
PROGRESS = re.compile(r"^\[\s*\d+\.\d+s\] ")
POSITION = re.compile(r"^[^:\s]+:\d+:\d+: ")


def _chaosrun_script() -> list[str]:
    script = Path(sys.executable).with_name("chaosrun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "chaosrun"]


def _subprocess(tmp_path: Path, *argv: str, **env: str) -> tuple[int, str, str]:
    """Run the installed ``chaosrun`` in ``tmp_path``, the operator's monitor key kept out of reach."""
    environ = {k: v for k, v in os.environ.items() if k != "CHAOSRUN_KEY"}
    environ.update(XDG_CONFIG_HOME=str(tmp_path / "config"), COLUMNS="200", **env)
    done = subprocess.run(
        [*_chaosrun_script(), *argv], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, done.stderr


def _in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(out: str, err: str) -> str:
    """The one ``chaosrun: ...`` line of stderr (progress lines aside), checking there is no traceback."""
    assert "Traceback" not in out + err, out + err
    lines = [line for line in err.splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("chaosrun: "), err
    return lines[0]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working folder, with the monitor key and config under it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CHAOSRUN_KEY", raising=False)
    (tmp_path / "ok.yaml").write_text(OK)
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "unresolvable.yaml").write_text(UNRESOLVABLE)
    return tmp_path


def _corrupt_key(path: Path) -> Path:
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    return path


# -- the scenario and the command line ------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_bad_scenario_prints_one_line_per_error_at_its_position_and_exits_1(home: Path, command: str) -> None:
    code, out, err = _subprocess(home, command, "bad.yaml")
    assert code == EXIT_FAILED == 1
    assert "Traceback" not in out + err
    assert out.splitlines() == [
        "bad.yaml:4:7: duplicate step id 'p' (used again at line 5)",
        "bad.yaml:4:20: invalid duration 1 (write e.g. 500ms, 30s, 5m or 1h)",
        "bad.yaml:5:7: duplicate step id 'p' (first used at line 4)",
    ]
    assert all(POSITION.match(line) for line in out.splitlines())
    assert err == "3 errors in 1 file\n"


@pytest.mark.parametrize("argv", [["run", "nope.yaml"], ["plan", "ok.yaml", "-i", "nope-inv.yaml"]])
def test_a_missing_file_is_one_error_at_line_one_and_exits_1(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = _in_process(capsys, *argv)
    missing = argv[-1]
    assert (code, out, err) == (
        1,
        f"{missing}:1:1: cannot read file: No such file or directory\n",
        "1 error in 1 file\n",
    )


@pytest.mark.parametrize(
    ("var", "message"),
    [
        ("nope=1", "chaosrun: --var nope: the scenario has no variable 'nope' (it has: none)"),
        ("novalue", "chaosrun: --var wants NAME=VALUE, got 'novalue'"),
    ],
)
def test_a_bad_var_is_a_usage_error_on_one_line_and_exits_2(home: Path, var: str, message: str) -> None:
    code, out, err = _subprocess(home, "run", "ok.yaml", "--var", var)
    assert code == EXIT_USAGE == 2
    assert _one_error_line(out, err) == message
    assert out == ""


def test_an_unknown_module_name_is_a_usage_error_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _in_process(capsys, "modules", "fil_disk")
    assert code == 2
    assert _one_error_line(out, err) == "chaosrun: unknown module 'fil_disk'; `chaosrun modules` lists them"


# -- the run: it fails before any host is touched ------------------------------------------


def test_an_advertise_address_that_does_not_resolve_fails_the_run_on_one_line_and_exits_1(home: Path) -> None:
    # RunError, raised inside the runtime's nurseries: it must still come out as one line.
    code, out, err = _subprocess(home, "run", "unresolvable.yaml", "--plain", "--audit", "audit")
    assert code == 1
    line = _one_error_line(out, err)
    assert line.startswith("chaosrun: monitor.advertise 'no-such-host.invalid' does not resolve: "), err


def test_a_file_where_the_audit_folder_should_be_fails_the_run_on_one_line_and_exits_1(home: Path) -> None:
    (home / "audit").write_text("not a folder\n")
    code, out, err = _subprocess(home, "run", "ok.yaml", "--plain", "--audit", "audit")
    assert code == 1
    assert _one_error_line(out, err) == "chaosrun: cannot create audit log in audit: File exists"


def test_a_corrupt_monitor_key_given_with_key_fails_the_run_on_one_line_and_exits_1(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _corrupt_key(home / "monitor_key")
    code, out, err = _in_process(capsys, "verify", "ok.yaml", "--plain", "--audit", "audit", "--key", str(key))
    assert code == 1
    assert _one_error_line(out, err).startswith(f"chaosrun: monitor key {key} is not a PEM private key: ")
    assert not (home / "audit").exists(), "the run went on without its signing key"


def test_a_corrupt_monitor_key_in_chaosrun_key_fails_the_run_on_one_line_and_exits_1(home: Path) -> None:
    key = _corrupt_key(home / "monitor_key")
    code, out, err = _subprocess(home, "run", "ok.yaml", "--plain", "--audit", "audit", CHAOSRUN_KEY=str(key))
    assert code == 1
    assert _one_error_line(out, err).startswith(f"chaosrun: monitor key {key} is not a PEM private key: ")


def test_a_monitor_key_others_can_read_fails_the_run_on_one_line_and_exits_1(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _corrupt_key(home / "monitor_key")
    key.chmod(0o644)
    code, out, err = _in_process(capsys, "run", "ok.yaml", "--plain", "--audit", "audit", "--key", str(key))
    assert code == 1
    assert _one_error_line(out, err) == f"chaosrun: monitor key {key} is readable by others; chmod 600 it"


# -- audit verify: the trusted key is part of the command line ------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read {key}: No such file or directory"),
        ("not base64 at all\n", "{key} is not an Ed25519 public key: "),
        ("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", "{key} holds no usable Ed25519 key: "),
    ],
    ids=["missing", "garbage", "corrupt-pem"],
)
def test_an_unusable_trusted_key_for_audit_verify_is_a_usage_error_and_exits_2(
    home: Path, capsys: pytest.CaptureFixture[str], content: str | None, reason: str
) -> None:
    key = home / "trusted.pub"
    if content is not None:
        key.write_text(content)
    (home / "run.jsonl").write_text("{}\n")
    code, out, err = _in_process(capsys, "audit", "verify", "run.jsonl", "--key", str(key))
    assert code == 2
    line = _one_error_line(out, err)
    assert line.startswith("chaosrun: cannot read the trusted key: " + reason.format(key=key)), line


def _sealed_log(home: Path, key_path: Path) -> Path:
    """A small audit log sealed with the key at ``key_path`` (created)."""
    import trio

    from chaosrun.run.audit import open_audit
    from chaosrun.run.signing import load_or_create_key

    async def write() -> Path:
        async with open_audit(home / "audit", "run-1", key=load_or_create_key(key_path)) as log:
            await log.record("run_start", seed=1)
            await log.record("run_end", ok=True)
        return log.path

    return trio.run(write)


def test_an_intact_log_sealed_by_a_key_nobody_trusts_exits_3_and_says_so(home: Path) -> None:
    from chaosrun.run.signing import key_id, load_public

    key_path = home / "elsewhere" / "k"
    log = _sealed_log(home, key_path)
    code, out, err = _subprocess(home, "audit", "verify", str(log))
    assert (code, err) == (EXIT_UNTRUSTED, "")
    assert out == (
        f"{log}: 3 records, chain intact, but sealed by key {key_id(load_public(key_path))} that nobody trusts "
        "(pass --key with the monitor's public key, or --trust-embedded)\n"
    )


def test_a_private_key_with_another_key_in_the_pub_beside_it_is_a_usage_error_and_exits_2(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from chaosrun.run.signing import key_id, load_or_create_key, load_public

    key_path = home / "keys" / "monitor_ed25519"
    log = _sealed_log(home, key_path)
    other = home / "other" / "k"
    load_or_create_key(other)
    beside = key_path.with_name(key_path.name + ".pub")
    beside.write_text(other.with_name("k.pub").read_text())
    code, out, err = _in_process(capsys, "audit", "verify", str(log), "--key", str(key_path))
    assert (code, out) == (EXIT_USAGE, "")
    assert _one_error_line(out, err) == (
        f"chaosrun: {key_path} holds key {key_id(load_public(key_path))} but {beside} beside it holds key "
        f"{key_id(load_public(other))}; pass the one to trust with --key"
    )


def test_key_and_trust_embedded_together_are_a_usage_error(home: Path) -> None:
    code, out, err = _subprocess(home, "audit", "verify", "run.jsonl", "--key", "k.pub", "--trust-embedded")
    assert (code, out) == (EXIT_USAGE, "")
    assert "not allowed with argument" in err


def test_an_audit_log_that_does_not_hold_is_reported_on_stdout_and_exits_1(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _in_process(capsys, "audit", "verify", "missing.jsonl")
    assert (code, err) == (1, "")
    assert out.startswith("cannot read missing.jsonl: ")


# -- the demo ---------------------------------------------------------------------------------


def test_the_demo_reports_an_sshd_that_cannot_start_in_one_message_and_exits_1(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # LocalSshdError: the demo has no option for the sshd binary; the test support's default is patched.
    from chaosrun.testing import sshd

    monkeypatch.setattr(sshd, "DEFAULT_SSHD", str(home / "no-such-sshd"))
    code, out, err = _in_process(capsys, "demo", "--server", "openssh", "--plain", "--audit", "audit")
    assert code == 1
    assert "Traceback" not in out + err
    assert f"chaosrun demo: cannot start OpenSSH's sshd: {home / 'no-such-sshd'} not found or not executable" in out
    workdir = re.search(r"removed the testenv folder (\S+)", out)
    assert workdir is not None, out
    assert not Path(workdir.group(1)).exists()
