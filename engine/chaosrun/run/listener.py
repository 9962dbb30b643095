"""Run stage, the callback listener: one ephemeral port per step attempt, where the
module binary calls back, proves the one-time token and sends its logs and result.

A wrong token, a replay, a bad frame or a slow client is dropped and audited; the listener
keeps waiting for the real binary. When a flood fills the table of unauthenticated
connections, the oldest is dropped, so the real binary is never the one refused.

Some refusals end the step at once (``ListenerState.failure``): the connection that spent
the token was flooding (``callback flooded: ...``), reported other parameters or another
binary than the monitor deployed, or a second connection proved the same token (two
parties hold it: the step's config was taken on the target). The listener stays open until
the attempt ends, so such a second proof is seen even after the result is in.
"""

from __future__ import annotations

import errno
import ipaddress
import random
from typing import Any

import trio

from .audit import clean, encode
from .context import RunContext
from .model import StepFailed
from .wire import (
    CallbackFlooded,
    CallbackRejected,
    CallbackTampered,
    OneTimeToken,
    StepSecret,
    TokenReused,
    config_sha256,
    receive_callback,
)

MAX_PENDING_CONNECTIONS = 64  # unauthenticated callback connections held at once per step
#: Bytes of audit text (encoded ``log`` record fields) the listener writes per step from
#: the binary's log messages; the rest is counted in one ``logs_dropped`` record.
LOG_AUDIT_BUDGET = 256 * 1024
TOKEN_STOLEN = "token already used: a second connection proved this step's token (its config was taken on the target)"


class ListenerState:
    """State of one step's callback listener, shared with the step body."""

    def __init__(self, port: int, exe_sha256: str) -> None:
        self.port = port
        self.exe_sha256 = exe_sha256
        self.config_sha256 = ""  # set by expect_config before the binary starts
        self.authenticated = trio.Event()
        self.done = trio.Event()  # the result is in
        self.lost = trio.Event()  # the authenticated connection ended without a result
        self.failed = trio.Event()  # set with ``failure``: the step must fail at once
        self.failure: str | None = None
        self.failure_signal = ""  # the integrity signal the failure is (run.integrity.SIGNALS)
        self.result: dict[str, Any] | None = None
        self.rejected = 0  # connections refused before they proved the token
        self.log_audit_bytes = 0
        self.logs_dropped = 0
        self.logs_dropped_bytes = 0

    def expect_config(self, config: bytes) -> None:
        """Remember the config line the binary is given: its hello and result must report
        its digest (``wire.config_sha256``). Call it before the binary starts."""
        self.config_sha256 = config_sha256(config)

    def fail(self, reason: str) -> None:
        """End the step as failed with ``reason`` (the first reason wins)."""
        if self.failure is None:
            self.failure = reason
        self.lost.set()
        self.failed.set()


def _signal_of(error: CallbackRejected) -> str:
    if isinstance(error, TokenReused):
        return "token_reused"
    if isinstance(error, CallbackTampered):
        return "binary_swapped" if error.field == "exe_sha256" else "params_altered"
    return "callback_flooded"


