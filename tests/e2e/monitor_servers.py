"""Real servers on 127.0.0.1 for the ``from: monitor`` probes: HTTP and HTTPS (stdlib
``http.server`` in a thread), a DNS server (dnsmasq, stopped by PID), and certificates made
with ``cryptography`` (self-signed, expired). Each listens on a port of its own, on
127.0.0.1 only."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.exception
import dns.message
import dns.query
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


class _Handler(BaseHTTPRequestHandler):
    """``/`` says hello, ``/big`` is 200 KiB, ``/chunked`` comes in chunks, ``/slow`` never
    answers, the rest is 404.
    Every answer echoes the request's ``X-Token`` header as ``X-Echo``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(3)
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in (b"hello ", b"chunked", b"\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        status, body = {"/": (200, b"hello exam\n"), "/big": (200, b"x" * 200 * 1024)}.get(self.path, (404, b"no\n"))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo", self.headers.get("X-Token", "-"))
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.end_headers()
        with contextlib.suppress(OSError):  # the probe stops reading at max_body
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "11")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        if self.context is None:
            return sock, address
        # the handshake happens in the handler's thread, on first read
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gives up on our certificate is what the tests do


@contextlib.contextmanager
def http_server(context: ssl.SSLContext | None = None) -> Iterator[int]:
    """An HTTP (or, with ``context``, HTTPS) server on 127.0.0.1; yields its port."""
    server = _TLSServer((HOST, 0), _Handler)
    server.context = context
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass(frozen=True)
class Certificate:
    cert: Path  # PEM
    key: Path  # PEM

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(folder: Path, name: str, *, days: tuple[int, int]) -> Certificate:
    """A self-signed certificate for ``name`` and 127.0.0.1, valid from ``days[0]`` to
    ``days[1]`` days from now (negative: in the past)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    out = Certificate(folder / f"{name}-{days[1]}.crt", folder / f"{name}-{days[1]}.key")
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return out


def free_udp_and_tcp_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP (DNS listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")


@contextlib.contextmanager
def dnsmasq(*records: str) -> Iterator[int]:
    """dnsmasq on 127.0.0.1 only, answering from ``records`` (dnsmasq options) and nothing
    else (no upstream, no /etc/hosts, no config file); yields its port, stops it by PID."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    assert os.path.exists(binary), "dnsmasq is not installed (scripts/install installs it)"
    port = free_udp_and_tcp_port()
    argv = [binary, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--pid-file="]
    argv += [f"--port={port}", f"--listen-address={HOST}", "--bind-interfaces", *records]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:  # up once it answers
            try:
                dns.query.udp(dns.message.make_query("ready.invalid", "A"), HOST, port=port, timeout=0.2)
                break
            except dns.exception.Timeout:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "dnsmasq exited"
                assert time.monotonic() < deadline, "dnsmasq did not answer within 10 s"
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
