"""``transfer: gzip`` against the real test sshd: a run sends the module compressed, the
exec wrapper unpacks it into a file that has no name and runs it, the audit log says so,
nothing is left in the target's temp dir; the candidate (root) changing the bytes on the
way (a swapped upload, a lying ``gzip``) is refused before the binary ever sees the
config; and ``chaosrun restore`` removes what a monitor killed right after the upload left
there, for either transfer."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from e2e_support import Exam, RunResult

from chaosrun.run.audit import verify_file
from chaosrun.testing import LocalSshd, local_sshd

PROBE = "  - {{id: {id}, target: web, probe: file_exists, with: {{path: {path}}}, expect: result.exists}}\n"


def scenario(exam: Exam, steps: str, *, monitor: str = "") -> Path:
    path = exam.workdir / "transfer.yaml"
    path.write_text(
        "version: 1\nname: transfer\ntargets:\n  web: {host: 127.0.0.1}\n"
        + (f"monitor: {{{monitor}}}\n" if monitor else "")
        + "steps:\n"
        + steps
    )
    return path


def run(exam: Exam, s: Path, *args: str) -> RunResult:
    return exam.chaosrun("run", s, "-i", exam.inventory(["web"]), "--plain", *args)


def deploys(r: RunResult) -> list[dict[str, object]]:
    return r.events("deploy")


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_gzip_run_sends_fewer_bytes_leaves_nothing_and_says_gzip_in_the_audit_log(exam: Exam, callback: str) -> None:
    steps = PROBE.format(id="first", path=exam.sandbox) + PROBE.format(id="second", path=exam.sandbox)
    r = run(exam, scenario(exam, steps, monitor=f"callback: {callback}, transfer: gzip"))
    assert r.code == 0, r.stdout + r.stderr
    assert [r.step_end(s)["status"] for s in ("first", "second")] == ["ok", "ok"]
    for d in deploys(r):
        assert d["transfer"] == "gzip"
        assert isinstance(d["sent"], int) and isinstance(d["size"], int) and d["sent"] < 0.5 * d["size"]
        assert d["unpack_path"] != d["path"]
    assert [c["removed"] for c in r.events("cleanup")] == [True, True]
    assert [e["exit_status"] for e in r.events("exec")] == [0, 0]
    accepted = r.events("callback_accepted")
    assert len(accepted) == 2  # the binary that called back reported the deployed executable's hash
    assert r.audit_path is not None and verify_file(r.audit_path).ok
    assert exam.leftovers() == []


def test_nothing_is_on_disk_while_a_gzip_step_runs(exam: Exam) -> None:
    fifo = exam.sandbox / "pipe"
    os.mkfifo(fifo)
    seen: list[list[str]] = []
    running: list[str] = []

    def look() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            logs = list((exam.workdir / "audit").glob("*.jsonl")) if (exam.workdir / "audit").exists() else []
            if logs and '"event":"deploy"' in logs[0].read_text():
                time.sleep(1.0)  # the binary is running now, blocked on the fifo
                seen.append(exam.leftovers())
                running.extend(_running_from(exam.remote_tmp))
                break
            time.sleep(0.01)
        with open(fifo, "w") as writer:  # let the probe finish
            writer.write("done\n")

    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    steps = f"  - {{id: real, target: web, probe: file_contains, with: {{path: '{fifo}', text: done}}}}\n"
    r = run(exam, scenario(exam, steps, monitor="transfer: gzip"))
    looker.join(40)
    assert r.step_end("real")["status"] == "ok", r.step_end("real")
    assert deploys(r)[0]["transfer"] == "gzip"
    assert seen == [[]], "the upload or the unpacked binary had a name while the binary ran"
    (exe,) = running  # it ran from the unpacked file, unlinked before it started
    assert (
        exe.endswith(" (deleted)")
        and Path(exe.removesuffix(" (deleted)")).name == Path(str(deploys(r)[0]["unpack_path"])).name
    )


def _running_from(folder: Path) -> list[str]:
    """The executables of running processes that were started from a file in ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            exe = os.readlink(f"/proc/{pid}/exe")
            if exe.startswith(f"{folder}/"):
                found.append(exe)
    return found


