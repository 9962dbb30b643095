"""Test support: a throwaway OpenSSH server on 127.0.0.1, for the test suite and ``chaosrun demo``.

Everything it needs (config, host key, client key, authorized_keys, known_hosts, pid file,
log) lives in one temp folder; the machine's own ``/etc/ssh`` is never read or written.
The server runs as a child of this process and is stopped by PID when the block exits,
together with every process it spawned (per-connection sshd children and the commands
they run), so a test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import ChaosrunError

__all__ = ["LocalSshd", "LocalSshdError", "local_sshd", "write_known_hosts"]

DEFAULT_SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
HOST = "127.0.0.1"

START_TIMEOUT = 10.0  # seconds until the SSH-2.0 banner must be there
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
PORT_ATTEMPTS = 5  # a port found free can be taken before sshd binds it: retry


class LocalSshdError(ChaosrunError):
    """The local sshd is missing or did not start; the message says why."""


@dataclass(frozen=True)
class LocalSshd:
    """A running throwaway sshd. Connect as ``user`` with ``identity``, verify with ``known_hosts``.

    The ``local_sshd`` block owns the process; ``stop()`` ends it early (e.g. to test a host
    that goes away) and the block's exit then only reaps it.
    """

    host: str
    port: int
    user: str
    identity: Path
    known_hosts: Path
    root: Path
    pid: int
    log: Path
    host_public_key: str  # "ssh-ed25519 AAAA..."
    client_public_key: str  # "ssh-ed25519 AAAA..."

    def stop(self) -> None:
        """Stop this sshd and everything it spawned (SIGTERM, then SIGKILL). Idempotent."""
        _stop_tree(self.pid, waiter=None)


def write_known_hosts(path: Path, host: str, port: int, public_key_line: str) -> None:
    """Write a known_hosts file holding one host key, in OpenSSH's ``[host]:port`` form.

    Args:
        path: the file to (over)write.
        host: address the client will connect to.
        port: its port; 22 is written without brackets, as OpenSSH does.
        public_key_line: ``"ssh-ed25519 AAAA..."`` (a trailing comment is dropped).
    """
    key_type, key_b64 = public_key_line.split()[:2]
    name = host if port == 22 else f"[{host}]:{port}"
    path.write_text(f"{name} {key_type} {key_b64}\n")


@contextlib.contextmanager
def local_sshd(
    workdir: Path,
    *,
    sshd_path: str | None = None,
    host: str = HOST,
    netns: str | None = None,
    extra_config: tuple[str, ...] = (),
    user: str | None = None,
    shlvl: bool = True,
    prefix: tuple[str, ...] = (),
) -> Iterator[LocalSshd]:
    """Run an OpenSSH server on 127.0.0.1 for the duration of the block.

    Args:
        workdir: an existing folder; a fresh subfolder of it holds every file of this server.
        sshd_path: the sshd binary (default ``/usr/sbin/sshd``). sshd re-executes itself,
            so a relative name is resolved to an absolute path first.
        host: the address to listen on (default 127.0.0.1).
        netns: run sshd inside this network namespace (``ip netns exec``), listening on
            ``host`` port 22; the caller made the namespace and gave it ``host``.
        extra_config: more sshd_config lines, e.g. ``"SetEnv BASH_ENV=/tmp/hook"`` (a
            tampered target, for the tamper sensors' tests); written before any Match.
        user: log in as this existing user instead of the one running the tests. Its
            home is left alone: sshd asks ``/bin/cat`` (run as root) for the client key.
            sshd refuses a locked account (``!`` in /etc/shadow) with ``UsePAM no``.
        shlvl: write ``SetEnv SHLVL=1`` (the default), which keeps bash from reading
            ``~/.bashrc`` for the commands sshd runs; False leaves it out, as on a stock
            sshd, so that bash (built as Debian builds it) reads ``~/.bashrc`` for them.
        prefix: a command put before sshd's own (``unshare --mount ...``); it must exec
            sshd in place, so that the pid stays sshd's (as ``ip netns exec`` does).

    Yields:
        The running server's coordinates and credentials.

    Raises:
        LocalSshdError: sshd is not installed, or it exited / stayed silent at start
            (the message carries the tail of its log).
    """
    sshd = _find_sshd(sshd_path)
    root = Path(tempfile.mkdtemp(prefix="sshd-", dir=workdir))
    login = user or pwd.getpwuid(os.getuid()).pw_name

    host_key = root / "ssh_host_ed25519_key"
    host_public = _write_keypair(host_key)
    identity = root / "id_ed25519"
    client_public = _write_keypair(identity)
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text(client_public + "\n")
    authorized_keys.chmod(0o600)

    if os.geteuid() == 0:
        # sshd's privilege separation needs this folder; Debian creates it only via systemd.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)

    version = _sshd_version(sshd)
    last_error = ""
    for attempt in range(PORT_ATTEMPTS):
        port = 22 if netns else _free_port()
        log = root / f"sshd-{attempt}.log"
        config = root / "sshd_config"
        text = _config_text(root, port, host_key, authorized_keys, version)
        text = text.replace(f"ListenAddress {HOST}", f"ListenAddress {host}")
        # sshd takes the first SetEnv line only: extra variables join the default one.
        setenv = " ".join(line.split(None, 1)[1] for line in extra_config if line.startswith("SetEnv "))
        default = "SetEnv SHLVL=1" if shlvl else "SetEnv"
        text = text.replace("SetEnv SHLVL=1\n", f"{default} {setenv}".rstrip() + "\n" if shlvl or setenv else "")
        if user is not None:
            # sshd reads AuthorizedKeysFile as the user, who cannot reach this folder.
            text += f"AuthorizedKeysCommand /bin/cat {authorized_keys}\nAuthorizedKeysCommandUser root\n"
        others = "".join(line + "\n" for line in extra_config if not line.startswith("SetEnv "))
        config.write_text(others + text)
        proc = _spawn(sshd, config, log, netns, prefix)
        try:
            _wait_for_banner(proc, port, log, host)
        except _PortTaken as exc:
            last_error = str(exc)
            _stop_tree(proc.pid, waiter=proc)
            continue
        except BaseException:
            _stop_tree(proc.pid, waiter=proc)
            raise

        known_hosts = root / "known_hosts"
        write_known_hosts(known_hosts, host, port, host_public)
        server = LocalSshd(
            host=host,
            port=port,
            user=login,
            identity=identity,
            known_hosts=known_hosts,
            root=root,
            pid=proc.pid,
            log=log,
            host_public_key=host_public,
            client_public_key=client_public,
        )
        try:
            yield server
        finally:
            _stop_tree(proc.pid, waiter=proc)
        return
    raise LocalSshdError(f"sshd could not bind a free port in {PORT_ATTEMPTS} tries: {last_error}")


# -- setup ---------------------------------------------------------------------------------


def _find_sshd(sshd_path: str | None) -> str:
    candidate = sshd_path or DEFAULT_SSHD
    if os.sep not in candidate:
        found = shutil.which(candidate) or shutil.which(candidate, path="/usr/sbin:/usr/local/sbin")
        if found is None:
            raise LocalSshdError(f"{candidate} not found on PATH (install openssh-server)")
        candidate = found
    path = Path(candidate).absolute()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise LocalSshdError(f"{path} not found or not executable (install openssh-server)")
    return str(path)


def _write_keypair(path: Path) -> str:
    """Write a new unencrypted ed25519 private key (mode 0600); return its public key line."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    # sshd refuses a host key that others can read, even with StrictModes no.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = public.decode("ascii")
    (path.parent / (path.name + ".pub")).write_text(line + "\n")
    return line


def _sshd_version(sshd: str) -> tuple[int, int]:
    """OpenSSH (major, minor) from the usage text; (0, 0) if it can't be told."""
    try:
        out = subprocess.run([sshd, "-V"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _config_text(root: Path, port: int, host_key: Path, authorized_keys: Path, version: tuple[int, int]) -> str:
    sftp = SFTP_SERVER if Path(SFTP_SERVER).is_file() else "internal-sftp"
    lines = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        f"HostKey {host_key}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        "UsePAM no",
        "StrictModes no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        f"Subsystem sftp {sftp}",
        # bash reads ~/.bashrc for commands run by sshd only when SHLVL < 2; root's .bashrc
        # here runs `pyenv init` (~90 ms per command). See ARCHITECTURE.md.
        "SetEnv SHLVL=1",
        "MaxSessions 100",
        "MaxStartups 200:30:400",
        "MaxAuthTries 20",
        "LoginGraceTime 30",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "LogLevel VERBOSE",
    ]
    if version >= (9, 8):
        # Newer sshd briefly blocks a source address after failed logins; the tests make
        # failed logins on purpose, all from 127.0.0.1.
        lines.append("PerSourcePenalties no")
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _spawn(
    sshd: str, config: Path, log: Path, netns: str | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    # -E sends sshd's own log to the file; stderr goes there too for errors printed before
    # logging is set up (e.g. a bad config line).
    with log.open("ab") as log_file:
        return subprocess.Popen(
            # `ip netns exec` execs sshd in place: the pid stays sshd's own (so must a prefix).
            [
                *(["ip", "netns", "exec", netns] if netns else []),
                *prefix,
                *(sshd, "-D", "-e", "-E", str(log), "-f", str(config)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            close_fds=True,
        )


class _PortTaken(LocalSshdError):
    pass


def _wait_for_banner(proc: subprocess.Popen[bytes], port: int, log: Path, host: str = HOST) -> None:
    """Poll until sshd answers with its SSH-2.0 banner; raise with the log tail otherwise."""
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.005
    while True:
        code = proc.poll()
        if code is not None:
            tail = _tail(log)
            if "Address already in use" in tail:
                raise _PortTaken(f"port {port} taken")
            raise LocalSshdError(f"sshd exited with status {code} at start; log tail:\n{tail}")
        if _banner_ok(port, host):
            return
        if time.monotonic() > deadline:
            raise LocalSshdError(
                f"sshd gave no SSH-2.0 banner on {host}:{port} within {START_TIMEOUT}s; log tail:\n{_tail(log)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _banner_ok(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"SSH-2.0")
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


# -- teardown ------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid`` from /proc, or None once it is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def _levels(pid: int) -> list[list[int]]:
    """The descendants of ``pid``, by depth: children first, then grandchildren, ..."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            children.setdefault(info[1], []).append(int(entry.name))
    levels: list[list[int]] = []
    level = children.get(pid, [])
    while level:
        levels.append(level)
        level = [grandchild for child in level for grandchild in children.get(child, [])]
    return levels


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _settled(pid: int, parents: set[int]) -> bool:
    """Gone, or a zombie nobody of ours will reap (re-parented out of the tree)."""
    info = _stat(pid)
    return info is None or (info[0] == "Z" and info[1] not in parents)


def _end(pids: list[int], parents: set[int]) -> None:
    """SIGTERM ``pids``, wait until their parents have reaped them, SIGKILL stragglers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal([p for p in pids if not _settled(p, parents)], sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        delay = 0.002
        while not all(_settled(p, parents) for p in pids):
            if time.monotonic() > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        else:
            return


def _stop_tree(pid: int, *, waiter: subprocess.Popen[bytes] | None) -> None:
    """Stop sshd and everything below it, deepest processes first.

    Bottom-up, so that each process is reaped by its own (still running) parent: a process
    whose parent died first is re-parented to PID 1, which on some hosts (containers, VM
    init shims) never reaps it, leaving a zombie. The per-connection sshd children call
    setsid(), so a process-group kill would miss them; /proc tells us the tree.
    ``waiter`` is our Popen for ``pid`` when we are its parent, so it gets reaped.
    """
    if waiter is not None and waiter.poll() is not None:
        return
    if _stat(pid) is None:
        return
    levels = _levels(pid)
    tree = {pid, *(p for level in levels for p in level)}
    for level in reversed(levels):
        _end(level, tree)
    if waiter is None:
        _end([pid], set())
        return
    waiter.terminate()
    try:
        waiter.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        waiter.kill()
        waiter.wait()
