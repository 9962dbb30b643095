"""Run stage, monitor probes: ``http``, one HTTP/1.1 request from the monitor to the target.

A small client of our own over trio streams, on purpose: the probe must see what a
library would hide or refuse (an expired certificate's details, the exact status of a
broken server, a body cut at ``max_body`` without reading the rest). It sends one request
with ``Connection: close`` and reads one answer (``Content-Length``, chunked, or until the
server closes). Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import trio

from ...regex import RegexError, compile_re2
from . import certs
from .common import Answer, ProbeCall, ProbeError, host_port, os_reason, since

DEFAULT_TIMEOUT_MS = 5000
MAX_HEAD = 64 * 1024  # bytes of status line and headers we accept
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: .*)?")
_WITHOUT_BODY = frozenset({204, 304})


class _NoAnswer(Exception):
    """The server gave no (usable) HTTP answer; the message says what went wrong."""


def port_of(call: ProbeCall) -> int:
    scheme = call.params.get("scheme", "http")
    return int(call.params.get("port") or (443 if scheme == "https" else 80))


class _Reader:
    """Buffered reads from a stream: up to a separator, or a number of bytes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            data = await self._stream.receive_some(65536)
        except trio.BrokenResourceError:  # e.g. a TLS peer that closes without close_notify
            data = b""
        self._eof = not data
        self._buf += data
        return bool(data)

    async def until(self, sep: bytes, limit: int) -> bytes | None:
        """The bytes before ``sep`` (which is consumed); None at EOF or past ``limit``."""
        while (end := self._buf.find(sep)) < 0:
            if len(self._buf) > limit or not await self._fill():
                return None
        out = bytes(self._buf[:end])
        del self._buf[: end + len(sep)]
        return out

    async def take(self, count: int) -> bytes:
        """Up to ``count`` bytes; fewer at EOF."""
        while len(self._buf) < count and await self._fill():
            pass
        out = bytes(self._buf[:count])
        del self._buf[:count]
        return out


