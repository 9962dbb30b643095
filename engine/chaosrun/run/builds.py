"""Run stage, builds: each module compiled once per run and architecture, read into memory once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import trio

from ..build import Binary, Builder, BuildError
from .audit import AuditLog
from .model import StepFailed


@dataclass(frozen=True)
class Deployable:
    """A built module as a step deploys it: its bytes, read once per run, and their digests."""

    binary: Binary
    data: bytes
    blake2b: str  # hex BLAKE2b-512 of ``data``: what coreutils' ``b2sum`` prints

    @classmethod
    def load(cls, binary: Binary) -> Deployable:
        data = binary.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != binary.sha256:
            raise BuildError(f"{binary.path} changed in the build cache (sha256 mismatch)")
        return cls(binary, data, hashlib.blake2b(data).hexdigest())


class Builds:
    """Build each (module, arch) once per run, however many steps and hosts need it."""

    def __init__(self, builder: Builder, audit: AuditLog) -> None:
        self._builder = builder
        self._audit = audit
        self._done: dict[tuple[str, str], trio.Event] = {}
        self._results: dict[tuple[str, str], Deployable | BuildError] = {}

    async def get(self, module: str, goarch: str) -> Deployable:
        """The module's deployable bytes for ``goarch``; the first caller builds, the rest wait.

        Raises:
            StepFailed: the build failed (recorded once in the audit log).
        """
        key = (module, goarch)
        if key not in self._done:
            self._done[key] = trio.Event()
            try:
                binary = await trio.to_thread.run_sync(self._builder.build, module, "linux", goarch)
                self._results[key] = await trio.to_thread.run_sync(Deployable.load, binary)
                await self._audit.record(
                    "build",
                    module=module,
                    goarch=goarch,
                    sha256=binary.sha256,
                    size=binary.size,
                    cached=binary.cached,
                    seconds=round(binary.seconds, 3),
                )
            except BuildError as exc:
                self._results[key] = exc
                await self._audit.record("build_failed", module=module, goarch=goarch, error=str(exc))
            finally:
                self._done[key].set()
        await self._done[key].wait()
        found = self._results[key]
        if isinstance(found, BuildError):
            raise StepFailed(f"build of {module} failed: {found}")
        return found
