"""Run stage, one module attempt: build, listen, deploy, exec, collect, clean.

The binary goes to a random ``tmp.XXXXXXXXXX`` name in the target's temp dir, as it is or
gzip-compressed (``transfer``, chosen in ``run/transfer.py``); the exec wrapper opens it,
unlinks it (unpacks it into an unlinked file first), checks the bytes behind the open
descriptor and runs ``/proc/self/fd/3`` with the step's config on stdin. The listener, the
forward (tunnel mode) and the remote process live in the attempt's nursery; cleanup (stop
the process, close the forward, remove the files if the wrapper did not, audit it) runs in
``finally`` under a shielded, bounded scope.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
import string
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import trio

from ..build import BuildError, goarch_for
from ..plan import PlannedStep
from ..scenario import TargetSpec, Transfer
from .connection import Connection, ExecResult, Forward, Process, TargetError
from .context import EnvState
from .integrity import baseline_changes, sensor_baseline, sensor_flags
from .listener import ListenerState, serve_listener
from .model import StepFailed
from .transfer import decide
from .wire import StepSecret, step_config

CLEANUP_TIMEOUT = 15.0
EXIT_GRACE = 5.0  # after the result: how long the binary may take to exit
RESULT_GRACE = 2.0  # after the binary exited: how long an in-flight result may take
KILL_WAIT = 3.0  # after terminating a lingering binary: how long its exit status may take
HASH_MISMATCH = 97  # exit status of the exec wrapper when the uploaded file changed
UNPACK_FAILED = 95  # the gzip exec wrapper's, when gzip could not unpack the upload
NO_GZIP = 96  # the gzip exec wrapper's, on a target without gzip
DELIVERED = frozenset({0, 1, 2})  # the kit's exit statuses after it delivered a result


def innocuous_name() -> str:
    """A file name like mktemp's (``tmp.k3J9xQ2aZb``): nothing that says chaos."""
    alphabet = string.ascii_letters + string.digits
    return "tmp." + "".join(secrets.choice(alphabet) for _ in range(10))


def exec_command(remote: str, sha256: str, blake2b: str | None = None) -> str:
    """Open the uploaded file, unlink it, check the bytes behind the open descriptor are
    ours, and run exactly those bytes through ``/proc/self/fd/3``.

    Replacing the file by another one (a rename over it) after upload changes nothing: we
    run the inode we opened, whose hash we checked; a changed file is refused with exit
    status 97. The binary's path is gone before it runs, and its command line reads
    ``/proc/self/fd/3``. Nothing secret is in here (the config goes to stdin).

    With ``blake2b`` (the hex BLAKE2b-512 of the same bytes), the check uses coreutils'
    ``b2sum`` where the target has it (coreutils 8.26 and later) and ``sha256sum``
    otherwise: both are cryptographic hashes of the exact bytes, but coreutils' SHA-256
    has no SHA-NI code path, and on a 2.8 MB module it costs ~18 ms of the target's CPU
    against ~8 ms for ``b2sum`` (docs/performance.md).
    """
    p = shlex.quote(remote)
    return f"exec 3<{p} || exit {HASH_MISMATCH}; rm -f {p}; {_hash_check(sha256, blake2b)}; exec /proc/self/fd/3"