def test_the_command_line_transfer_overrides_the_scenarios(exam: Exam) -> None:
    s = scenario(exam, PROBE.format(id="look", path=exam.sandbox), monitor="transfer: raw")
    gz = run(exam, s, "--transfer", "gzip")
    assert gz.code == 0, gz.stdout + gz.stderr
    raw = run(exam, s)
    assert raw.code == 0, raw.stdout + raw.stderr
    ((sent_gz,), (sent_raw,)) = ([d["transfer"] for d in deploys(gz)], [d["transfer"] for d in deploys(raw)])
    assert (sent_gz, sent_raw) == ("gzip", "raw")
    assert deploys(raw)[0]["sent"] == deploys(raw)[0]["size"]


def test_auto_sends_raw_to_a_loopback_target(exam: Exam) -> None:
    steps = "".join(PROBE.format(id=f"s{i}", path=exam.sandbox) for i in range(2))
    r = run(exam, scenario(exam, steps))
    assert r.code == 0, r.stdout + r.stderr
    assert [(d["transfer"], d["chosen"]) for d in deploys(r)] == [
        ("raw", "auto: a loopback target: no wire to save bytes on")
    ] * 2


SHAPE = ("tbf", "rate", "100mbit", "burst", "32kbit", "latency", "400ms")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def host_at_100mbit(workdir: Path) -> Iterator[tuple[LocalSshd, str]]:
    """An sshd in a namespace of its own behind a veth pair shaped to 100 Mbit/s at both
    ends; yields it and the monitor's address on the link. All removed at the end."""
    tag = secrets.token_hex(2)
    prefix = f"10.234.{secrets.randbelow(200) + 20}."
    ns, outer, inner = f"crx{tag}", f"vxo{tag}", f"vxi{tag}"
    try:
        ip("netns", "add", ns)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("addr", "add", prefix + "1/24", "dev", outer)
        ip("link", "set", outer, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", prefix + "2/24", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        subprocess.run(["tc", "qdisc", "add", "dev", outer, "root", *SHAPE], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", inner, "root", *SHAPE], check=True)
        with local_sshd(workdir, host=prefix + "2", netns=ns) as server:
            yield server, prefix + "1"
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_auto_on_a_100_mbit_link_measures_it_and_sends_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    folders = [tmp_path / name for name in ("remote-tmp", "sandbox", "work")]
    for folder in folders:
        folder.mkdir()
    with host_at_100mbit(tmp_path) as (server, monitor):
        exam = Exam(server, folders[1], folders[0], folders[2])
        steps = "".join(PROBE.format(id=f"s{i}", path=exam.sandbox) for i in range(3))
        r = run(exam, scenario(exam, steps, monitor=f"bind: {monitor}"))
        assert exam.leftovers() == []
    assert r.code == 0, r.stdout + r.stderr
    first, *later = deploys(r)
    assert (first["transfer"], first["chosen"]) == ("gzip", "auto: first upload to this target, it measures the link")
    assert [d["transfer"] for d in later] == ["gzip", "gzip"], later
    link = float(str(later[0]["chosen"]).split("link ")[1].split(" MB/s")[0])
    assert 4 < link < 13, later[0]["chosen"]  # 100 Mbit/s is 12.5 MB/s, SSH and SFTP round trips included
    assert sum(int(str(d["sent"])) for d in deploys(r)) < 0.5 * sum(int(str(d["size"])) for d in deploys(r))


# -- the candidate changes the bytes ----------------------------------------------------------

# Renames ``swap`` over the first upload of ``folder`` the moment it is closed after writing
# (the .gz: the wrapper's unpacked file has no name by the time it is written).
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


@contextmanager
def swapping(exam: Exam, replacement: bytes) -> Iterator[Path]:
    """A root process that swaps ``replacement`` in for the upload; yields where it names it."""
    swap_dir = exam.workdir / "swap"
    swap_dir.mkdir()
    swap = swap_dir / "tmp.swapin"
    swap.write_bytes(replacement)
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


def test_a_gz_upload_swapped_on_disk_for_another_program_never_runs(exam: Exam) -> None:
    marker = exam.workdir / "stolen-config"
    fake = gzip.compress(f"#!/bin/sh\ncat > {marker}\n".encode())  # unpacks fine: the hash check refuses it
    with swapping(exam, fake) as swapped:
        r = run(exam, scenario(exam, PROBE.format(id="real", path=exam.sandbox), monitor="transfer: gzip"))
    assert swapped.read_text() == Path(str(deploys(r)[0]["path"])).name, "the swapper missed the upload"
    assert not marker.exists(), "the swapped-in program ran and read the step's secrets"
    end = r.step_end("real")
    # The swap came before the wrapper opened the upload (refused), or after it (our own,
    # checked bytes ran): never the candidate's program.
    assert end["status"] == "ok" or end["reason"] == "the uploaded binary was changed on the target before it ran", end
    if end["status"] != "ok":
        assert [e["exit_status"] for e in r.events("exec")] == [97]
        assert ("real", "binary_swapped") in [(s["step"], s["signal"]) for s in r.events("signal")]
    for leftover in exam.remote_tmp.iterdir():  # the swapped-in file stays when the swap came late
        leftover.unlink()


