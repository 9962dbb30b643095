"""Run stage, the asyncio bridge: asyncssh's asyncio loop in a thread of its own, called from trio.

asyncssh speaks asyncio; the runtime speaks trio. The bridge runs a plain asyncio event
loop in a thread of its own (one per bridge); every call from trio runs there as an
asyncio task, and a trio cancellation is delivered to that task as
``asyncio.CancelledError`` (the trio side then waits for the task to finish, as with
trio-asyncio's ``aio_as_trio``).

Why a thread and not trio-asyncio (which chaosrun used first): trio-asyncio runs each
asyncio callback through a trio memory channel and a cancel scope, and each I/O readiness
through a trio task plus a ``synchronize()`` round; an SSH upload is hundreds of such
callbacks. Measured on 2 cores (docs/performance.md): the same asyncssh code on
trio-asyncio used 1.6x the CPU of plain asyncio for 100 hosts x 1 step (4.5 s vs 2.8 s)
and took 1.2x the time; in a thread, the loop costs what plain asyncio costs, and a call
from trio costs two thread wake-ups.

This module knows nothing of SSH; ``run.ssh`` is its user.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NoReturn, ParamSpec, TypeVar

import outcome
import trio

__all__ = ["call_in_loop", "loop_for_connection", "open_bridge"]

CLOSE_TIMEOUT = 5.0  # seconds the loop's remaining tasks get to finish when it stops

_P = ParamSpec("_P")
_T = TypeVar("_T")


@asynccontextmanager
async def open_bridge() -> AsyncIterator[None]:
    """Run an asyncio loop (in a thread of its own) for the block, so that SSH calls can run in it.

    The runner opens it once around a run. Nested use re-uses the outer loop. ``open_ssh``
    opens a private bridge for its own lifetime when none is active, so scripts and tests may
    skip this, at the cost of one loop (and thread) per connection.
    """
    async with loop_for_connection():
        yield


_current_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "chaosrun_ssh_loop", default=None
)


@asynccontextmanager
async def loop_for_connection() -> AsyncIterator[asyncio.AbstractEventLoop]:
    loop = _current_loop.get()
    if loop is not None:
        yield loop
        return
    loop = asyncio.SelectorEventLoop()  # explicit: whatever loop policy is installed
    started = threading.Event()

    def serve() -> None:
        loop.call_soon(started.set)
        loop.run_forever()

    thread = threading.Thread(target=serve, name="chaosrun-ssh-loop", daemon=True)
    thread.start()
    await trio.to_thread.run_sync(started.wait)
    token = _current_loop.set(loop)
    try:
        yield loop
    finally:
        _current_loop.reset(token)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_stop_loop, loop, thread)


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Cancel what still runs on ``loop``, stop it, join its thread, close it (blocking)."""

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(CLOSE_TIMEOUT + 1)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


async def call_in_loop(
    loop: asyncio.AbstractEventLoop, fn: Callable[_P, Awaitable[_T]], *args: _P.args, **kw: _P.kwargs
) -> _T:
    """Run ``fn(*args)`` as an asyncio task on ``loop`` (the bridge's thread); return or raise
    its result here, in trio.

    Cancelling the trio side cancels the task and keeps waiting until the task has finished
    (so its own cleanup, e.g. stopping a remote command, is done when this returns); if the
    task then ends with ``CancelledError``, the trio cancellation is raised.
    """
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    holder: list[asyncio.Future[_T]] = []
    raise_cancel: Callable[[], NoReturn] | None = None

    def done(future: asyncio.Future[_T]) -> None:  # in the loop's thread
        token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.capture(future.result))

    def start() -> None:  # in the loop's thread
        try:
            future = asyncio.ensure_future(fn(*args, **kw))
        except BaseException as exc:  # noqa: BLE001 - handed to the trio side
            error = exc
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.Error(error))
            return
        holder.append(future)
        future.add_done_callback(done)

    def cancel() -> None:  # in the loop's thread, after start()
        if holder:
            holder[0].cancel()

    def abort(raise_cancel_arg: Callable[[], NoReturn]) -> trio.lowlevel.Abort:
        nonlocal raise_cancel
        raise_cancel = raise_cancel_arg
        loop.call_soon_threadsafe(cancel)
        return trio.lowlevel.Abort.FAILED  # keep waiting for the task to finish

    loop.call_soon_threadsafe(start)
    try:
        result: _T = await trio.lowlevel.wait_task_rescheduled(abort)
    except asyncio.CancelledError:
        if raise_cancel is not None:
            raise_cancel()
        raise
    return result
