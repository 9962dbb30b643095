"""Run stage, builds: each module compiled once per run and architecture, read into memory
once, and gzip-compressed once when a step sends it packed (``transfer: gzip``)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import secrets
import zlib
from dataclasses import dataclass
from pathlib import Path

import trio

from ..build import Binary, Builder, BuildError
from .audit import AuditLog
from .model import StepFailed
from .transfer import GZIP_LEVEL


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


@dataclass(frozen=True)
class Packed:
    """A deployable's bytes gzip-compressed, as ``transfer: gzip`` uploads them."""

    data: bytes
    sha256: str  # of ``data``: what a leftover at the upload's path is recognised by

    @property
    def size(self) -> int:
        return len(self.data)

    @classmethod
    def load(cls, deployable: Deployable) -> Packed:
        """Compress ``deployable`` (level ``GZIP_LEVEL``, ~140 ms for 3 MB), or read the copy
        a run before left beside the binary in the build cache (``<module>.gz``). The copy is
        used only if it unpacks to exactly the binary's bytes (~12 ms to check)."""
        cached = deployable.binary.path.with_name(deployable.binary.path.name + ".gz")
        with contextlib.suppress(OSError, EOFError, zlib.error, gzip.BadGzipFile):
            data = cached.read_bytes()
            if gzip.decompress(data) == deployable.data:
                return cls(data, hashlib.sha256(data).hexdigest())
        data = gzip.compress(deployable.data, compresslevel=GZIP_LEVEL, mtime=0)
        with contextlib.suppress(OSError):  # a read-only cache still works
            _write_atomic(cached, data)
        return cls(data, hashlib.sha256(data).hexdigest())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Builds:
    """Build each (module, arch) once per run, however many steps and hosts need it."""

    def __init__(self, builder: Builder, audit: AuditLog) -> None:
        self._builder = builder
        self._audit = audit
        self._done: dict[tuple[str, str], trio.Event] = {}
        self._results: dict[tuple[str, str], Deployable | BuildError] = {}
        self._packing: dict[str, trio.Event] = {}  # by the binary's sha256
        self._packed: dict[str, Packed] = {}

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

    def packed_size(self, deployable: Deployable) -> int | None:
        """The compressed size of ``deployable``, if it was packed already this run."""
        found = self._packed.get(deployable.binary.sha256)
        return found.size if found is not None else None

    async def packed(self, deployable: Deployable) -> Packed:
        """``deployable`` gzip-compressed, once per run and binary; the first caller packs
        (in a thread), the rest wait."""
        key = deployable.binary.sha256
        if key not in self._packing:
            self._packing[key] = trio.Event()
            try:
                self._packed[key] = await trio.to_thread.run_sync(Packed.load, deployable)
            finally:
                self._packing[key].set()
        await self._packing[key].wait()
        if key not in self._packed:  # the first caller was cancelled mid-way: pack here
            self._packed[key] = await trio.to_thread.run_sync(Packed.load, deployable)
        return self._packed[key]
