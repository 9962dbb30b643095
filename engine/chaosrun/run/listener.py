"""Run stage, the callback listener: one ephemeral port per step attempt, where the
module binary calls back, proves the one-time token and sends its logs and result.

A wrong token, a replay, a bad frame or a slow client is dropped and audited; the listener
keeps waiting for the real binary. When a flood fills the table of unauthenticated
connections, the oldest is dropped, so the real binary is never the one refused.
"""

from __future__ import annotations

import errno
import ipaddress
import random
from typing import Any

import trio

from .context import RunContext
from .model import StepFailed
from .wire import CallbackRejected, OneTimeToken, StepSecret, receive_callback

MAX_PENDING_CONNECTIONS = 64  # unauthenticated callback connections held at once per step


class ListenerState:
    """State of one step's callback listener, shared with the step body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.authenticated = trio.Event()
        self.done = trio.Event()  # the result is in
        self.lost = trio.Event()  # the authenticated connection ended without a result
        self.result: dict[str, Any] | None = None
        self.rejected = 0


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
    task_status: trio.TaskStatus[ListenerState] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept callbacks for one step until the valid result arrives; the caller's nursery
    owns this task and cancels it when the step ends (which closes the port).

    ``task_status.started`` hands over the listener's state once the port is bound.
    """
    monitor = ctx.monitor
    listener = await open_listener(monitor.bind, monitor.ports)
    state = ListenerState(listener.socket.getsockname()[1])
    token = OneTimeToken(secret.token)
    # Connections that have not authenticated yet, oldest first. When a flood fills the
    # table, the OLDEST is dropped, so the real binary (which authenticates within
    # milliseconds of connecting) is never the one refused.
    pending: dict[int, trio.CancelScope] = {}
    counter = iter(range(1 << 62))

    def check_token(presented: str) -> bool:
        accepted = token(presented)
        if accepted:
            state.authenticated.set()
        return accepted

    async def on_log(message: dict[str, Any]) -> None:
        await ctx.audit.record(
            "log",
            env=env,
            step=step,
            level=message.get("level"),
            msg=message.get("msg"),
            fields=message.get("fields"),
            module_ts=message.get("ts"),
        )

    async def handle(stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        try:
            peer = "{}:{}".format(*stream.socket.getpeername()[:2])
        except OSError:
            peer = "?"
        number = next(counter)
        reason: str | None = None
        callback = None
        authenticated = False

        def check(presented: str) -> bool:
            nonlocal authenticated
            authenticated = check_token(presented)
            if authenticated:
                pending.pop(number, None)  # authenticated: never evicted
            return authenticated

        try:
            with trio.CancelScope() as scope:
                pending[number] = scope
                if len(pending) > MAX_PENDING_CONNECTIONS:
                    pending.pop(next(iter(pending))).cancel()
                callback = await receive_callback(
                    stream,
                    key=secret.key,
                    check_token=check,
                    run_id=ctx.run_id,
                    step_id=step,
                    hello_timeout=ctx.options.hello_timeout,
                    on_log=on_log,
                )
            if scope.cancelled_caught:
                reason = f"dropped: more than {MAX_PENDING_CONNECTIONS} unauthenticated connections at once"
        except CallbackRejected as exc:
            reason = exc.reason
        finally:
            pending.pop(number, None)
            with trio.move_on_after(1, shield=True):
                await stream.aclose()
        if reason is not None or callback is None:
            state.rejected += 1
            await ctx.audit.record("callback_rejected", env=env, step=step, peer=peer, reason=reason)
            if authenticated:  # the token is spent: no result can come any more
                state.lost.set()
            return
        await ctx.audit.record("callback_accepted", env=env, step=step, peer=peer, token_id=secret.token_id)
        state.result = callback.result
        state.done.set()
        nursery.cancel_scope.cancel()  # the port closes as soon as the result is in

    async with listener, trio.open_nursery() as nursery:
        task_status.started(state)
        while True:
            stream = await listener.accept()
            nursery.start_soon(handle, stream, nursery)


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