async def open_listener(bind: str, ports: tuple[int, int]) -> trio.SocketListener:
    """Bind a random free port of the range (a few tries, then any free port of it)."""
    lo, hi = ports
    tried: set[int] = set()
    for _ in range(64):
        port = random.randint(lo, hi)
        if port in tried:
            continue
        tried.add(port)
        try:
            listeners = await trio.open_tcp_listeners(port, host=bind)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise StepFailed(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
        return listeners[0]
    raise StepFailed(f"no free port in {lo}-{hi} on {bind}")


async def serve_listener(
    ctx: RunContext,
    env: str,
    step: str,
    secret: StepSecret,
    exe_sha256: str,
    task_status: trio.TaskStatus[ListenerState] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept callbacks for one step attempt; the caller's nursery owns this task and
    cancels it when the attempt ends (which closes the port).

    Args:
        ctx: the run.
        env: the environment's name, for the audit log.
        step: the step's id.
        secret: the attempt's token and key pair.
        exe_sha256: hex SHA-256 of the binary deployed; the binary's hello must report it.
            The config's digest comes later, through ``ListenerState.expect_config``, since
            the config names the listener's port.

    ``task_status.started`` hands over the listener's state once the port is bound.
    """
    monitor = ctx.monitor
    listener = await open_listener(monitor.bind, monitor.ports)
    state = ListenerState(listener.socket.getsockname()[1], exe_sha256)
    token = OneTimeToken(secret.token)
    # Connections that have not authenticated yet, oldest first. When a flood fills the
    # table, the OLDEST is dropped, so the real binary (which authenticates within
    # milliseconds of connecting) is never the one refused.
    pending: dict[int, trio.CancelScope] = {}
    counter = iter(range(1 << 62))

    async def on_log(message: dict[str, Any]) -> None:
        fields = {
            "level": message.get("level"),
            "msg": message.get("msg"),
            "fields": message.get("fields"),
            "module_ts": message.get("ts"),
        }
        size = len(encode(clean(fields)))
        if state.log_audit_bytes + size > LOG_AUDIT_BUDGET:
            state.logs_dropped += 1
            state.logs_dropped_bytes += size
            return
        state.log_audit_bytes += size
        await ctx.audit.record("log", env=env, step=step, **fields)

    async def on_change(change: dict[str, Any]) -> None:
        # Durable as it comes: a run that dies before the result still knows the change.
        await ctx.audit.record("change", env=env, step=step, change=change)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            peer = "{}:{}".format(*stream.socket.getpeername()[:2])
        except OSError:
            peer = "?"
        number = next(counter)
        error: CallbackRejected | None = None
        failure: str | None = None
        callback = None
        authenticated = False

        def check(transcript: bytes, proof: str) -> bool:
            nonlocal authenticated
            authenticated = token(transcript, proof)
            if authenticated:
                pending.pop(number, None)  # authenticated: never evicted
                state.authenticated.set()
            return authenticated

        try:
            with trio.CancelScope() as scope:
                pending[number] = scope
                if len(pending) > MAX_PENDING_CONNECTIONS:
                    pending.pop(next(iter(pending))).cancel()
                callback = await receive_callback(
                    stream,
                    private_key=secret.private_key,
                    check_proof=check,
                    run_id=ctx.run_id,
                    step_id=step,
                    config_sha256=state.config_sha256,
                    exe_sha256=state.exe_sha256,
                    hello_timeout=ctx.options.hello_timeout,
                    on_log=on_log,
                    on_change=on_change,
                )
            if scope.cancelled_caught:
                reason = f"dropped: more than {MAX_PENDING_CONNECTIONS} unauthenticated connections at once"
                error = CallbackRejected(reason)
        except CallbackRejected as exc:
            error = exc
            if isinstance(exc, TokenReused):
                failure = TOKEN_STOLEN
            elif authenticated and isinstance(exc, CallbackFlooded | CallbackTampered):
                failure = exc.reason
            if failure is not None and state.failure is None:
                # Before the stream closes (and the binary, seeing that, exits): the step
                # body must find the reason once it sees the binary gone.
                state.failure = failure
                state.failure_signal = _signal_of(exc)
        finally:
            pending.pop(number, None)
            with trio.move_on_after(1, shield=True):
                await stream.aclose()
        if authenticated and state.logs_dropped:
            await ctx.audit.record(
                "logs_dropped",
                env=env,
                step=step,
                count=state.logs_dropped,
                bytes=state.logs_dropped_bytes,
                budget=LOG_AUDIT_BUDGET,
            )
        if error is not None or callback is None:
            await refused(error or CallbackRejected("no result"), peer, authenticated)
            if failure is not None:
                state.fail(failure)  # the step ends now, its audit records written
            elif authenticated:  # the token is spent: no result can come any more
                state.lost.set()
            return
        await ctx.audit.record("callback_accepted", env=env, step=step, peer=peer, token_id=secret.token_id)
        state.result = callback.result
        state.done.set()
        # The port stays open until the attempt ends (its binary exits, moments later), so
        # a second binary proving the same token is still seen and fails the step.

    async def refused(error: CallbackRejected, peer: str, authenticated: bool) -> None:
        if not authenticated:
            state.rejected += 1
        if isinstance(error, CallbackFlooded):
            await ctx.audit.record(
                "callback_flooded",
                env=env,
                step=step,
                peer=peer,
                limit=error.limit,
                allowed=error.allowed,
                bytes=error.seen,
                refused=error.refused,
                reason=error.reason,
                authenticated=authenticated,
            )
        elif isinstance(error, CallbackTampered):
            await ctx.audit.record(
                "callback_rejected",
                env=env,
                step=step,
                peer=peer,
                reason=error.reason,
                digest=error.field,
                expected=error.expected,
                reported=error.reported,
            )
        else:
            await ctx.audit.record("callback_rejected", env=env, step=step, peer=peer, reason=error.reason)

    async with listener, trio.open_nursery() as nursery:
        task_status.started(state)
        while True:
            stream = await listener.accept()
            nursery.start_soon(handle, stream)


async def resolve_dial_address(address: str) -> str:
    """The IP literal the binary dials (the kit resolves no names), bracketed for IPv6.

    Raises:
        StepFailed: the name does not resolve.
    """
    try:
        ipaddress.ip_address(address.strip("[]"))
        ip = address.strip("[]")
    except ValueError:
        try:
            infos = await trio.socket.getaddrinfo(address, None, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise StepFailed(f"monitor.advertise {address!r} does not resolve: {exc}") from None
        ip = str(infos[0][4][0])
    return f"[{ip}]" if ":" in ip else ip