def gzip_exec_command(packed: str, unpacked: str, sha256: str, blake2b: str | None = None) -> str:
    """The exec wrapper of a gzip upload: unpack ``packed`` into a file that is unlinked
    before a byte is written, check the unpacked bytes as :func:`exec_command` checks a
    raw upload, and run them through ``/proc/self/fd/3``.

    POSIX sh (tested with dash, Debian's /bin/sh, and bash, root's login shell): the
    upload is opened on fd 4 and unlinked; the unpacked file is created at the fresh random
    name ``unpacked`` on fd 5, exclusively (``set -C`` for that one open: ``O_CREAT|O_EXCL``,
    so a file or symlink planted there is never written through: one there before the open
    exits 97, one planted in the instant between the look and the open fails the open,
    exit 97 in bash, 2 in dash), unlinked at once, reopened read-only on fd 3 through
    ``/proc/self/fd/5`` (the same inode, no name to race on) and made executable through
    ``/proc/self/fd/3``; then ``gzip -dc <&4 >&5``, fd 4 and 5 are closed (a writer still
    open would make the exec fail with ETXTBSY), fd 3 is hashed and executed: the exec
    opens the inode anew, so the offset the hash read moved does not matter. The binary
    then sees what a raw upload's sees: itself on fd 3, nothing on fd 4 and 5, command
    line ``/proc/self/fd/3``.

    What this guarantees against the target's root, who can race every step of it, is
    the hash check: whatever sits behind fd 3 when it is hashed (another inode swapped in,
    bytes changed in the upload or in the unpacked file, a lying gzip) runs only if it is
    exactly the binary we built; anything else exits 97 (or 95, gzip failing on a changed
    upload) before the config is read. The unpacked file never has a name once a byte is
    in it, and the upload's name goes before it is read. Bytes changed after the hash
    (root can reopen the inode for writing through ``/proc/PID/fd/3``) are the same race
    as for a raw upload: the binary's authenticated hello reports the SHA-256 of its own
    executable, which the listener compares with the one deployed.

    Exit statuses of its own: 97 the hash check failed or an open failed, 95 ``gzip -dc``
    failed (a changed upload, or no room to unpack: the caller tells them apart), 96 the
    target has no ``gzip``.
    """
    gz, p2, bad = shlex.quote(packed), shlex.quote(unpacked), HASH_MISMATCH
    return (
        f"umask 077; exec 4<{gz} || exit {bad}; rm -f {gz}; "
        f"command -v gzip >/dev/null 2>&1 || exit {NO_GZIP}; "
        f"if [ -e {p2} ] || [ -h {p2} ]; then exit {bad}; fi; "
        f"set -C; exec 5>{p2} || exit {bad}; set +C; rm -f {p2}; exec 3</proc/self/fd/5 || exit {bad}; "
        f"chmod 700 /proc/self/fd/3 || exit {bad}; gzip -dc <&4 >&5 || exit {UNPACK_FAILED}; "
        f"exec 4<&- 5>&-; {_hash_check(sha256, blake2b)}; exec /proc/self/fd/3"
    )


def _hash_check(sha256: str, blake2b: str | None) -> str:
    """Shell that exits 97 unless the bytes behind fd 3 have these digests."""
    sha_check = f'h=$(sha256sum <&3) && [ "${{h%% *}}" = {sha256} ] || exit {HASH_MISMATCH}'
    if blake2b is None:
        return sha_check
    return (
        "if command -v b2sum >/dev/null 2>&1; then "
        f'h=$(b2sum <&3) && [ "${{h%% *}}" = {blake2b} ] || exit {HASH_MISMATCH}; '
        f"else {sha_check}; fi"
    )


def exit_reason(result: ExecResult) -> str:
    stderr = result.stderr.decode("utf-8", "replace").strip().splitlines()
    tail = stderr[-1][:300] if stderr else ""
    if result.exit_status in (HASH_MISMATCH, UNPACK_FAILED):
        return "the uploaded binary was changed on the target before it ran"
    if result.exit_status == NO_GZIP:
        return "the target has no gzip to unpack the module (transfer: raw sends it as it is)"
    if result.signal:
        return f"binary killed by signal {result.signal} before it reported"
    if result.exit_status == 3:
        return f"binary could not call back to the monitor: {tail or 'no reason given'}"
    if result.exit_status in (126, 127):
        return f"binary could not be executed on the target (exit {result.exit_status}): {tail}"
    return f"binary exited with status {result.exit_status} without a result" + (f": {tail}" if tail else "")


