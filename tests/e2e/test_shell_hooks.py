"""Shell hooks on a real sshd: chaosrun's commands run through the SSH user's login shell,
and a root candidate can hook it (``SetEnv BASH_ENV`` in sshd_config here). A hook that
takes the step config off stdin and hands the genuine binary altered parameters (so that
it grades a decoy) must never give a full grade: the binary reports the digest of the
config it read inside its authenticated result, and the monitor refuses the result."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Exam

from chaosrun.run.audit import verify_file
from chaosrun.testing import local_sshd

# Sourced by bash before every command sshd runs. For chaosrun's exec wrapper (the one
# that runs /proc/self/fd/3) it reads the config line, points the probe at a decoy, and
# runs the real command with the altered line on stdin. Everything else runs untouched.
HOOK = r"""
if [ -z "$HOOKED" ]; then
  case "$BASH_EXECUTION_STRING" in
    *"/proc/self/fd/3"*)
      IFS= read -r config
      export HOOKED=1
      exec bash -c "$BASH_EXECUTION_STRING" <<<"${config//\/missing/\/decoy}"
      ;;
  esac
fi
"""


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[Exam]:
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    remote_tmp = tmp_path / "remote-tmp"
    sandbox = tmp_path / "sandbox"
    workdir = tmp_path / "work"
    for folder in (remote_tmp, sandbox, workdir):
        folder.mkdir()
    with local_sshd(tmp_path, extra_config=(f"SetEnv BASH_ENV={hook}",)) as sshd:
        exam = Exam(sshd, sandbox, remote_tmp, workdir)
        yield exam
    assert exam.leftovers() == [], "a binary was left on the target"


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_hook_that_alters_the_parameters_never_earns_the_points(
    hooked: Exam, callback: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    (hooked.sandbox / "decoy").write_text("the hook points the probe here\n")
    missing = hooked.sandbox / "missing"  # what the exam grades: the candidate never made it
    scenario = hooked.workdir / "s.yaml"
    scenario.write_text(
        "version: 1\nname: hooked\ntargets:\n  web: {host: 127.0.0.1}\n"
        f"monitor: {{callback: {callback}}}\nsteps: []\nverify:\n"
        f"  - {{id: made, target: web, probe: file_exists, with: {{path: {missing}}}, expect: result.exists, points: 5}}\n"
    )
    r = hooked.chaosrun("verify", scenario, "-i", hooked.inventory(["web"]), "--plain", "--format", "json")
    end = r.step_end("made")
    assert end["status"] == "failed"
    assert end["reason"] == "the step's parameters were altered on the target", end
    assert end["points"] == 0
    signals = [s["signal"] for s in r.events("signal")]
    assert "params_altered" in signals, signals
    assert r.events("run_end")[0]["environments"]["cand-001"]["integrity"] == "suspect"
    assert verify_file(r.audit_path).ok  # type: ignore[arg-type]


def test_the_hook_is_real_it_does_point_the_genuine_binary_at_the_decoy(hooked: Exam, tmp_path: Path) -> None:
    """The control: the same hook on a plain command shows it rewrites what the command reads."""
    import subprocess

    sshd = hooked.sshd
    done = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(sshd.identity), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-p", str(sshd.port), f"{sshd.user}@{sshd.host}",
         "cat; : /proc/self/fd/3"],
        input=b"/missing/file\n", capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.stdout == b"/decoy/file\n", done.stderr


# The forge form: the hook keeps the config, lets a forger claim the step's token first
# with a full-points result, then runs the genuine binary with the untouched config. The
# forger knows everything the config says and hashes the uploaded binary itself.
FORGER = """
import base64, hashlib, json, re, sys, trio
from chaosrun.testing.callback import send_callback

config_line = open(sys.argv[1], "rb").read().rstrip(b"\\n")
exe = re.search(r"exec 3<(\\S+)", sys.argv[2]).group(1)
config = json.loads(config_line)

async def main():
    host, port = config["monitor"].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
    await send_callback(
        stream, monitor_key=base64.b64decode(config["monitor_key"]), token=config["token"],
        run_id=config["run"], step_id=config["step"],
        config_sha256=hashlib.sha256(config_line).hexdigest(),
        exe_sha256=hashlib.sha256(open(exe, "rb").read()).hexdigest(),
        logs=[], result={"ok": True, "error": None, "result": {"exists": True}, "changes": []},
    )

trio.run(main)
"""

FORGING_HOOK = r"""
if [ -z "$HOOKED" ]; then
  case "$BASH_EXECUTION_STRING" in
    *"/proc/self/fd/3"*)
      IFS= read -r config
      printf '%s\n' "$config" > "{stash}"
      "{python}" "{forger}" "{stash}" "$BASH_EXECUTION_STRING" 2>"{stash}.err"
      export HOOKED=1
      exec bash -c "$BASH_EXECUTION_STRING" <<<"$config"
      ;;
  esac
fi
"""


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_hook_that_forges_the_result_first_is_found_out_by_the_genuine_binary(
    tmp_path: Path, callback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    forger = tmp_path / "forger.py"
    forger.write_text(FORGER)
    hook = tmp_path / "hook.sh"
    stash = tmp_path / "stolen-config"
    hook.write_text(FORGING_HOOK.format(stash=stash, python=sys.executable, forger=forger))
    folders = [tmp_path / name for name in ("remote-tmp", "sandbox", "work")]
    for folder in folders:
        folder.mkdir()
    with local_sshd(tmp_path, extra_config=(f"SetEnv BASH_ENV={hook}",)) as sshd:
        exam = Exam(sshd, folders[1], folders[0], folders[2])
        scenario = exam.workdir / "s.yaml"
        scenario.write_text(
            "version: 1\nname: forged\ntargets:\n  web: {host: 127.0.0.1}\n"
            f"monitor: {{callback: {callback}}}\nsteps: []\nverify:\n"
            f"  - {{id: made, target: web, probe: file_exists, with: {{path: {exam.sandbox / 'missing'}}}, "
            "expect: result.exists, points: 5}\n"
        )
        r = exam.chaosrun("verify", scenario, "-i", exam.inventory(["web"]), "--plain")
        assert exam.leftovers() == []
    assert stash.exists(), "the hook ran and stole the config"
    forger_errors = stash.with_suffix(".err").read_text()
    assert len(r.events("callback_accepted")) == 1, f"the forger's result got in first: {forger_errors}"
    end = r.step_end("made")
    assert (end["status"], end["points"]) == ("failed", 0), end
    assert end["reason"].startswith("token already used"), end
    assert "token_reused" in [s["signal"] for s in r.events("signal")]
    assert r.events("run_end")[0]["environments"]["cand-001"]["integrity"] == "suspect"
