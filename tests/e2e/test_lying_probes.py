"""Probes lied to with bind mounts, in a private mount namespace of the target's sshd.

The candidate runs the target's sshd in a mount namespace of its own (``unshare --mount
--propagation private``) where a decoy is bind-mounted over a graded file, and an empty
folder over the /proc/PID of a process the exam wants gone: every command sshd runs, our
binary included, sees the decoys; the rest of the machine (here: the monitor) does not.
The on-target probe's answer is out of reach (it reads the decoy), so the grade must not
stand silently: the sensors see the mounts in the binary's own mountinfo and the
environment is suspect with ``mount_over``; ``verify --strict`` scores it 0."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Exam, RunResult

from chaosrun.run.audit import verify_file
from chaosrun.testing import local_sshd


def mounts_of(pid: int | str) -> str:
    return Path(f"/proc/{pid}/mountinfo").read_text()


@contextlib.contextmanager
def namespaced(tmp_path: Path, binds: list[tuple[Path, str]]) -> Iterator[Exam]:
    """The test's sshd, started in a private mount namespace with ``binds`` (source,
    target) mounted in it; nothing of it reaches this process's mount namespace."""
    folders = [tmp_path / name for name in ("remote-tmp", "sandbox", "work")]
    for folder in folders:
        folder.mkdir(exist_ok=True)
    script = " && ".join(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}" for src, dst in binds)
    prefix = ("unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script + ' && exec "$@"', "sh")
    before = mounts_of("self")
    with local_sshd(tmp_path, prefix=prefix) as sshd:
        inside = mounts_of(sshd.pid)
        for _, dst in binds:  # the attack is real in sshd's namespace, and only there
            assert f" {dst} " in inside, dst
            assert f" {dst} " not in mounts_of("self"), f"{dst} leaked to the host's mount namespace"
        assert os.readlink(f"/proc/{sshd.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        exam = Exam(sshd, folders[1], folders[0], folders[2])
        try:
            yield exam
        finally:
            for proc in exam.processes:
                proc.kill()
                proc.wait()
    assert mounts_of("self") == before
    assert exam.leftovers() == [], "a binary was left on the target"


def verify(exam: Exam, callback: str, probes: str) -> RunResult:
    path = exam.workdir / "s.yaml"
    path.write_text(
        f"version: 1\nname: lying\ntargets:\n  web: {{host: 127.0.0.1}}\nmonitor: {{callback: {callback}}}\n"
        "steps: []\nverify:\n" + probes
    )
    return exam.chaosrun("verify", path, "-i", exam.inventory(["web"]), "--plain", "--strict")


def mount_over(r: RunResult) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for s in r.events("signal"):
        if s["signal"] == "mount_over":
            found.setdefault(s["step"], []).append(s["detail"])
    return found


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_decoy_bind_mounted_over_graded_files_is_flagged_mount_over(
    tmp_path: Path, callback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    graded = tmp_path / "srv"
    graded.mkdir()
    config, secret = graded / "app.conf", graded / "secret.key"
    config.write_text("listen 80\n")  # the candidate never fixed it: 'fixed' is not in it
    secret.write_text("k\n")
    secret.chmod(0o644)  # the exam wants 0600
    decoys = tmp_path / "decoys"
    decoys.mkdir()
    (decoys / "app.conf").write_text("listen 80\nfixed\n")
    (decoys / "secret.key").write_text("k\n")
    (decoys / "secret.key").chmod(0o600)
    binds = [(decoys / "app.conf", str(config)), (decoys / "secret.key", str(secret))]
    probes = (
        f"  - {{id: conf, target: web, probe: file_contains, with: {{path: {config}, text: fixed}}, expect: result.matches, points: 5}}\n"
        f"  - {{id: mode, target: web, probe: file_mode, with: {{path: {secret}}}, expect: 'result.mode == \"0600\"', points: 5}}\n"
    )
    with namespaced(tmp_path, binds) as exam:
        r = verify(exam, callback, probes)
    assert "fixed" not in config.read_text() and oct(secret.stat().st_mode & 0o777) == "0o644"  # the truth
    # The probes read the decoys (out of reach on the target)...
    assert r.step_end("conf")["status"] == "ok" and r.step_end("mode")["status"] == "ok"
    # ...but the mounts over the graded paths are seen, named, and the grade does not stand.
    found = mount_over(r)
    assert any(d.startswith(f"mounted over {config}: {config} ") for d in found.get("conf", [])), found
    assert any(d.startswith(f"mounted over {secret}: {secret} ") for d in found.get("mode", [])), found
    env = r.events("run_end")[0]["environments"]["cand-001"]
    assert env["integrity"] == "suspect"
    assert env["zeroed"].startswith("suspect (--strict): mount_over in ") and env["points"] == 0, env
    assert r.audit_path is not None and verify_file(r.audit_path).ok


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_process_hidden_by_a_mount_over_its_proc_directory_is_flagged_mount_over(
    tmp_path: Path, callback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    name = "minerd" + os.urandom(3).hex()  # the exam wants it gone; the candidate hides it
    exe = tmp_path / name
    exe.write_bytes(Path("/bin/sleep").read_bytes())
    exe.chmod(0o755)
    miner = subprocess.Popen([str(exe), "300"])
    try:
        empty = tmp_path / "empty"
        empty.mkdir()
        probes = (
            f"  - {{id: gone, target: web, probe: process_running, with: {{name: {name}}}, "
            "expect: 'not result.running', points: 5}\n"
        )
        with namespaced(tmp_path, [(empty, f"/proc/{miner.pid}")]) as exam:
            r = verify(exam, callback, probes)
        assert miner.poll() is None, "the miner runs all along"
    finally:
        miner.kill()
        miner.wait()
    assert r.step_end("gone")["status"] == "ok"  # the probe no longer sees it...
    found = mount_over(r).get("gone", [])
    assert any(d.startswith(f"mounted over /proc/{miner.pid} (that process is hidden") for d in found), found
    env = r.events("run_end")[0]["environments"]["cand-001"]
    assert env["integrity"] == "suspect" and env["points"] == 0, env  # ...and the grade does not stand
    (result,) = r.events("result")
    assert "mount_over" in result["sensors"]["signals"]
