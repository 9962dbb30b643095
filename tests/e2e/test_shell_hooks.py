"""Shell hooks on a real sshd: chaosrun's commands run through the SSH user's login shell,
and a root candidate can hook it (``SetEnv BASH_ENV`` in sshd_config here). A hook that
takes the step config off stdin and hands the genuine binary altered parameters (so that
it grades a decoy) must never give a full grade: the binary reports the digest of the
config it read inside its authenticated result, and the monitor refuses the result."""

from __future__ import annotations

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
