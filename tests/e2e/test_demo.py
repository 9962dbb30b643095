"""``chaosrun demo`` end to end (as a subprocess, with both local SSH servers), and the
in-process SSH server (chaosrun.testing.asyncssh_server) against chaosrun's own SSH client."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest
import trio

from chaosrun.run.audit import verify_file
from chaosrun.run.ssh import HostSpec, RemoteFileExists, SshError, SshTimeout, open_bridge, open_ssh
from chaosrun.testing import LocalSshd, local_asyncssh_server

pytestmark = pytest.mark.e2e

T = TypeVar("T")

DEMO_TIMEOUT = 300  # seconds; a cold Go build cache makes the first run slow


# -- helpers ---------------------------------------------------------------------------------


def _processes_with(marker: str) -> list[int]:
    """PIDs (other than this one) whose command line contains ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    # XDG_CONFIG_HOME under tmp_path: where the operator's monitor key would be created
    env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("CHAOSRUN_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "chaosrun", "demo", "--plain", "--audit", str(tmp_path / "audit"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _one(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the demo's output:\n{text}"
    return found


def _assert_torn_down(text: str) -> None:
    """No temp folder, no server, no process of the demo left."""
    workdir = _one(r"testenv folder \(the candidate's machine\): (\S+)", text).group(1)
    assert not Path(workdir).exists(), f"{workdir} was left behind"
    assert _processes_with(workdir) == [], "a process of the demo (sshd or a command) is still running"
    server = _one(r"local SSH server: (.*), pid (\d+).*listening on 127\.0\.0\.1:(\d+)", text)
    if server.group(1).startswith("OpenSSH"):
        assert not _alive(int(server.group(2))), "the demo's sshd is still running"
    assert not _accepts(int(server.group(3))), "the demo's SSH port still accepts connections"


# -- the demo --------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["openssh", "asyncssh"])
def test_the_demo_breaks_grades_repairs_and_scores_full_points(server: str, tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--server", server)
    out, _ = proc.communicate(timeout=DEMO_TIMEOUT)
    assert proc.returncode == 0, out

    assert _one(r"local SSH server: (OpenSSH sshd|in-process asyncssh server)", out).group(1) == (
        "OpenSSH sshd" if server == "openssh" else "in-process asyncssh server"
    )
    assert "points before the repair: 0/10" in out
    assert "points after the repair: 10/10" in out
    last = out.strip().splitlines()[-1]
    assert last == "demo passed: run ok, audit logs intact; 0/10 points before the repair, 10/10 points after"

    logs = [Path(p) for p in re.findall(r"\$ chaosrun audit verify --key \S+ (\S+)", out)]
    assert len(logs) == 3
    assert sorted(logs) == sorted((tmp_path / "audit").glob("*.jsonl"))
    for log in logs:
        assert f"{log}: OK" in out
        assert verify_file(log).ok, verify_file(log).message
    _assert_torn_down(out)
    # (only chaosrun's folder: go build may write its telemetry under XDG_CONFIG_HOME/go)
    assert not (tmp_path / "config" / "chaosrun").exists(), "the demo touched the operator's monitor key"


@pytest.mark.parametrize("server", ["openssh", "asyncssh"])
def test_ctrl_c_in_the_middle_of_the_demo_tears_everything_down(server: str, tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--server", server)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # interrupt while the run's steps are on the wire
        seen.append(line)
        if re.search(r"cand-001: \w+ \(chaos \w+ on 127\.0\.0\.1\) started", line):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=60)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out
    assert "chaosrun demo: interrupted" in out
    _assert_torn_down(out)


def test_keep_leaves_the_testenv_folder(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--server", "asyncssh", "--keep")
    out, _ = proc.communicate(timeout=DEMO_TIMEOUT)
    assert proc.returncode == 0, out
    workdir = Path(_one(r"kept the testenv folder (\S+)", out).group(1))
    try:
        assert (workdir / "testenv" / "etc" / "nginx" / "nginx.conf").stat().st_mode & 0o777 == 0o644
        assert list((workdir / "testenv-tmp").iterdir()) == [], "a chaos binary was left in the testenv"
    finally:
        import shutil

        shutil.rmtree(workdir)


# -- the in-process SSH server with chaosrun's client ---------------------------------------------


@pytest.fixture
def asyncsshd(tmp_path: Path) -> Iterator[LocalSshd]:
    with local_asyncssh_server(tmp_path) as server:
        yield server


def _spec(server: LocalSshd, **overrides: object) -> HostSpec:
    fields: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "identity": server.identity,
        "known_hosts": server.known_hosts,
        **overrides,
    }
    return HostSpec(**fields)  # type: ignore[arg-type]


async def test_the_in_process_server_runs_commands_with_stdin_output_and_exit_status(asyncsshd: LocalSshd) -> None:
    async with open_bridge(), open_ssh(_spec(asyncsshd)) as conn:
        result = await conn.run("cat; echo to-stderr >&2; exit 7", input=b"line one\nline two\n")
        assert result.exit_status == 7
        assert result.signal is None
        assert result.stdout == b"line one\nline two\n"
        assert result.stderr == b"to-stderr\n"
        assert (await conn.run("id -un")).stdout.decode().strip() == asyncsshd.user
        assert (await conn.facts()).machine == os.uname().machine
        big = os.urandom(300_000)
        echoed = await conn.run("cat", input=big)
        assert echoed.stdout == big


async def test_write_file_and_remove_work_over_its_sftp(asyncsshd: LocalSshd, tmp_path: Path) -> None:
    target = tmp_path / "upload.bin"
    data = os.urandom(100_000)
    async with open_bridge(), open_ssh(_spec(asyncsshd)) as conn:
        await conn.write_file(str(target), data, 0o700)
        assert target.read_bytes() == data
        assert target.stat().st_mode & 0o777 == 0o700
        with pytest.raises(RemoteFileExists):
            await conn.write_file(str(target), b"other", 0o600)
        assert target.read_bytes() == data
        await conn.remove(str(target))
        assert not target.exists()
        await conn.remove(str(target))  # a missing file is fine


async def test_a_command_killed_by_a_signal_reports_the_signal(asyncsshd: LocalSshd) -> None:
    async with open_bridge(), open_ssh(_spec(asyncsshd)) as conn:
        result = await conn.run("kill -KILL $$")
        assert result.exit_status is None
        assert result.signal == "KILL"


async def test_a_timed_out_command_is_stopped_with_its_children(asyncsshd: LocalSshd) -> None:
    marker = f"{300 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    async with open_bridge(), open_ssh(_spec(asyncsshd)) as conn:
        with pytest.raises(SshTimeout):
            # the shell ignores TERM and so does its child: only the group KILL ends them
            await conn.run(f"trap '' TERM; sleep {marker}; true", timeout=0.5)
        await trio.sleep(0.2)
        assert _processes_with(f"sleep {marker}") == []


async def test_closing_the_connection_ends_the_commands_still_running(asyncsshd: LocalSshd) -> None:
    marker = f"{300 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    async with open_bridge():
        async with open_ssh(_spec(asyncsshd)) as conn:
            await conn.start(f"sleep {marker}")
            with trio.fail_after(5):
                while not _processes_with(f"sleep {marker}"):
                    await trio.sleep(0.02)
        with trio.fail_after(5):
            while _processes_with(f"sleep {marker}"):
                await trio.sleep(0.05)


async def test_only_the_generated_client_key_may_log_in(asyncsshd: LocalSshd, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    other.write_private_key(str(tmp_path / "other_key"))
    (tmp_path / "other_key").chmod(0o600)
    async with open_bridge():
        with pytest.raises(SshError, match="permission denied"):
            async with open_ssh(_spec(asyncsshd, identity=tmp_path / "other_key")):
                pass
        with pytest.raises(SshError, match="permission denied"):
            async with open_ssh(_spec(asyncsshd, user="nobody-" + uuid.uuid4().hex[:6])):
                pass


def _in_asyncio_thread(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a plain asyncio coroutine in a thread of its own, apart from the test's trio loop."""
    box: list[T] = []
    errors: list[BaseException] = []

    def thread() -> None:
        try:
            with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
                box.append(runner.run(main()))
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    t = threading.Thread(target=thread)
    t.start()
    t.join(30)
    if errors:
        raise errors[0]
    assert box, "the asyncssh client did not finish"
    return box[0]


def _connect(server: LocalSshd) -> Any:
    return asyncssh.connect(
        server.host,
        server.port,
        username=server.user,
        client_keys=[str(server.identity)],
        known_hosts=str(server.known_hosts),
        config=None,
    )


def test_an_ssh_signal_request_reaches_the_command(asyncsshd: LocalSshd) -> None:
    # chaosrun's client signals by process group over a second channel; a plain SSH
    # `signal` request (what other clients send) must work too, also after stdin's EOF.
    async def main() -> Any:
        async with _connect(asyncsshd) as conn:
            process = await conn.create_process("echo started; sleep 300")
            process.stdin.write_eof()
            assert (await process.stdout.readline()).strip() == "started"
            process.send_signal("TERM")
            done = await asyncio.wait_for(process.wait(), 10)
            return done.exit_signal

    exit_signal = _in_asyncio_thread(main)
    assert exit_signal is not None and exit_signal[0] == "TERM"


def test_shells_ptys_and_other_subsystems_are_refused(asyncsshd: LocalSshd) -> None:
    async def main() -> list[str]:
        refused = []
        async with _connect(asyncsshd) as conn:
            for kwargs in ({}, {"command": "true", "term_type": "xterm"}, {"subsystem": "netconf"}):
                try:
                    process = await conn.create_process(**kwargs)
                except asyncssh.ChannelOpenError as exc:
                    refused.append(exc.reason)
                else:
                    process.close()
            # and the connection still serves commands
            assert (await conn.run("echo ok", check=True)).stdout == "ok\n"
        return refused

    assert len(_in_asyncio_thread(main)) == 3


def test_stopping_the_server_closes_its_port_and_thread(tmp_path: Path) -> None:
    with local_asyncssh_server(tmp_path) as server:
        assert server.pid == os.getpid()
        assert _accepts(server.port)
        assert server.known_hosts.read_text().startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 ")
        assert server.identity.stat().st_mode & 0o777 == 0o600
        server.stop()  # early stop, as with LocalSshd.stop(); the block's exit is then a no-op
        assert not _accepts(server.port)
    assert not _accepts(server.port)
    assert not any(t.name == "chaosrun-local-sshd" and t.is_alive() for t in threading.enumerate())
    assert "listening on" in server.log.read_text()
