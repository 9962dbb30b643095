"""Run stage, monitor probes: ``dns``, one question to the target's DNS server.

dnspython builds the question and reads the answer (a well-kept DNS library serves users
better than packet code of our own); it runs on trio through its trio backend.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.reversename
import trio

from .common import Answer, ProbeCall, ProbeError, host_port, os_reason, since

DEFAULT_TIMEOUT_MS = 2000
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


def port_of(call: ProbeCall) -> int:
    return int(call.params.get("port", 53))


def _question(call: ProbeCall) -> dns.message.Message:
    name, rtype = str(call.params["name"]), str(call.params.get("type", "A"))
    try:
        reverse = rtype == "PTR" and _is_ip(name)
        qname = dns.reversename.from_address(name) if reverse else dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ProbeError(f"name: {name!r} is not a DNS name: {exc}") from None
    query = dns.message.make_query(qname, rtype)
    if not call.params.get("recursion", True):
        query.flags &= ~dns.flags.RD
    return query


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _value(rdata: Any) -> str:
    """The data of one record as an exam checks it: names without the quoting of TXT."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    return str(rdata.to_text())


async def _server_address(host: str) -> str:
    """The IP address to ask; a name is resolved by the monitor."""
    if _is_ip(host):
        return host
    try:
        infos = await trio.socket.getaddrinfo(host, 53, type=trio.socket.SOCK_DGRAM)
    except OSError as exc:
        raise ProbeError(f"cannot resolve {host!r} on the monitor: {os_reason(exc)}") from None
    return str(infos[0][4][0])


async def _ask(query: dns.message.Message, where: str, port: int, tcp: bool, timeout: float) -> dns.message.Message:
    if tcp:
        return await dns.asyncquery.tcp(query, where, timeout=timeout, port=port)
    answer, _ = await dns.asyncquery.udp_with_fallback(query, where, timeout=timeout, port=port)
    return answer


async def dns_probe(call: ProbeCall) -> Answer:
    """Ask, and report the answer.

    Raises:
        ProbeError: a bad name, or a server name the monitor cannot resolve.
    """
    query = _question(call)
    asked = query.question[0].rdtype
    where, port = await _server_address(call.host), port_of(call)
    timeout = call.seconds(DEFAULT_TIMEOUT_MS)
    result: dict[str, Any] = {
        "rcode": "",
        "answers": [],
        "values": [],
        "addresses": [],
        "authoritative": False,
        "duration_ms": 0.0,
        "error": "",
    }
    start = time.monotonic()
    answer: dns.message.Message | None = None
    with trio.move_on_after(timeout + 0.5):  # dnspython keeps its own timeout; this is the backstop
        try:
            answer = await _ask(query, where, port, call.params.get("protocol") == "tcp", timeout)
        except dns.exception.Timeout:
            pass
        except (dns.exception.DNSException, OSError, EOFError) as exc:
            why = os_reason(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
            result["error"] = f"{host_port(where, port)}: {why}"
    result["duration_ms"] = since(start)
    if answer is None:
        result["error"] = result["error"] or f"no answer from {host_port(where, port)} within {timeout * 1000:g} ms"
        return Answer(result, f"no answer: {result['error']}")
    for rrset in answer.answer:
        for rdata in rrset:
            result["answers"].append(
                {
                    "name": rrset.name.to_text(),
                    "type": dns.rdatatype.to_text(rrset.rdtype),
                    "ttl": rrset.ttl,
                    "data": rdata.to_text(),
                }
            )
            if rrset.rdtype == asked:
                result["values"].append(_value(rdata))
            if rrset.rdtype in _ADDRESS_TYPES:
                result["addresses"].append(str(rdata.address))
    result["rcode"] = dns.rcode.to_text(answer.rcode())
    result["authoritative"] = bool(answer.flags & dns.flags.AA)
    return Answer(result, f"{result['rcode']}, {len(result['answers'])} answers")
