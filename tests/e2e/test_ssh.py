"""run/ssh.py against a real OpenSSH sshd on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import platform
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from chaosrun.run.ssh import (
    KILL_GRACE,
    ExecResult,
    HostSpec,
    RemoteFileExists,
    SshConnection,
    SshError,
    SshTimeout,
    open_bridge,
    open_ssh,
)
from chaosrun.testing import LocalSshd, write_known_hosts

pytestmark = pytest.mark.e2e


def _processes_with(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker`` (read-only look at /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


async def _wait_gone(marker: str, within: float = 3.0) -> list[int]:
    """Poll until no process mentions ``marker``; return what is left after ``within`` s."""
    with trio.move_on_after(within):
        while _processes_with(marker):
            await trio.sleep(0.02)
    return _processes_with(marker)


async def _wait_seen(marker: str, count: int = 1) -> None:
    """Poll until ``count`` processes mention ``marker`` (the remote command is up)."""
    with trio.fail_after(5):
        while len(_processes_with(marker)) < count:
            await trio.sleep(0.01)


def _marker() -> str:
    """A unique string usable as `sleep`'s argument, so both the shell and sleep carry it."""
    return f"29.{uuid.uuid4().int % 10**12:012d}"


def _spec(server: LocalSshd, **changes: Any) -> HostSpec:
    base = HostSpec(
        host=server.host,
        port=server.port,
        user=server.user,
        identity=server.identity,
        known_hosts=server.known_hosts,
    )
    return dataclasses.replace(base, **changes)


# -- commands ------------------------------------------------------------------------------


async def test_run_returns_exit_status_stdout_and_stderr(ssh_conn: SshConnection) -> None:
    result = await ssh_conn.run("echo out; echo err >&2; exit 7")
    assert result == ExecResult(exit_status=7, signal=None, stdout=b"out\n", stderr=b"err\n")
    assert not result.ok
    assert (await ssh_conn.run("true")).ok


async def test_run_feeds_input_to_stdin_then_eof(ssh_conn: SshConnection) -> None:
    assert (await ssh_conn.run("cat", input=b"hello\x00world")).stdout == b"hello\x00world"
    big = os.urandom(3 * 1024 * 1024)  # several SSH windows' worth
    result = await ssh_conn.run("sha256sum", input=big)
    assert result.stdout.split()[0].decode() == hashlib.sha256(big).hexdigest()


async def test_run_without_input_gives_stdin_eof_so_cat_ends(ssh_conn: SshConnection) -> None:
    with trio.fail_after(5):
        result = await ssh_conn.run("cat")
    assert result == ExecResult(0, None, b"", b"")


async def test_output_that_looks_like_a_pid_line_is_kept(ssh_conn: SshConnection) -> None:
    # Our `echo $$` header is stripped; the command's own first line must not be.
    result = await ssh_conn.run("echo 12345; printf 'no newline'")
    assert result.stdout == b"12345\nno newline"
    assert (await ssh_conn.run("printf x")).stdout == b"x"


async def test_command_killed_by_signal_reports_the_signal(ssh_conn: SshConnection) -> None:
    result = await ssh_conn.run("kill -s KILL $$")
    assert result.exit_status is None
    assert result.signal == "KILL"


async def test_facts_say_uname_m_and_are_asked_once(ssh_conn: SshConnection) -> None:
    first = await ssh_conn.facts()
    assert first.machine == platform.machine()
    assert await ssh_conn.facts() is first


async def test_results_are_plain_data_not_asyncio_objects(ssh_conn: SshConnection) -> None:
    result = await ssh_conn.run("echo hi")
    assert type(result.stdout) is bytes and type(result.stderr) is bytes
    assert type(result.exit_status) is int
    assert type((await ssh_conn.facts()).machine) is str


# -- files ---------------------------------------------------------------------------------


