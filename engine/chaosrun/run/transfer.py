"""Run stage, transfer: how a module's binary travels to a target, raw or gzip-compressed,
and, for ``transfer: auto``, which of the two is faster end to end on that target's link.

The cost model is two lines. Over a link that moves ``bandwidth`` bytes per second::

    raw   size / bandwidth
    gzip  packed_size / bandwidth + unpack(size)

where ``unpack`` is what the gzip exec wrapper costs on the target over the raw one (its
``gzip -dc`` into the anonymous exec file and a ``chmod``): 25 ms for a 3.1 MB module on
the machine of docs/performance.md (``UNPACK_FIXED`` + ``size / UNPACK_RATE``) until the
target shows its own: once it ran both, the median time from exec to the binary's
authenticated callback of its gzip steps minus that of its raw steps. Modules pack to
42-45% at gzip level 6, so with the fixed cost gzip wins below ~65 MB/s (~520 Mbit/s) and
raw above.

``bandwidth`` is measured, per target, from the uploads themselves: the median of the
bytes per second of its last few uploads (the SFTP write from open to close). An upload's
time includes its round trips (open, close), which the model charges to the bytes: on a
link with a long round trip that favours gzip a little, where the two are close anyway.

The first upload to a target has nothing to go on. It goes gzip, and measures the link
with the packed bytes: wrong on a fast link, that costs one unpacking (~25 ms, less the
upload time it saves); raw would cost ``(size - packed_size) / bandwidth`` on a slow link
(110 ms at 100 Mbit/s, and on exam day every target's first upload shares the monitor's
link at once: 500 targets' first raw uploads are 0.85 GB more than gzip's). A target on a
loopback address always gets raw: no byte crosses a wire there, and its CPU, which
unpacking costs, is the monitor's own. Before its first gzip upload, ``auto`` asks the
target once whether it has ``gzip`` (``command -v gzip``; every Debian has it): one
without it gets raw uploads.
"""

from __future__ import annotations

import ipaddress
import statistics
from collections import deque
from dataclasses import dataclass, field

import trio

from ..scenario import TargetSpec, Transfer
from .connection import Connection, TargetError

__all__ = ["GZIP_LEVEL", "Choice", "Link", "Links", "choose", "decide", "is_loopback"]

GZIP_LEVEL = 6  # 1: 48.6% of the bytes in 44 ms; 6: 45.0% in 139 ms; 9: 44.7% in 427 ms (3.1 MB, once per module)
PACKED_RATIO = 0.45  # what a module packs to (0.42-0.45 over all modules), until its packed size is known
UNPACK_RATE = 130e6  # bytes per second gzip -dc writes on the target (3.1 MB in 23-24 ms here)
UNPACK_FIXED = 0.002  # seconds: the wrapper's extra processes (chmod, gzip) and opens
SAMPLES = 5  # uploads per target the bandwidth is the median of
PROBE_TIMEOUT = 10.0  # seconds for ``command -v gzip``


@dataclass(frozen=True)
class Choice:
    """How one upload goes (``RAW`` or ``GZIP``), and why, for the audit log."""

    transfer: Transfer
    why: str


def choose(
    size: int,
    packed_size: int | None,
    bandwidth: float | None,
    unpack: float | None = None,
    *,
    loopback: bool = False,
) -> Choice:
    """The faster of raw and gzip for one upload of a ``size``-byte module. Pure.

    Args:
        size: the binary's size in bytes.
        packed_size: its gzip-compressed size, None when not known yet (then estimated
            as ``PACKED_RATIO`` of ``size``).
        bandwidth: the link's measured bytes per second; None before the first upload.
        unpack: seconds the gzip wrapper costs the target over the raw one, as measured
            there; None: ``UNPACK_FIXED`` + ``size / UNPACK_RATE``.
        loopback: the target is on a loopback address.

    Returns:
        Raw on loopback and when raw is as fast; gzip when it is faster end to end, and
        when nothing is measured yet (the first upload, which measures the link: gzip
        costs at most one unpacking when it is the wrong choice).
    """
    if loopback:
        return Choice(Transfer.RAW, "auto: a loopback target: no wire to save bytes on")
    if bandwidth is None or bandwidth <= 0:
        return Choice(Transfer.GZIP, "auto: first upload to this target, it measures the link")
    packed = packed_size if packed_size is not None else round(size * PACKED_RATIO)
    cost, how = (UNPACK_FIXED + size / UNPACK_RATE, "") if unpack is None else (unpack, " measured")
    raw = size / bandwidth
    gz = packed / bandwidth + cost
    pick = Transfer.GZIP if gz < raw else Transfer.RAW
    return Choice(
        pick,
        f"auto: link {bandwidth / 1e6:.1f} MB/s, unpacking{how} {cost * 1000:.0f} ms: "
        f"raw {raw * 1000:.0f} ms, gzip {gz * 1000:.0f} ms",
    )


@dataclass
class Link:
    """What the monitor measured of one target's link, over a run."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))  # bytes per second
    # seconds from exec to the binary's authenticated callback, by transfer
    started: dict[Transfer, deque[float]] = field(default_factory=dict)
    gzip: bool | None = None  # the target has gzip; None: not asked yet
    lock: trio.Lock = field(default_factory=trio.Lock)  # one ``command -v gzip`` at a time

    @property
    def bandwidth(self) -> float | None:
        """Median bytes per second of the last uploads; None before the first one."""
        return statistics.median(self.samples) if self.samples else None

    @property
    def unpack(self) -> float | None:
        """What unpacking costs this target: the median start of its gzip steps minus that
        of its raw steps (never below 0); None until it ran both."""
        raw, gz = self.started.get(Transfer.RAW), self.started.get(Transfer.GZIP)
        if not raw or not gz:
            return None
        return max(0.0, statistics.median(gz) - statistics.median(raw))

    def measured(self, nbytes: int, seconds: float) -> None:
        """One upload of ``nbytes`` took ``seconds`` (a zero time, below the clock's
        resolution, says nothing and is left out)."""
        if nbytes > 0 and seconds > 0:
            self.samples.append(nbytes / seconds)

    def ran(self, transfer: Transfer, seconds: float) -> None:
        """A binary sent ``transfer`` called back, authenticated, ``seconds`` after its exec."""
        self.started.setdefault(transfer, deque(maxlen=SAMPLES)).append(seconds)

    async def has_gzip(self, conn: Connection) -> bool:
        """Whether the target has ``gzip``, asked once per target and run."""
        async with self.lock:
            if self.gzip is None:
                try:
                    result = await conn.run("command -v gzip >/dev/null 2>&1", timeout=PROBE_TIMEOUT)
                except TargetError:
                    return False  # asked again next time: the connection may be back
                self.gzip = result.ok
            return self.gzip


class Links:
    """The run's links, one per target host (host, port, user)."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, int, str], Link] = {}

    def of(self, target: TargetSpec) -> Link:
        return self._links.setdefault((target.host, target.port, target.user), Link())


def is_loopback(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ``::1`` (names are not resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def decide(
    mode: Transfer, link: Link, conn: Connection, target: TargetSpec, size: int, packed_size: int | None
) -> Choice:
    """How this upload goes under ``mode``: ``raw`` and ``gzip`` as asked, ``auto`` by
    :func:`choose`, falling back to raw on a target without gzip."""
    if mode is not Transfer.AUTO:
        return Choice(mode, "")
    choice = choose(size, packed_size, link.bandwidth, link.unpack, loopback=is_loopback(target.host))
    if choice.transfer is Transfer.GZIP and not await link.has_gzip(conn):
        return Choice(Transfer.RAW, "auto: the target has no gzip")
    return choice
