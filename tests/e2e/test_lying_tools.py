"""Lying tools on a real sshd: a fake ``b2sum`` earlier in ``PATH`` that tells the exec
wrapper what it wants to hear, so that a binary swapped in after the upload passes the
wrapper's hash check and runs with the step's config.

With the swap (inotify, a rename over the upload the moment it is written, before the
wrapper opens it), the binary that runs is another genuine chaosrun module: it reports the
SHA-256 of its own executable in its authenticated hello, which is not the one deployed,
and the step fails with ``binary_swapped``. The fake ``b2sum`` alone, on one machine of
three, is a program that differs from the others' (``program_differs``)."""

from __future__ import annotations

import contextlib
import hashlib
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Exam, RunResult, servers_inventory

from chaosrun.build import Builder, goarch_for
from chaosrun.run.audit import verify_file
from chaosrun.testing import LocalSshd, local_sshd

# Says the hash the wrapper expects (it is in the wrapper's command line, the shell that
# runs b2sum or its parent), and logs the real hash of what it was given.
FAKE_B2SUM = r"""#!/bin/sh
real=$(/usr/bin/b2sum | cut -d' ' -f1)
for p in $PPID $(cut -d' ' -f4 /proc/$PPID/stat); do
  said=$(tr '\0' '\n' < /proc/$p/cmdline | grep -oE '[0-9a-f]{128}' | head -n1)
  [ -n "$said" ] && break
done
echo "real=$real said=$said" >> "{log}"
echo "$said  -"
"""

# Renames ``swap`` over the first upload of ``folder`` the moment it is closed after writing.
SWAPPER = r"""
import ctypes, ctypes.util, os, struct, sys
folder, swap, report = sys.argv[1:4]
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
fd = libc.inotify_init1(0)
libc.inotify_add_watch(fd, folder.encode(), 0x08)  # IN_CLOSE_WRITE
open(report + ".ready", "w").close()
while True:
    data = os.read(fd, 65536)
    offset = 0
    while offset < len(data):
        _, _, _, length = struct.unpack_from("iIII", data, offset)
        name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
        offset += 16 + length
        if name.startswith("tmp."):
            os.rename(swap, os.path.join(folder, name))
            open(report, "w").write(name)
            sys.exit(0)
"""


def genuine(module: str) -> bytes:
    return Builder().build(module, "linux", goarch_for(platform.machine())).path.read_bytes()


def fake_bin(tmp_path: Path, log: Path, passthrough: bool = False) -> Path:
    folder = tmp_path / "fakebin"
    folder.mkdir()
    b2sum = folder / "b2sum"
    b2sum.write_text('#!/bin/sh\nexec /usr/bin/b2sum "$@"\n' if passthrough else FAKE_B2SUM.replace("{log}", str(log)))
    b2sum.chmod(0o755)
    return folder


