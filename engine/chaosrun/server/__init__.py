"""``chaosrun serve``: the exam room over HTTP, with the same engine as the command line.

Starlette (routing, static files, request and response types) served by Hypercorn's trio
worker: the engine is trio, so the server is too, and neither the HTTP protocol nor the
event stream (sse-starlette) is code of ours. :mod:`.service` runs the operations,
:mod:`.store` keeps everything in SQLite under ``--data`` (or in PostgreSQL with ``--db``:
:mod:`.pg`, shared with ``chaosrun worker`` processes, :mod:`.worker`), :mod:`.app` is the
HTTP API, :mod:`.openapi` its description, ``static/`` the proctor page.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import trio

from ..errors import UsageError
from ..run.transfer import is_loopback
from .db import open_store

__all__ = ["parse_listen", "serve"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8420`` for IPv6) as a host and a port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen wants HOST:PORT, such as 127.0.0.1:8420, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(
    listen: str,
    data: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    files: tuple[Path, ...] = (),
    monitor_key: Path | None = None,
    db: str | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; running operations are stopped and waited for.

    With ``db`` (a PostgreSQL URL) the exams live there, runs and verifies go to the
    ``chaosrun worker`` processes attached to it, and this server is a worker too while no
    other one is attached (what it holds when it stops is given back)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    from .app import make_app
    from .service import Service

    host, port = parse_listen(listen)
    if (cert is None) != (key is None):
        raise UsageError("--cert and --key go together")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    scheme = "https" if cert else "http"
    if not is_loopback(host) and cert is None:
        print(
            f"chaosrun: warning: serving {host}:{port} beyond this machine without TLS: tokens and grades "
            "cross the network in clear text (give --cert and --key)",
            file=sys.stderr,
        )
    store = open_store(data, db)
    service = Service(store, files=files, key_path=monitor_key)
    own_worker = None
    if service.dispatching:
        from .pg import PostgresStore
        from .worker import Worker

        assert isinstance(store, PostgresStore)
        own_worker = Worker(
            store,
            name=f"serve-{socket.gethostname()}-{os.getpid()}",
            audit=lambda exam_id: data / "exams" / exam_id / "audit",
            key_path=monitor_key,
            alone_only=True,
        )
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 5
    if cert and key:
        config.certfile, config.keyfile = str(cert), str(key)

    async def main() -> None:
        stopping = trio.Event()

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    print(
                        "chaosrun: stopping: the running operations end their steps and seal their logs",
                        file=sys.stderr,
                    )
                    service.stop_all()
                    stopping.set()
                    return

        async with trio.open_nursery() as nursery:
            await nursery.start(service.serve)
            nursery.start_soon(on_signals)
            worker_thread = None
            if own_worker is not None:
                worker_thread = threading.Thread(target=own_worker.run, name="the server's own worker", daemon=True)
                worker_thread.start()
            app: Any = make_app(service)  # an ASGI app; hypercorn's type names its own protocol types
            bound = await nursery.start(
                lambda task_status: hypercorn_serve(
                    app, config, shutdown_trigger=stopping.wait, task_status=task_status
                )
            )
            print(
                f"chaosrun: serving {scheme}://{bound[0].split('://', 1)[-1]} (data in {data}"
                + (f", database {store.where})" if db else ")"),
                file=sys.stderr,
                flush=True,
            )
            await stopping.wait()
            if own_worker is not None:
                own_worker.stop()
            while service.running or (worker_thread is not None and worker_thread.is_alive()):
                await trio.sleep(0.1)  # their threads end their steps and seal their audit logs
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        store.close()
    return 0
