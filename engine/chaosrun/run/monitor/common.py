"""Run stage, monitor probes: what every probe run from the monitor shares."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import ChaosrunError
from ...inventory import absolute
from ...scenario import TargetSpec


class ProbeError(ChaosrunError):
    """A monitor probe could not run at all (a missing file, a bad pattern): the step fails
    with this reason. What the probe found out (refused, timed out) is a result instead."""


@dataclass(frozen=True)
class ProbeCall:
    """One probe's rendered ``with:`` values and the target it is about."""

    params: Mapping[str, Any]
    target: TargetSpec
    base_dir: str  # the scenario's folder: relative file parameters start there

    @property
    def host(self) -> str:
        """Where to connect: ``host`` when given, else the target's address."""
        return str(self.params.get("host") or self.target.host)

    def seconds(self, default_ms: int) -> float:
        """The probe's own timeout (``timeout_ms``) in seconds."""
        return int(self.params.get("timeout_ms", default_ms)) / 1000

    def path(self, key: str) -> str | None:
        """A file parameter as an absolute path on the monitor; None when not given.

        Raises:
            ProbeError: it is given but names no file.
        """
        value = self.params.get(key)
        if not value:
            return None
        path = absolute(str(value), self.base_dir)
        assert path is not None
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ProbeError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
        return path


@dataclass(frozen=True)
class Answer:
    """What a probe found: its result fields and a few words for the audit log."""

    result: dict[str, Any]
    summary: str


def since(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.monotonic()``), as the result fields give them."""
    return round((time.monotonic() - start) * 1000, 3)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def os_reason(exc: OSError) -> str:
    """``Connection refused`` and the like: the errno's text, also inside the exception
    group with which ``trio.open_tcp_stream`` reports its failed attempts."""
    if exc.errno and exc.errno > 0:  # getaddrinfo's (negative) codes have their own text
        return os.strerror(exc.errno)
    if exc.strerror:
        return exc.strerror
    group = exc.__cause__
    if isinstance(group, BaseExceptionGroup):
        first = group.exceptions[0]
        if isinstance(first, OSError):
            return os_reason(first)
    return str(exc)