async def module_attempt(env: EnvState, step: PlannedStep, params: Mapping[str, Any]) -> dict[str, Any]:
    """Build, listen, deploy, exec, collect, clean: one attempt at a chaos or probe step.

    Returns:
        The module's result message.

    Raises:
        StepFailed: the attempt failed; the reason says where and why. The step's timeout
            is the caller's cancel scope.
    """
    ctx = env.ctx
    assert step.target is not None and step.module is not None
    conn = await env.connection(step.target)
    try:
        goarch = goarch_for((await conn.facts()).machine)
    except BuildError as exc:
        raise StepFailed(str(exc)) from None
    except TargetError as exc:
        raise StepFailed(f"{ctx.connector.name}: {exc}") from None
    deployable = await ctx.builds.get(step.module, goarch)
    binary = deployable.binary
    link = ctx.links.of(step.target)
    choice = await decide(ctx.transfer, link, conn, step.target, binary.size, ctx.builds.packed_size(deployable))
    packed = await ctx.builds.packed(deployable) if choice.transfer is Transfer.GZIP else None
    data = deployable.data if packed is None else packed.data  # the bytes that go on the wire
    secret = StepSecret.new()
    remote = posixpath.join(step.target.tmp_dir, innocuous_name())
    unpacked = posixpath.join(step.target.tmp_dir, innocuous_name()) if packed is not None else None
    label = f"{step.target.user}@{step.target.host}:{step.target.port}"
    process: Process | None = None
    forward: Forward | None = None
    exited = trio.Event()
    exit_box: list[ExecResult | TargetError] = []
    leftover: str | None = None
    left_unpacked: str | None = None
    exec_recorded = False
    wait_scope = trio.CancelScope(shield=True)
    async with trio.open_nursery() as nursery:
        state: ListenerState = await nursery.start(serve_listener, ctx, env.name, step.id, secret, binary.sha256)
        try:
            await ctx.audit.record(
                "listen",
                env=env.name,
                step=step.id,
                address=f"{ctx.monitor.bind}:{state.port}",
                token_id=secret.token_id,
            )
            if env.first_upload(step.target):  # later ones are explained if they fail
                room = len(data) + (binary.size if packed is not None else 0)  # gzip: both at once
                await _check_room(conn, step.target.tmp_dir, room, label)
            # The step's intent, durable before the binary is on the target: what may be
            # applied, and where the files go (a monitor killed mid-upload leaves them
            # named, for restore to remove: ``sha256``/``size`` are the binary's, that
            # runs; a gzip upload's own bytes at ``path`` are ``sent_sha256``/``sent``).
            await ctx.audit.record(
                "deploy",
                env=env.name,
                step=step.id,
                host=label,
                path=remote,
                sha256=binary.sha256,
                size=binary.size,
                module=step.module,
                params=params,
                transfer=choice.transfer.value,
                sent=len(data),
                **({"sent_sha256": packed.sha256, "unpack_path": unpacked} if packed is not None else {}),
                **({"chosen": choice.why} if choice.why else {}),
            )
            try:
                async with ctx.uploads:  # bounds memory: each upload in flight buffers a binary
                    started = time.perf_counter()  # the link's real time, whatever trio's clock says
                    await conn.write_file(remote, data, 0o700 if packed is None else 0o600)
                    link.measured(len(data), time.perf_counter() - started)
            except TargetError as exc:
                await _check_room(conn, step.target.tmp_dir, len(data), label)  # name the cause if it is this
                raise StepFailed(f"deploy to {label}:{remote} failed: {exc.reason}") from None
            if ctx.monitor.callback == "tunnel":
                # The binary dials the target's own loopback; SSH carries it to us.
                try:
                    forward = await conn.forward_remote_port(ctx.monitor.bind, state.port)
                except TargetError as exc:
                    raise StepFailed(f"tunnel: {exc.reason}") from None
                await ctx.audit.record("tunnel", env=env.name, step=step.id, remote=f"127.0.0.1:{forward.port}")
                dial = f"127.0.0.1:{forward.port}"
            else:
                dial = f"{ctx.dial_ip}:{state.port}"
            config = step_config(
                monitor=dial,
                secret=secret,
                run_id=ctx.run_id,
                step_id=step.id,
                module=step.module,
                params=params,
                timeout=step.timeout,
            )
            state.expect_config(config)  # the binary must report this config's digest
            if unpacked is None:
                command = exec_command(remote, binary.sha256, deployable.blake2b)
            else:
                command = gzip_exec_command(remote, unpacked, binary.sha256, deployable.blake2b)
            try:
                process = await conn.start(command, input=config)
            except TargetError as exc:
                raise StepFailed(f"exec on {label} failed: {exc.reason}") from None
            exec_started = time.perf_counter()

            async def wait_exit() -> None:
                # Shielded: a timeout or Ctrl-C must not stop the binary behind our back
                # (cancelling wait() would); the cleanup below looks at it first, then
                # ends it, then cancels this scope.
                assert process is not None
                with wait_scope:
                    try:
                        exit_box.append(await process.wait())
                    except TargetError as exc:
                        exit_box.append(exc)
                    exited.set()

            nursery.start_soon(wait_exit)
            await first_of(state.authenticated.wait, exited.wait, timeout=ctx.monitor.callback_timeout)
            if state.authenticated.is_set():  # what unpacking costs this target (transfer: auto)
                link.ran(choice.transfer, time.perf_counter() - exec_started)
            if not state.authenticated.is_set() and not exited.is_set():
                raise StepFailed(
                    f"no valid callback within {ctx.monitor.callback_timeout:g}s "
                    f"({state.rejected} rejected connection(s)); "
                    f"is {ctx.monitor.dial_address} reachable from the target?"
                )
            await first_of(state.done.wait, exited.wait, state.failed.wait)
            if not state.done.is_set():
                with trio.move_on_after(RESULT_GRACE):
                    await first_of(state.done.wait, state.lost.wait)
            if state.failure is not None:  # flooded, tampered, or the token proved twice
                env.flag(step, state.failure_signal, state.failure)
                raise StepFailed(state.failure)
            if not state.done.is_set():  # no result: the binary ended first
                outcome = exit_box[0]
                await _record_exec(env, step, outcome, deferred=state.authenticated.is_set())
                exec_recorded = True
                if isinstance(outcome, TargetError):
                    env.forget(step.target)
                    lost = f"connection lost while the binary ran: {outcome.reason}"
                    raise StepFailed(f"{ctx.connector.name}: {lost}")
                if outcome.exit_status == UNPACK_FAILED:  # no room to unpack is no tampering
                    await _check_room(conn, step.target.tmp_dir, binary.size, label)
                if outcome.exit_status == NO_GZIP:
                    link.gzip = False  # auto sends this target raw bytes from now on
                _flag_exit(env, step, outcome)
                raise StepFailed(exit_reason(outcome))
            # The result is in. It counts only if the binary chaosrun started ends as a
            # binary that delivered it does (exit 0, 1 or 2, moments later).
            with trio.move_on_after(EXIT_GRACE):
                await first_of(exited.wait, state.failed.wait)
            if state.failure is not None:  # e.g. a second binary proved the token after the result
                env.flag(step, state.failure_signal, state.failure)
                raise StepFailed(state.failure)
            if not exited.is_set():
                assert process is not None
                stopped = await process.stopped()
                with suppress(TargetError):
                    await process.terminate()
                with trio.move_on_after(KILL_WAIT):
                    await exited.wait()
                ended = exit_box[0] if exit_box else None
                exec_recorded = True
                ctx.audit.defer(
                    "exec",
                    env=env.name,
                    step=step.id,
                    still_running=f"{EXIT_GRACE:g}s after its result",
                    ended="terminated by the monitor",
                    exit_status=ended.exit_status if isinstance(ended, ExecResult) else None,
                    signal=ended.signal if isinstance(ended, ExecResult) else None,
                )
                how = "stopped (state T)" if stopped else "still running"
                env.flag(
                    step, "binary_stopped" if stopped else "binary_lingered", f"{how} {EXIT_GRACE:g}s after its result"
                )
                raise StepFailed(f"the binary was {how} {EXIT_GRACE:g}s after its result: the result is not trusted")
            outcome = exit_box[0]
            await _record_exec(env, step, outcome, deferred=True)
            exec_recorded = True
            if isinstance(outcome, TargetError):
                env.forget(step.target)  # the result came before the connection went
            elif outcome.signal or outcome.exit_status not in DELIVERED:
                how = exit_reason(outcome)
                env.flag(step, "result_without_binary", f"a result came, but the binary chaosrun started: {how}")
                raise StepFailed(f"the result did not come from the binary chaosrun started ({how})")
            assert state.result is not None
            message = state.result
            _check_sensors(env, step, params, message)
        finally:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                if forward is not None:
                    await forward.close()
                if exited.is_set() and not exec_recorded:  # the step failed before it looked
                    await _record_exec(env, step, exit_box[0], deferred=True)
                if process is not None and not exited.is_set():
                    if await process.stopped():
                        env.flag(step, "binary_stopped", "stopped (state T) when the step ended")
                    with suppress(TargetError):
                        await process.terminate()
                    ctx.audit.defer(
                        "exec",
                        env=env.name,
                        step=step.id,
                        still_running="when the step ended",
                        ended="terminated by the monitor",
                    )
                if state.rejected:
                    env.flag(step, "callback_rejected", f"{state.rejected} connection(s) failed to authenticate")
                # The exec wrapper unlinks the binary before it runs; remove it anyway
                # (a folder where the unlink failed, a step that never got so far) and
                # look that it is gone: the record says what was seen, not what should be.
                leftover = await env.remove_binary(step.target, conn, remote)
                if unpacked is not None:
                    left_unpacked = await _remove_unpacked(env, step.target, conn, unpacked)
                # Durable with the step's next record (result or step_end, always written)
                # before the step is reported or the next one starts.
                ctx.audit.defer(
                    "cleanup",
                    env=env.name,
                    step=step.id,
                    path=remote,
                    removed=leftover is None and left_unpacked is None,
                    **({"left": leftover} if leftover else {}),
                    **({"left_unpacked": left_unpacked} if left_unpacked else {}),
                    port_closed=state.port,
                )
            wait_scope.cancel()
            nursery.cancel_scope.cancel()
    if leftover is not None:
        raise StepFailed(f"cleanup: the binary is still on the target at {remote} ({leftover})")
    if left_unpacked is not None:
        raise StepFailed(f"cleanup: the unpacked binary is still on the target at {unpacked} ({left_unpacked})")
    return message


