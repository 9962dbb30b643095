"""A live thief on the binary's stdin pipe: a root process of the candidate's on the target
(here: this machine, behind the test's sshd) watches the upload folder with inotify, stops
the exec wrapper shell with SIGSTOP the moment it has opened the uploaded binary, reads the
step's config out of the shell's stdin pipe through /proc/PID/fd/0, puts a config back
into the same pipe and lets the shell go on (SIGCONT).

Tamper form: it puts back altered parameters (the file probe pointed at a decoy that
exists). Forge form: it puts the config back as it was, and first speaks for the binary
with the stolen token. Neither may end in a full grade; each must name what happened.
The thief writes what it read to a file, so a test cannot pass without a real theft."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from typing import Any

import pytest
from e2e_support import Exam, RunResult

from chaosrun.run.audit import verify_file

# The thief, run as a process of its own (as root, like the candidate's). argv: the upload
# folder, the pid of the target's sshd, "tamper" or "forge", the file it reports to.
THIEF = r"""
import ctypes, ctypes.util, hashlib, json, os, signal, struct, sys, time

folder, sshd_pid, mode, report = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
IN_CLOSE_WRITE, IN_OPEN = 0x08, 0x20

def tell(**fields):
    with open(report + ".tmp", "w") as f:
        json.dump(fields, f)
    os.rename(report + ".tmp", report)

def descendants(pid, depth=0):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return []
    return kids + [d for k in kids if depth < 4 for d in descendants(k, depth + 1)]

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
fd = libc.inotify_init1(0)
libc.inotify_add_watch(fd, folder.encode(), IN_CLOSE_WRITE | IN_OPEN)
open(report + ".ready", "w").close()
uploaded, target = set(), None
while target is None:  # the upload ends (close after write); the next open is the wrapper's
    data = os.read(fd, 65536)
    offset = 0
    while offset < len(data):
        _, mask, _, length = struct.unpack_from("iIII", data, offset)
        name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
        offset += 16 + length
        if name.startswith("tmp.") and mask & IN_CLOSE_WRITE:
            uploaded.add(name)
        elif name in uploaded and mask & IN_OPEN:
            target = os.path.join(folder, name)

shell = None
deadline = time.monotonic() + 2
while shell is None and time.monotonic() < deadline:
    for pid in descendants(sshd_pid):
        try:
            if os.readlink(f"/proc/{pid}/fd/3").startswith(target):
                shell = pid
                break
        except OSError:
            pass
if shell is None:
    tell(error=f"no process has {target} open")
    sys.exit(1)
os.kill(shell, signal.SIGSTOP)
exe = os.readlink(f"/proc/{shell}/exe")
if exe.startswith(folder):
    os.kill(shell, signal.SIGCONT)
    tell(error=f"too late: {shell} already runs the binary ({exe})")
    sys.exit(1)