# Hands the wrapper another program instead of unpacking what it was given.
LYING_GZIP = """#!/bin/sh
cat > /dev/null
printf '#!/bin/sh\\ncat > {marker}\\n'
"""


def test_a_lying_gzip_on_the_target_is_refused_by_the_hash_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    marker = tmp_path / "stolen-config"
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    (fakebin / "gzip").write_text(LYING_GZIP.format(marker=marker))
    (fakebin / "gzip").chmod(0o755)
    folders = [tmp_path / name for name in ("remote-tmp", "sandbox", "work")]
    for folder in folders:
        folder.mkdir()
    with local_sshd(tmp_path, extra_config=(f"SetEnv PATH={fakebin}:/usr/bin:/bin",)) as sshd:
        exam = Exam(sshd, folders[1], folders[0], folders[2])
        r = run(exam, scenario(exam, PROBE.format(id="real", path=exam.sandbox), monitor="transfer: gzip"))
        assert exam.leftovers() == []
    assert not marker.exists(), "the lying gzip's program ran"
    end = r.step_end("real")
    assert (end["status"], end["reason"]) == ("failed", "the uploaded binary was changed on the target before it ran")
    assert [e["exit_status"] for e in r.events("exec")] == [97]
    assert ("real", "binary_swapped") in [(s["step"], s["signal"]) for s in r.events("signal")]
    assert r.events("callback_accepted") == []  # nothing ran that could call back
    assert [c["removed"] for c in r.events("cleanup")] == [True]


# -- a monitor killed after the upload, and restore -------------------------------------------

# The monitor, killed (SIGKILL: no cleanup at all) the moment its KILL_AT-th upload is on
# the target, before the exec wrapper starts: the upload stays at its random name.
KILLED_MONITOR = r"""
import os, signal, sys
from chaosrun.run import deploy

uploads = []

def killing(command):
    def wrapper(*args, **kwargs):
        uploads.append(args[0])
        if len(uploads) == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return command(*args, **kwargs)
    return wrapper

deploy.exec_command = killing(deploy.exec_command)
deploy.gzip_exec_command = killing(deploy.gzip_exec_command)
from chaosrun.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("transfer", ["raw", "gzip"])
@pytest.mark.parametrize(("kill_at", "step"), [(1, "guard:web"), (2, "drop")])  # the baseline's upload, the step's
def test_restore_removes_the_upload_a_killed_monitor_left(exam: Exam, transfer: str, kill_at: int, step: str) -> None:
    s = scenario(
        exam, f"  - {{id: drop, target: web, chaos: write_file, with: {{path: {exam.sandbox}/x, content: y}}}}\n"
    )
    inventory = exam.inventory(["web"])
    audit = exam.workdir / "audit"
    script = exam.workdir / "killed_monitor.py"
    script.write_text(KILLED_MONITOR)
    argv = ["run", str(s), "-i", str(inventory), "--plain", "--audit", str(audit), "--transfer", transfer]
    env = {**os.environ, "KILL_AT": str(kill_at)}
    child = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=120, env=env)
    assert child.returncode == -9, child.stderr
    (log,) = audit.glob("*.jsonl")
    *_, deploy = [json.loads(line) for line in log.read_text().splitlines() if '"event":"deploy"' in line]
    assert deploy["step"] == step
    left = Path(deploy["path"])
    assert deploy["transfer"] == transfer and left.is_file() and left.stat().st_size == deploy["sent"]
    expected = [str(left)]
    if transfer == "gzip":
        assert hashlib.sha256(left.read_bytes()).hexdigest() == deploy["sent_sha256"] != deploy["sha256"]
        # and what a wrapper killed between creating its unpacked file and unlinking it leaves
        Path(deploy["unpack_path"]).touch()
        expected.append(deploy["unpack_path"])
    assert not (exam.sandbox / "x").exists()  # nothing ran

    done = exam.chaosrun("restore", s, "-i", inventory, "--audit", audit)
    assert done.code == 0, done.stdout + done.stderr
    (result,) = [r for r in done.audit if r["event"] == "result"]
    assert sorted(result["result"]["leftovers_removed"]) == sorted(expected)
    assert exam.leftovers() == []