async def test_write_file_then_remove(ssh_conn: SshConnection, sandbox: Path) -> None:
    target = sandbox / "binary"
    data = os.urandom(5 * 1024 * 1024 + 17)  # a chaos binary is a few MB
    await ssh_conn.write_file(str(target), data)
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    remote_digest = (await ssh_conn.run(f"sha256sum < {target}")).stdout.split()[0].decode()
    assert remote_digest == hashlib.sha256(data).hexdigest()

    await ssh_conn.remove(str(target))
    assert not target.exists()
    await ssh_conn.remove(str(target))  # already gone: fine


async def test_write_file_sets_the_requested_mode(ssh_conn: SshConnection, sandbox: Path) -> None:
    for name, mode in [("a", 0o600), ("b", 0o755), ("c", 0o777)]:
        await ssh_conn.write_file(str(sandbox / name), b"x", mode=mode)
        assert stat.S_IMODE((sandbox / name).stat().st_mode) == mode, name


async def test_write_file_refuses_an_existing_path(ssh_conn: SshConnection, sandbox: Path) -> None:
    existing = sandbox / "taken"
    existing.write_bytes(b"candidate's file")
    with pytest.raises(RemoteFileExists, match="already exists"):
        await ssh_conn.write_file(str(existing), b"ours")
    assert existing.read_bytes() == b"candidate's file"


async def test_write_file_does_not_follow_a_planted_symlink(ssh_conn: SshConnection, sandbox: Path) -> None:
    victim = sandbox / "victim"
    link = sandbox / "link"
    link.symlink_to(victim)  # dangling: O_EXCL must still refuse it
    with pytest.raises(RemoteFileExists):
        await ssh_conn.write_file(str(link), b"ours")
    assert not victim.exists()


async def test_write_file_into_a_missing_folder_names_host_and_path(ssh_conn: SshConnection, sandbox: Path) -> None:
    path = str(sandbox / "nope" / "file")
    with pytest.raises(SshError) as info:
        await ssh_conn.write_file(path, b"x")
    assert not isinstance(info.value, RemoteFileExists)
    assert str(info.value).startswith(f"{ssh_conn.spec.label}: ")
    assert path in str(info.value)


async def test_concurrent_uploads_share_one_sftp_session(ssh_conn: SshConnection, sandbox: Path) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(ssh_conn.write_file, str(sandbox / f"f{i}"), b"%d" % i)
    assert sorted(p.name for p in sandbox.iterdir()) == sorted(f"f{i}" for i in range(10))
    assert ssh_conn._sftp is not None  # one client, reused


# -- connecting ----------------------------------------------------------------------------


