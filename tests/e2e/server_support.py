"""A real ``chaosrun serve`` for a test: a subprocess on a free loopback port with its own
data folder and tokens, and an HTTP client for it (httpx)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from e2e_support import free_port


def token(data: Path, name: str, role: str, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "chaosrun", "token", "create", name, "--role", role, "--data", str(data), *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@dataclass
class Server:
    """One ``chaosrun serve``; :meth:`start` again after :meth:`stop` or :meth:`kill`."""

    data: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    operator: str = ""
    proctor: str = ""
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> None:
        self.log = self.data.parent / f"serve-{time.monotonic_ns()}.log"
        out = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaosrun",
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data",
                str(self.data),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                httpx.get(self.url + "/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the server did not come up:\n" + self.output())

    def output(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def client(self, token: str | None = None) -> httpx.Client:
        token = token if token is not None else self.operator
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def wait(self, exam: str, op: str, timeout: float = 120) -> dict[str, Any]:
        """The operation once it has ended."""
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while time.monotonic() < deadline:
                got = http.get(f"/v1/exams/{exam}/operations/{op}").json()
                if got["state"] != "running":
                    return dict(got)
                time.sleep(0.1)
        raise AssertionError(f"{op} still running after {timeout} s")

    def events(self, exam: str, after: int = 0, *, until: str = "operation_ended", timeout: float = 120) -> list[Any]:
        """The exam's event stream, read over SSE until an event of type ``until``."""
        out: list[Any] = []
        headers = {"Last-Event-ID": str(after), "Authorization": f"Bearer {self.proctor}"}
        with httpx.stream("GET", f"{self.url}/v1/exams/{exam}/events", headers=headers, timeout=timeout) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            message: dict[str, str] = {}
            for line in stream.iter_lines():
                if line:
                    key, _, value = line.partition(":")
                    message[key] = value.removeprefix(" ")
                    continue
                if "data" in message:
                    event = json.loads(message["data"])
                    assert message["id"] == str(event["seq"]) and message["event"] == event["type"]
                    out.append(event)
                    if event["type"] == until:
                        return out
                message = {}
        raise AssertionError(f"the stream ended before {until}: {out[-3:]}")


def serving(tmp_path: Path, *extra: str, db: str | None = None) -> Iterator[Server]:
    """A server for the test (``db``: with ``--db``, its tokens in that database)."""
    server = Server(tmp_path / "data", dict(os.environ))
    in_db = ("--db", db) if db else ()
    server.operator = token(server.data, "olga", "operator", *in_db)
    server.proctor = token(server.data, "pete", "proctor", *in_db)
    server.start(*extra, *in_db)
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