async def _remove_unpacked(env: EnvState, target: TargetSpec, conn: Connection, path: str) -> str | None:
    """What :meth:`EnvState.remove_binary` says of a gzip upload's unpacked file, which the
    wrapper unlinks the moment it creates it: looked for first (one round trip), removed
    only when it is there."""
    with suppress(TargetError):
        if not await conn.exists(path):
            return None
    return await env.remove_binary(target, conn, path)


def _check_sensors(env: EnvState, step: PlannedStep, params: Mapping[str, Any], message: Mapping[str, Any]) -> None:
    """Flag the red flags of the result's tamper sensors, and what changed since the
    environment's baseline (its first report, recorded as ``sensor_baseline``)."""
    sensors = message.get("sensors")
    if not isinstance(sensors, dict):
        env.flag(step, "no_sensors", "the result carries no tamper sensors")
        return
    for signal, detail in sensor_flags(sensors, params):
        env.flag(step, signal, detail)
    current = sensor_baseline(sensors)
    if env.sensor_baseline is None:
        env.sensor_baseline = current
        elapsed = sensors.get("elapsed_us")
        env.ctx.audit.defer("sensor_baseline", env=env.name, step=step.id, baseline=current, elapsed_us=elapsed)
    else:
        for _field, detail in baseline_changes(env.sensor_baseline, current):
            env.flag(step, "changed_since_baseline", detail)
        # Each change is flagged once: later steps compare with what this one saw.
        gone = {k for k in env.sensor_baseline if k.startswith("login:") and k not in current}
        env.sensor_baseline = {k: v for k, v in {**env.sensor_baseline, **current}.items() if k not in gone}
    programs = env.ctx.programs.setdefault(env.name, {})  # and startup files, compared alike
    for key, value in current.items():
        if key.startswith(("program:", "login:")):
            programs.setdefault(key.removeprefix("program:"), (value, step.id))