def _request(call: ProbeCall, host_header: str) -> bytes:
    method, path = str(call.params.get("method", "GET")), str(call.params.get("path", "/"))
    if re.search(r"[\x00-\x20\x7f]", path):
        raise ProbeError(f"path: {path!r} holds a space or a control character (percent-encode it)")
    headers = {"Host": host_header, "User-Agent": "chaosrun", "Accept": "*/*"}
    given: Mapping[str, Any] = call.params.get("headers") or {}
    for name, value in given.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or re.search(r"[\r\n\0]", str(value)):
            raise ProbeError(f"headers: {name!r} is not a header one can send")
        for default in [d for d in headers if d.lower() == name.lower()]:
            del headers[default]
        headers[name] = str(value)
    if method in ("POST", "PUT", "PATCH") and not any(n.lower() == "content-length" for n in headers):
        headers["Content-Length"] = "0"
    headers["Connection"] = "close"
    lines = [f"{method} {path} HTTP/1.1", *(f"{n}: {v}" for n, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1", "replace")


async def _head(reader: _Reader) -> tuple[int, dict[str, str]]:
    """Status and headers of the final answer (interim 1xx answers are skipped)."""
    while True:
        head = await reader.until(b"\r\n\r\n", MAX_HEAD)
        if head is None:
            raise _NoAnswer("the server closed the connection without an HTTP answer")
        status_line, *lines = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise _NoAnswer(f"not an HTTP answer: {status_line[:80].decode('latin-1')!r}")
        status = int(match.group(1))
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:
                key = name.strip().lower()
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if not 100 <= status < 200 or status == 101:
            return status, headers


async def _body(reader: _Reader, headers: Mapping[str, str], cap: int) -> bytes:
    """Up to ``cap + 1`` bytes of the body: one more than kept tells it was longer."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while len(out) <= cap:
            line = await reader.until(b"\r\n", 1024)
            try:
                size = int(line.split(b";")[0].strip(), 16) if line is not None else 0
            except ValueError:
                raise _NoAnswer("bad chunked encoding in the body") from None
            if size == 0:
                break
            want = min(size, cap + 1 - len(out))
            out += await reader.take(want)
            if want < size or await reader.until(b"\r\n", 2) is None:
                break
        return bytes(out)
    length = headers.get("content-length", "")
    if length.isdigit():
        return await reader.take(min(int(length), cap + 1))
    return await reader.take(cap + 1)


def _server_name(call: ProbeCall) -> str:
    return str(call.params.get("server_name") or call.host)


def _host_header(name: str, port: int, scheme: str) -> str:
    try:
        is_v6 = ipaddress.ip_address(name).version == 6
    except ValueError:
        is_v6 = False
    shown = f"[{name}]" if is_v6 else name
    return shown if port == (443 if scheme == "https" else 80) else f"{shown}:{port}"


async def _exchange(call: ProbeCall, port: int, result: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """Connect (and shake hands), send the request, read the answer; ``result["tls"]``
    is filled in as soon as the handshake is done."""
    scheme, server_name = str(call.params.get("scheme", "http")), _server_name(call)
    cap = int(call.params.get("max_body", 65536))
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(call.host, port)
    except OSError as exc:
        raise _NoAnswer(f"connect {host_port(call.host, port)}: {os_reason(exc)}") from None
    try:
        if scheme == "https":
            tls = trio.SSLStream(stream, certs.inspecting_context(), server_hostname=server_name, https_compatible=True)
            stream = tls
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                raise _NoAnswer(f"TLS handshake failed: {exc.__cause__ or exc}") from None
            der = tls.getpeercert(binary_form=True)
            try:
                described = certs.describe(der, server_name, datetime.now(UTC)) if der else {}
            except ValueError as exc:  # a certificate cryptography cannot read
                described = {"subject": f"unreadable certificate: {exc}"}
            result["tls"] = {"valid": False, "verify_error": "not verified: timed out", "version": tls.version()}
            result["tls"].update(described)
        try:
            await stream.send_all(_request(call, _host_header(server_name, port, scheme)))
        except trio.BrokenResourceError as exc:
            raise _NoAnswer(f"sending the request failed: {exc.__cause__ or exc}") from None
        reader = _Reader(stream)
        status, headers = await _head(reader)
        no_body = call.params.get("method") == "HEAD" or status in _WITHOUT_BODY or status < 200
        return status, headers, b"" if no_body else await _body(reader, headers, cap)
    finally:
        await trio.aclose_forcefully(stream)


async def http(call: ProbeCall) -> Answer:
    """Send the request, read the answer, verify the certificate apart.

    Raises:
        ProbeError: a bad ``body_pattern``, ``ca_file`` or header.
    """
    pattern_text = call.params.get("body_pattern")
    try:  # RE2, as on the target and in lint
        pattern = compile_re2(str(pattern_text)) if pattern_text is not None else None
    except RegexError as exc:
        raise ProbeError(f"body_pattern: {exc}") from None
    ca_file = call.path("ca_file")
    cap, port = int(call.params.get("max_body", 65536)), port_of(call)
    _request(call, "check")  # refuse bad headers before connecting
    if call.params.get("scheme") == "https":
        certs.verifying_context(ca_file)  # refuse a bad ca_file before connecting
    result: dict[str, Any] = {
        "status": 0,
        "status_matches": False,
        "headers": {},
        "body": "",
        "body_truncated": False,
        "body_matches": False,
        "duration_ms": 0.0,
        "error": "",
        "tls": None,
    }
    timeout = call.seconds(DEFAULT_TIMEOUT_MS)
    start = time.monotonic()
    with trio.move_on_after(timeout) as scope:
        try:
            status, headers, body = await _exchange(call, port, result)
        except _NoAnswer as exc:
            result["error"] = str(exc)
        else:
            text = body[:cap].decode("utf-8", "replace")
            result.update(
                status=status,
                status_matches=status == int(call.params.get("expect_status", 200)),
                headers=headers,
                body=text,
                body_truncated=len(body) > cap,
                body_matches=pattern is not None and pattern.search(text) is not None,
            )
        result["duration_ms"] = since(start)
        if result["tls"] is not None:
            verify_error = await certs.verify_chain(call.host, port, _server_name(call), ca_file)
            result["tls"].update(valid=not verify_error, verify_error=verify_error)
    if scope.cancelled_caught:
        result["duration_ms"] = since(start)
        result["error"] = result["error"] or f"no answer within {timeout * 1000:g} ms"
    summary = f"status {result['status']}" if result["status"] else f"no answer: {result['error']}"
    if result["tls"] is not None:
        summary += ", certificate " + ("valid" if result["tls"]["valid"] else "NOT valid")
    return Answer(result, summary)