@contextlib.contextmanager
def swapping(exam: Exam, module: str) -> Iterator[Path]:
    """The swapper, running; yields the file where it names the upload it replaced."""
    swap_dir = exam.workdir / "swap"
    swap_dir.mkdir()
    swap = swap_dir / "tmp.swapin"
    swap.write_bytes(genuine(module))
    swap.chmod(0o755)
    script = exam.workdir / "swapper.py"
    script.write_text(SWAPPER)
    report = exam.workdir / "swapped"
    proc = subprocess.Popen([sys.executable, str(script), str(exam.remote_tmp), str(swap), str(report)])
    try:
        deadline = time.monotonic() + 10
        while not Path(str(report) + ".ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the swapper did not start"
            time.sleep(0.01)
        yield report
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def verify(exam: Exam, callback: str, probes: str) -> RunResult:
    path = exam.workdir / "s.yaml"
    path.write_text(
        f"version: 1\nname: tools\ntargets:\n  web: {{host: 127.0.0.1}}\nmonitor: {{callback: {callback}}}\n"
        "steps: []\nverify:\n" + probes
    )
    return exam.chaosrun("verify", path, "-i", exam.inventory(["web"]), "--plain")


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_fake_b2sum_passing_a_swapped_in_genuine_module_fails_the_step_with_binary_swapped(
    tmp_path: Path, callback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    log = tmp_path / "b2sum.log"
    fake = fake_bin(tmp_path, log)
    folders = [tmp_path / name for name in ("remote-tmp", "sandbox", "work")]
    for folder in folders:
        folder.mkdir()
    deployed = genuine("file_exists")
    with local_sshd(tmp_path, extra_config=(f"SetEnv PATH={fake}:/usr/bin:/bin",)) as sshd:
        exam = Exam(sshd, folders[1], folders[0], folders[2])
        probe = f"  - {{id: made, target: web, probe: file_exists, with: {{path: {exam.sandbox}}}, expect: result.exists, points: 5}}\n"
        with swapping(exam, "file_contains") as swapped:
            r = verify(exam, callback, probe)
        assert exam.leftovers() == []
    # The attack is real: the upload was replaced, and the fake b2sum passed the swapped file.
    (deploy,) = r.events("deploy")
    assert swapped.read_text() == Path(deploy["path"]).name
    (line,) = log.read_text().splitlines()
    real, said = (x.split("=", 1)[1] for x in line.split())
    assert said != real and len(said) == 128, line  # it lied: the wrapper's check passed the swapped file
    assert deploy["sha256"] == hashlib.sha256(deployed).hexdigest()
    end = r.step_end("made")
    assert (end["status"], end["points"]) == ("failed", 0), end
    assert end["reason"] == "the binary that ran is not the one deployed", end
    (refusal,) = [e for e in r.events("callback_rejected") if e.get("digest") == "exe_sha256"]
    assert refusal["expected"] == deploy["sha256"] != refusal["reported"]
    assert ("made", "binary_swapped") in [(s["step"], s["signal"]) for s in r.events("signal")]
    env = r.events("run_end")[0]["environments"]["cand-001"]
    assert env["integrity"] == "suspect" and env["points"] == 0
    assert r.audit_path is not None and verify_file(r.audit_path).ok


def test_a_fake_b2sum_on_one_machine_of_three_is_flagged_program_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    fake = fake_bin(tmp_path, tmp_path / "unused.log", passthrough=True)  # it checks honestly, but is not b2sum
    configs: tuple[tuple[str, ...], ...] = ((), (f"SetEnv PATH={fake}:/usr/bin:/bin",), ())
    with contextlib.ExitStack() as stack:
        servers: list[LocalSshd] = [stack.enter_context(local_sshd(tmp_path, extra_config=c)) for c in configs]
        inventory = servers_inventory(servers, tmp_path)
        workdir = tmp_path / "work"
        workdir.mkdir()
        exam = Exam(servers[0], tmp_path, tmp_path / "remote-tmp-0", workdir)
        path = workdir / "s.yaml"
        path.write_text(
            "version: 1\nname: tools\ntargets:\n  web: {host: 127.0.0.1}\nsteps: []\nverify:\n"
            f"  - {{id: look, target: web, probe: file_exists, with: {{path: {tmp_path}}}, expect: result.exists, points: 5}}\n"
        )
        r = exam.chaosrun("verify", path, "-i", inventory, "--plain")
    by_env = r.events("run_end")[0]["environments"]
    assert [by_env[e]["points"] for e in ("cand-0", "cand-1", "cand-2")] == [5, 5, 5]  # the check itself passed
    assert by_env["cand-0"]["signals"] == [] and by_env["cand-2"]["signals"] == []
    (found,) = by_env["cand-1"]["signals"]
    assert (found["step"], found["signal"]) == ("look", "program_differs"), found
    assert found["detail"].startswith(f"b2sum is {fake}/b2sum ") and "2 of 3 environments" in found["detail"]
    assert by_env["cand-1"]["integrity"] == "suspect"