async def test_host_key_fingerprint_is_the_servers(sshd: LocalSshd, ssh_conn: SshConnection) -> None:
    blob = base64.b64decode(sshd.host_public_key.split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert ssh_conn.host_key_fingerprint == expected


async def test_wrong_host_key_is_refused(sshd: LocalSshd, tmp_path: Path) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKhfRlMZuXTEhOILtb/DJ5Lf/AMJKjsvdHfYNPf7AOLZ"
    known = tmp_path / "known_hosts"
    write_known_hosts(known, sshd.host, sshd.port, other)
    spec = _spec(sshd, known_hosts=known)
    with pytest.raises(SshError) as info:
        async with open_ssh(spec):
            pass
    assert "host key" in str(info.value)
    assert str(info.value).startswith(f"{sshd.user}@{sshd.host}:{sshd.port}: ")


async def test_host_missing_from_known_hosts_is_refused(sshd: LocalSshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    write_known_hosts(known, sshd.host, sshd.port + 1, sshd.host_public_key)  # other port
    with pytest.raises(SshError, match="host key"):
        async with open_ssh(_spec(sshd, known_hosts=known)):
            pass


async def test_missing_known_hosts_file_is_a_clear_error(sshd: LocalSshd, tmp_path: Path) -> None:
    with pytest.raises(SshError, match="known_hosts file .* not found"):
        async with open_ssh(_spec(sshd, known_hosts=tmp_path / "absent")):
            pass


async def test_insecure_connects_despite_a_wrong_host_key(sshd: LocalSshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    write_known_hosts(known, sshd.host, sshd.port, "ssh-ed25519 " + "A" * 68)
    async with open_ssh(_spec(sshd, known_hosts=known, insecure=True)) as conn:
        assert (await conn.run("echo ok")).stdout == b"ok\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_port_fails_fast_with_connection_refused(sshd: LocalSshd) -> None:
    spec = _spec(sshd, port=_closed_port())
    start = time.monotonic()
    with pytest.raises(SshError, match="connection refused") as info:
        async with open_ssh(spec):
            pass
    assert time.monotonic() - start < 2
    assert f"127.0.0.1:{spec.port}" in str(info.value)


async def test_silent_server_hits_the_connect_timeout(sshd: LocalSshd) -> None:
    with socket.socket() as listener:  # accepts TCP (backlog) but never says SSH-2.0
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        spec = _spec(sshd, port=listener.getsockname()[1])
        start = time.monotonic()
        with pytest.raises(SshTimeout, match="timed out"):
            async with open_ssh(spec, connect_timeout=0.5):
                pass
        assert time.monotonic() - start < 2


async def test_wrong_identity_is_permission_denied(sshd: LocalSshd, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = tmp_path / "id_stranger"
    stranger.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SshError, match="permission denied"):
        async with open_ssh(_spec(sshd, identity=stranger)):
            pass


async def test_open_ssh_works_without_an_explicit_bridge(ssh_spec: HostSpec) -> None:
    async def one(i: int) -> None:
        async with open_ssh(ssh_spec) as conn:
            assert (await conn.run(f"echo {i}")).stdout == b"%d\n" % i

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(one, i)


async def test_errors_come_out_of_open_bridge_unwrapped(sshd: LocalSshd) -> None:
    # A bridge made of nurseries would wrap what its body raises in ExceptionGroups; ours doesn't.
    with pytest.raises(SshError, match="connection refused"):
        async with open_bridge(), open_ssh(_spec(sshd, port=_closed_port())):
            pass
    with pytest.raises(KeyError):
        async with open_bridge():
            raise KeyError("from the body")


async def test_a_dead_server_turns_into_ssh_error(fresh_sshd: LocalSshd) -> None:
    async with open_bridge(), open_ssh(_spec(fresh_sshd)) as conn:
        assert (await conn.run("true")).ok
        fresh_sshd.stop()
        with pytest.raises(SshError) as info:
            await conn.run("true")
        assert str(info.value).startswith(f"{conn.spec.label}: ")


# -- cancellation and timeouts --------------------------------------------------------------


async def test_cancel_returns_promptly_and_kills_the_remote_command(
    ssh_conn: SshConnection,
) -> None:
    marker = _marker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ssh_conn.run, f"sleep {marker}; echo done")
        await _wait_seen(marker, 2)  # the remote shell and its sleep
        start = time.monotonic()
        nursery.cancel_scope.cancel()
    assert time.monotonic() - start < 0.8  # SIGTERM worked: no KILL_GRACE wait
    assert await _wait_gone(marker) == []
    assert (await ssh_conn.run("echo still usable")).stdout == b"still usable\n"


async def test_cancel_kills_a_command_that_ignores_sigterm(ssh_conn: SshConnection) -> None:
    marker = _marker()
    with trio.move_on_after(0.3):
        await ssh_conn.run(f"trap '' TERM; sleep {marker}; echo done")
    assert await _wait_gone(marker) == []


async def test_run_timeout_raises_and_kills_the_command(ssh_conn: SshConnection) -> None:
    marker = _marker()
    with pytest.raises(SshTimeout, match="timed out after 0.3s"):
        await ssh_conn.run(f"sleep {marker}; echo done", timeout=0.3)
    assert await _wait_gone(marker) == []


async def test_started_process_can_be_waited_for(ssh_conn: SshConnection) -> None:
    proc = await ssh_conn.start("read line; echo got $line; exit 4", input=b"config\n")
    assert await proc.wait() == ExecResult(4, None, b"got config\n", b"")


async def test_started_process_terminate_kills_it(ssh_conn: SshConnection) -> None:
    marker = _marker()
    proc = await ssh_conn.start(f"sleep {marker}; echo done", input=b"")
    await _wait_seen(marker, 2)
    await proc.terminate()
    assert await _wait_gone(marker) == []


async def test_cancelled_wait_on_a_started_process_kills_it(ssh_conn: SshConnection) -> None:
    marker = _marker()
    proc = await ssh_conn.start(f"sleep {marker}; echo done", input=b"")
    with trio.move_on_after(0.2):
        await proc.wait()
    assert await _wait_gone(marker) == []


async def test_terminate_during_a_cancelled_wait_stops_once(ssh_conn: SshConnection) -> None:
    # The runner's cleanup: the waiting task is cancelled while terminate() runs. Both ask
    # to stop the same command; a TERM-ignoring command must cost one KILL_GRACE, not two.
    marker = _marker()
    proc = await ssh_conn.start(f"trap '' TERM; sleep {marker}; echo done", input=b"")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proc.wait)
        await _wait_seen(marker, 2)
        start = time.monotonic()
        nursery.cancel_scope.cancel()
        await proc.terminate()
    assert time.monotonic() - start < KILL_GRACE + 0.7
    assert await _wait_gone(marker) == []


async def test_closing_the_connection_kills_processes_left_running(ssh_spec: HostSpec) -> None:
    marker = _marker()
    async with open_ssh(ssh_spec) as conn:
        await conn.start(f"sleep {marker}; echo done", input=b"")
        await _wait_seen(marker, 2)
    assert await _wait_gone(marker) == []


# -- reuse and concurrency ------------------------------------------------------------------


async def test_fifty_sequential_runs_reuse_one_connection(ssh_conn: SshConnection) -> None:
    await ssh_conn.run("true")  # warm
    start = time.perf_counter()
    for i in range(50):
        result = await ssh_conn.run(f"echo {i}")
        assert result.stdout == b"%d\n" % i
    per_run_ms = (time.perf_counter() - start) / 50 * 1000
    print(f"\nrun() round trip on loopback: {per_run_ms:.2f} ms per call (50 sequential)")


async def test_twenty_concurrent_runs_over_one_connection(ssh_spec: HostSpec) -> None:
    results: dict[int, bytes] = {}

    async def one(conn: SshConnection, i: int) -> None:
        results[i] = (await conn.run(f"sleep 0.5; echo {i}")).stdout

    # max_sessions matches the test sshd's MaxSessions, so all 20 run at once.
    async with open_ssh(ssh_spec, max_sessions=100) as conn:
        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, conn, i)
        elapsed = time.monotonic() - start
    assert results == {i: b"%d\n" % i for i in range(20)}
    assert elapsed < 2.5, f"20 x sleep 0.5 took {elapsed:.2f}s: not concurrent"
    print(f"\n20 concurrent runs of `sleep 0.5` over one connection: {elapsed:.2f}s")


async def test_more_commands_than_max_sessions_queue_instead_of_failing(
    ssh_conn: SshConnection,
) -> None:
    # The default (10, OpenSSH's default MaxSessions) lets 8 run at a time; 30 must all pass.
    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(ssh_conn.run, f"echo {i}")


# -- the local sshd itself -------------------------------------------------------------------


async def test_local_sshd_teardown_leaves_no_process_or_zombie(tmp_path: Path) -> None:
    from chaosrun.testing.sshd import _levels, local_sshd

    marker = _marker()
    with local_sshd(tmp_path) as server:
        async with open_ssh(_spec(server)) as conn:
            await conn.start(f"sleep {marker}; echo done", input=b"")
            await _wait_seen(marker, 2)
            tree = [server.pid, *(p for level in _levels(server.pid) for p in level)]
            assert len(tree) >= 4  # listener, connection child(ren), shell, sleep
            server.stop()  # the host goes away under a live connection
            with pytest.raises(SshError):
                await conn.run("true")
    assert _processes_with(marker) == []
    assert [p for p in tree if Path(f"/proc/{p}").exists()] == []  # reaped, not zombies