async def first_of(*waits: Callable[[], Any], timeout: float | None = None) -> None:
    """Return when the first of ``waits`` returns (or after ``timeout``)."""
    async with trio.open_nursery() as nursery:
        if timeout is not None:
            nursery.cancel_scope.deadline = trio.current_time() + timeout

        async def one(wait: Callable[[], Any]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)


async def _record_exec(env: EnvState, step: PlannedStep, outcome: ExecResult | TargetError, *, deferred: bool) -> None:
    """The exec record: how the binary chaosrun started ended (or how its channel broke).

    ``deferred`` when only our own ports close before the step's next record (cleanup,
    result, step_end): it rides along with them, one fsync wait instead of two.
    """
    fields: dict[str, Any]
    if isinstance(outcome, TargetError):
        fields = {"env": env.name, "step": step.id, "error": outcome.reason}
    else:
        fields = {
            "env": env.name,
            "step": step.id,
            "exit_status": outcome.exit_status,
            "signal": outcome.signal,
            "stderr": outcome.stderr.decode("utf-8", "replace")[-2000:],
        }
    if deferred:
        env.ctx.audit.defer("exec", **fields)
    else:
        await env.ctx.audit.record("exec", **fields)


def _flag_exit(env: EnvState, step: PlannedStep, outcome: ExecResult) -> None:
    """Signals of a binary that ended on its own before it reported."""
    if outcome.signal:
        env.flag(step, "binary_killed", f"killed by signal {outcome.signal} before it reported")
    elif outcome.exit_status in (HASH_MISMATCH, UNPACK_FAILED):
        env.flag(step, "binary_swapped", "the uploaded file was changed on the target before it ran")


async def _check_room(conn: Connection, folder: str, size: int, label: str) -> None:
    """Refuse an upload that cannot fit, naming the cause (a full or read-only folder).

    Raises:
        StepFailed: ``folder`` is on a read-only filesystem, or has less than ``size``
            bytes or no inode free. Nothing is raised when the space cannot be asked
            (a server without statvfs): the upload then says what it can.
    """
    try:
        space = await conn.disk_space(folder)
    except TargetError:
        return
    where = f"{folder} on {label}"
    if space.read_only:
        raise StepFailed(f"read-only file system: cannot deploy to {where}")
    if space.free_bytes < size or space.free_inodes == 0:
        free = "no inode" if space.free_inodes == 0 else f"{space.free_bytes // 1024} KiB"
        raise StepFailed(f"No space left on device in {where} ({free} free; the module needs {size / 2**20:.1f} MiB)")