# The config is the first line on the wrapper's stdin: read it through /proc/PID/fd/0.
pipe = os.open(f"/proc/{shell}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
line = b""
deadline = time.monotonic() + 5
while not line.endswith(b"\n") and time.monotonic() < deadline:
    try:
        chunk = os.read(pipe, 65536)
    except BlockingIOError:
        time.sleep(0.001)
        continue
    if not chunk:
        time.sleep(0.001)
    line += chunk
stdin_link = os.readlink(f"/proc/{shell}/fd/0")
config = line.rstrip(b"\n")
put_back = config.replace(b"/missing", b"/decoy") if mode == "tamper" else config
writer = os.open(f"/proc/{shell}/fd/0", os.O_WRONLY | os.O_NONBLOCK)
os.write(writer, put_back + b"\n")
os.close(writer)
os.close(pipe)

forged = None
if mode == "forge":  # speak for the binary first, with a full-points result
    import trio
    from chaosrun.testing.callback import send_callback
    import base64
    cfg = json.loads(config)
    with open(f"/proc/{shell}/fd/3", "rb") as f:  # the upload, through the shell's descriptor
        exe_sha256 = hashlib.sha256(f.read()).hexdigest()

    async def forge():
        host, port = cfg["monitor"].rsplit(":", 1)
        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        return await send_callback(
            stream, monitor_key=base64.b64decode(cfg["monitor_key"]), token=cfg["token"],
            run_id=cfg["run"], step_id=cfg["step"], config_sha256=hashlib.sha256(config).hexdigest(),
            exe_sha256=exe_sha256, logs=[],
            result={"ok": True, "error": None, "result": {"exists": True}, "changes": []},
        )

    forged = trio.run(forge)
os.kill(shell, signal.SIGCONT)
tell(shell=shell, stdin=stdin_link, exe=exe, config=config.decode(), put_back=put_back.decode(), forged=forged)
"""


def steal(exam: Exam, mode: str, callback: str) -> tuple[RunResult, dict[str, Any]]:
    """Run one verify probe with the thief on the target; return the run and its report."""
    thief = exam.workdir / "thief.py"
    thief.write_text(THIEF)
    report = exam.workdir / "stolen.json"
    (exam.sandbox / "decoy").write_text("the thief points the probe here\n")
    scenario = exam.workdir / "s.yaml"
    scenario.write_text(
        "version: 1\nname: thief\ntargets:\n  web: {host: 127.0.0.1}\n"
        f"monitor: {{callback: {callback}}}\nsteps: []\nverify:\n"
        f"  - {{id: made, target: web, probe: file_exists, with: {{path: {exam.sandbox / 'missing'}}}, "
        "expect: result.exists, points: 5}\n"
    )
    argv = [sys.executable, str(thief), str(exam.remote_tmp), str(exam.sshd.pid), mode, str(report)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    exam.processes.append(proc)
    deadline = time.monotonic() + 10
    while not report.with_suffix(".json.ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the thief did not start"
        time.sleep(0.01)
    r = exam.chaosrun("verify", scenario, "-i", exam.inventory(["web"]), "--plain")
    _, err = proc.communicate(timeout=20)
    assert report.exists(), f"the thief reported nothing: {err.decode()[-2000:]}"
    stolen: dict[str, Any] = json.loads(report.read_text())
    assert "error" not in stolen, stolen["error"]
    return r, stolen


def assert_really_stolen(stolen: dict[str, Any], r: RunResult) -> dict[str, Any]:
    """The thief read the genuine config off the wrapper's stdin pipe: the very line the
    monitor sent (its digest is the one the monitor expected), token included."""
    assert stolen["stdin"].startswith("pipe:["), stolen
    assert not stolen["exe"].startswith("/proc/"), stolen  # stopped while still the shell
    config: dict[str, Any] = json.loads(stolen["config"])
    assert config["step"] == "made" and config["token"] and config["params"]["path"].endswith("/missing")
    tunnel = r.events("tunnel")
    dialed = tunnel[0]["remote"] if tunnel else r.events("listen")[0]["address"]
    assert config["monitor"] == dialed, (config["monitor"], dialed)  # the step's own callback address
    return config


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_thief_who_rewrites_the_config_in_the_pipe_gets_params_altered_and_no_points(
    exam: Exam, callback: str
) -> None:
    r, stolen = steal(exam, "tamper", callback)
    assert_really_stolen(stolen, r)
    assert "/decoy" in stolen["put_back"] and stolen["put_back"] != stolen["config"]
    end = r.step_end("made")
    assert (end["status"], end["points"]) == ("failed", 0), end
    assert end["reason"] == "the step's parameters were altered on the target", end
    # The genuine binary read the thief's line: the refusal names both digests.
    (refusal,) = [e for e in r.events("callback_rejected") if e.get("digest") == "config_sha256"]
    assert refusal["expected"] == hashlib.sha256(stolen["config"].encode()).hexdigest()
    assert refusal["reported"] == hashlib.sha256(stolen["put_back"].encode()).hexdigest()
    signals = [(s["step"], s["signal"]) for s in r.events("signal")]
    assert ("made", "params_altered") in signals, signals
    env = r.events("run_end")[0]["environments"]["cand-001"]
    assert env["integrity"] == "suspect" and env["points"] == 0
    assert r.audit_path is not None and verify_file(r.audit_path).ok


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_thief_who_forges_first_with_the_stolen_token_gets_token_reused_and_no_points(
    exam: Exam, callback: str
) -> None:
    r, stolen = steal(exam, "forge", callback)
    assert_really_stolen(stolen, r)
    assert stolen["put_back"] == stolen["config"]  # the genuine binary got its own config back
    assert stolen["forged"] == {"t": "ack"}, stolen  # the forged full-points result was taken first...
    assert len(r.events("callback_accepted")) == 1
    end = r.step_end("made")
    assert (end["status"], end["points"]) == ("failed", 0), end  # ...and is not what counts
    assert end["reason"].startswith("token already used"), end
    assert "token already used" in [e["reason"] for e in r.events("callback_rejected")]
    assert ("made", "token_reused") in [(s["step"], s["signal"]) for s in r.events("signal")]
    env = r.events("run_end")[0]["environments"]["cand-001"]
    assert env["integrity"] == "suspect" and env["points"] == 0
    assert r.audit_path is not None and verify_file(r.audit_path).ok
