"""Run stage, monitor probes: ``port_open`` from the monitor, a connect to the target's address.

The same declaration as the target-side module (``chaos_go/modules/port_open``) and the same
result fields; from the monitor, ``host`` defaults to the target's address, not 127.0.0.1,
and a name is resolved by the monitor.
"""

from __future__ import annotations

import socket
import time

import trio

from .common import Answer, ProbeCall, ProbeError, host_port, os_reason, since

DEFAULT_TIMEOUT_MS = 2000


def port_of(call: ProbeCall) -> int:
    return int(call.params["port"])


async def _try_tcp(family: int, address: tuple[str, int], timeout: float, settle: float) -> tuple[str, str, float]:
    """``(state, reason, milliseconds until the connect completed or failed)``."""
    shown = host_port(address[0], address[1])
    start = time.monotonic()
    with trio.socket.socket(family, socket.SOCK_STREAM) as sock:
        with trio.move_on_after(timeout) as scope:
            try:
                await sock.connect(address)
            except OSError as exc:
                return "closed", f"connect {shown}: {os_reason(exc)}", since(start)
        took = since(start)
        if scope.cancelled_caught:
            return "filtered", f"connect {shown}: no answer within {timeout * 1000:g} ms", took
        if settle > 0 and await _hung_up(sock, settle):
            reason = f"connect {shown}: accepted, then closed without a byte within {settle * 1000:g} ms"
            return "closed", reason + " (a forwarder whose service behind it refused?)", took
        return "open", "", took


async def _hung_up(sock: trio.socket.SocketType, seconds: float) -> bool:
    """Whether the far end closes or resets the connection within ``seconds`` without
    sending anything (``settle_ms``: a forwarder that accepted for a service that is down)."""
    with trio.move_on_after(seconds):
        try:
            return await sock.recv(1, socket.MSG_PEEK) == b""
        except ConnectionResetError:
            return True
        except OSError:
            return False
    return False


async def _try_udp(family: int, address: tuple[str, int], timeout: float, settle: float) -> tuple[str, str, float]:
    del settle  # TCP only
    start = time.monotonic()
    # On a connected UDP socket the kernel reports an ICMP port-unreachable as ECONNREFUSED.
    shown = host_port(address[0], address[1])
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock, trio.move_on_after(timeout):
        try:
            await sock.connect(address)
            await sock.send(b"")
            await sock.recv(1)
        except OSError as exc:
            return "closed", f"read from {shown}: {os_reason(exc)}", since(start)
        return "open", "", since(start)
    return "open|filtered", "", since(start)


async def port_open(call: ProbeCall) -> Answer:
    """Try each address of ``host`` in turn; the first open one wins, else the first's state.

    Raises:
        ProbeError: ``host`` does not resolve.
    """
    port, protocol = port_of(call), str(call.params.get("protocol", "tcp"))
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    try:
        infos = await trio.socket.getaddrinfo(call.host, port, type=kind)
    except OSError as exc:
        raise ProbeError(f"cannot resolve {call.host!r} on the monitor: {os_reason(exc)}") from None
    deadline = trio.current_time() + call.seconds(DEFAULT_TIMEOUT_MS)
    attempt = _try_udp if protocol == "udp" else _try_tcp
    first: tuple[str, str, float] | None = None
    settle = int(call.params.get("settle_ms", 0)) / 1000
    for family, _, _, _, sockaddr in infos:
        address = (str(sockaddr[0]), int(sockaddr[1]))
        state, reason, took = await attempt(family, address, deadline - trio.current_time(), settle)
        if state in ("open", "open|filtered"):
            first = (state, reason, took)
            break
        first = first or (state, reason, took)
        if trio.current_time() >= deadline:
            break
    assert first is not None  # getaddrinfo gives at least one address or raises
    state, reason, took = first
    result = {"open": state in ("open", "open|filtered"), "state": state, "latency_ms": took, "reason": reason}
    return Answer(result, f"{protocol} {state}" + (f": {reason}" if reason else ""))
