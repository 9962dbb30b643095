"""Run stage, monitor probes: what a server's TLS certificate says, for the ``http`` probe.

The certificate is read from a handshake without verification, so that an expired or
self-signed one can still be described; whether the chain verifies is a second handshake's
question (``verify_chain``). Name matching follows RFC 6125 on the subject alternative
names only (as browsers do): a ``*`` stands for one whole left-most label.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
from datetime import datetime
from typing import Any

import trio
from cryptography import x509

from .common import ProbeError, os_reason


def inspecting_context() -> ssl.SSLContext:
    """A client context that accepts any certificate: we only look at it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def verifying_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that verifies the chain (against ``ca_file``, else the system
    store) and the dates, but not the name: ``name_matches`` tells that apart.

    Raises:
        ProbeError: ``ca_file`` holds no usable certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED
    context.check_hostname = False
    if ca_file is None:
        context.load_default_certs()
        return context
    try:
        context.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, ValueError) as exc:
        raise ProbeError(f"ca_file: no certificate in {ca_file}: {exc}") from None
    return context


async def verify_chain(host: str, port: int, server_name: str, ca_file: str | None) -> str:
    """A second handshake, verifying this time; "" when the chain verifies, else why not."""
    context = verifying_context(ca_file)
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        return f"second connection failed: {os_reason(exc)}"
    stream = trio.SSLStream(tcp, context, server_hostname=server_name, https_compatible=True)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            return str(cause.verify_message or cause)
        return f"handshake failed: {cause or exc}"
    finally:
        await trio.aclose_forcefully(stream)
    return ""


def _clean(name: str) -> str:
    return name.strip().rstrip(".").lower()


def name_matches(name: str, dns_names: list[str], ips: list[str]) -> bool:
    """Whether ``name`` (a host name or an IP address) is one the certificate is for."""
    try:
        wanted = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        return any(ipaddress.ip_address(ip) == wanted for ip in ips)
    host = _clean(name)
    for pattern in map(_clean, dns_names):
        if pattern == host:
            return True
        first, _, rest = pattern.partition(".")
        if first == "*" and rest and host.partition(".")[2] == rest and host.partition(".")[0]:
            return True
    return False


def describe(der: bytes, server_name: str, now: datetime) -> dict[str, Any]:
    """The result's ``tls`` fields of a DER certificate (``valid`` is the caller's)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns_names, ips = [], []
    not_after, not_before = cert.not_valid_after_utc, cert.not_valid_before_utc
    return {
        "expires_in_days": math.floor((not_after - now).total_seconds() / 86400),
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": dns_names + ips,
        "name_matches": name_matches(server_name, dns_names, ips),
    }
