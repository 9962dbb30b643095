"""Lab: the base VM image, built once per machine into the user's cache.

``ensure_image`` returns the image for a recipe, building it first when the cache lacks it:
``mmdebstrap`` makes a Debian root folder from Debian's packages (the machine's own apt
sources), the recipe's customisation script turns it into an exam machine, ``mke2fs -d``
makes an ext4 disk image of it without mounting anything, and the image's own kernel and
initrd are copied beside it so qemu boots them directly. Everything happens in a temp
folder that is renamed into place only when complete, under a lock, so a build that fails
or is interrupted leaves nothing that looks like an image; its log stays, and the error
names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import ImageBuildError, LabError, ResourceError, ToolMissingError
from .recipe import RECIPE, Recipe, recipe_id

__all__ = ["Image", "Progress", "build_lock", "cache_dir", "ensure_image", "find_tool", "image_path"]

Progress = Callable[[str], None]

#: Free space a build needs in the cache: the root folder (~0.8 GB) and the sparse image
#: holding a copy of it, with room to spare.
BUILD_DISK_BYTES = 4 * 1024**3
DEBIAN_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")

#: mmdebstrap's own stage lines worth showing as progress (the rest go to the log only).
_STAGES = (
    "I: automatically chosen",
    "I: setting up",
    "I: running apt-get update",
    "I: downloading packages",
    "I: extracting archives",
    "I: installing essential",
    "I: installing remaining",
    "I: running --customize-hook",
    "I: cleaning",
    "I: success",
)


@dataclass(frozen=True)
class Image:
    """A complete base image in the cache. Never written to: VMs run on overlays of it."""

    id: str
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "disk.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def info(self) -> dict[str, object]:
        """What the build recorded (recipe, kernel version, build time)."""
        data: dict[str, object] = json.loads((self.dir / "image.json").read_text())
        return data


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/chaosrun/lab`` (``~/.cache/chaosrun/lab`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chaosrun" / "lab"


def image_path(recipe: Recipe = RECIPE, cache: Path | None = None) -> Path:
    """Where the image for ``recipe`` lives (or will) in the cache."""
    return (cache or cache_dir()) / "images" / recipe_id(recipe)


def find_tool(name: str, package: str) -> str:
    """The path of a program, looked up in PATH and the sbin folders.

    Raises:
        ToolMissingError: not installed; the message names the Debian package.
    """
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if not found:
        raise ToolMissingError(
            f"{name} is not installed: `apt-get install {package}` (scripts/install installs what the lab needs)"
        )
    return found


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in ("disk.raw", "vmlinuz", "initrd.img", "image.json"))


def ensure_image(progress: Progress, recipe: Recipe = RECIPE, cache: Path | None = None) -> Image:
    """The image for ``recipe``, built first if the cache does not hold it yet.

    Args:
        progress: called with one line of text per stage of a build (not called on a hit).
        recipe: what to build; the default is the lab's one image.
        cache: the cache folder (``cache_dir()``).

    Raises:
        ToolMissingError: mmdebstrap or mke2fs is missing.
        ResourceError: too little free disk in the cache for a build.
        ImageBuildError: the build failed; the message names its log.
    """
    final = image_path(recipe, cache)
    if _complete(final):
        return Image(final.name, final)
    mmdebstrap = find_tool("mmdebstrap", "mmdebstrap")
    mke2fs = find_tool("mke2fs", "e2fsprogs")
    final.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(final, "image", progress):
        if _complete(final):  # another process built it while we waited
            return Image(final.name, final)
        for stale in final.parent.glob(f".build-{final.name}-*"):
            _remove_tree(stale, mmdebstrap)  # left by a build that was killed; the lock is ours
        free = shutil.disk_usage(final.parent).free
        if free < BUILD_DISK_BYTES:
            raise ResourceError(
                f"not enough free disk to build the lab image in {final.parent}: "
                f"{free / 1024**3:.1f} GiB free, {BUILD_DISK_BYTES / 1024**3:.0f} GiB needed"
            )
        _build(recipe, final, mmdebstrap, mke2fs, progress)
    return Image(final.name, final)


@contextlib.contextmanager
def build_lock(final: Path, what: str, progress: Progress) -> Iterator[None]:
    """Hold the lock of a cache entry being made (``final.lock`` beside it); say so when
    another chaosrun holds it, and wait."""
    with open(final.parent / f"{final.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"lab: waiting for another chaosrun that is making {what} {final.name}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(recipe: Recipe, final: Path, mmdebstrap: str, mke2fs: str, progress: Progress) -> None:
    work = final.parent / f".build-{final.name}-{os.getpid()}"
    log_path = final.parent / f"{final.name}.build.log"
    root = work / "root"
    work.mkdir()
    started = time.monotonic()
    helper = [] if os.geteuid() == 0 else [mmdebstrap, "--unshare-helper"]

    def say(text: str) -> None:
        progress(f"lab: [{time.monotonic() - started:5.0f}s] {text}")

    try:
        with open(log_path, "w", encoding="utf-8") as log:
            progress(
                f"lab: building the Debian 12 image {final.name} (once per machine, about 2 minutes); log: {log_path}"
            )
            customize = work / "customize.sh"
            customize.write_text(recipe.customize)
            customize.chmod(0o755)
            command = [
                mmdebstrap,
                "--mode=unshare",
                f"--variant={recipe.variant}",
                f"--include={','.join(recipe.packages)}",
                "--aptopt=Acquire::Retries 3",
                f'--customize-hook=sh {shlex.quote(str(customize))} "$1"',
                recipe.suite,
                str(root),
            ]
            sources = _sources_for(recipe.suite)
            if sources is not None:
                command.append("-")
            say("mmdebstrap: starting")
            _run_logged(command, log, say, sources, "mmdebstrap")
            say("mke2fs: making the ext4 disk image")
            disk = work / "disk.raw"
            with open(disk, "wb") as f:  # ours, even when mke2fs runs in mmdebstrap's user namespace
                f.truncate(0)
            disk.chmod(0o666 if helper else 0o644)
            _run_logged(
                [
                    *helper,
                    mke2fs,
                    "-F",
                    "-q",
                    "-t",
                    "ext4",
                    "-L",
                    "chaosrun-lab",
                    "-d",
                    str(root),
                    str(disk),
                    recipe.size,
                ],
                log,
                say,
                None,
                "mke2fs",
            )
            disk.chmod(0o644)
            kernel_version = _copy_boot_files(root, work, helper, log)
            seconds = time.monotonic() - started
            info = {
                "id": final.name,
                "recipe": recipe.as_json(),
                "kernel": kernel_version,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(seconds, 1),
            }
            say("removing the root folder")
            _remove_tree(root, mmdebstrap)
            (work / "customize.sh").unlink()
            (work / "image.json").write_text(json.dumps(info, indent=2) + "\n")
        shutil.move(str(log_path), work / "build.log")
        os.rename(work, final)
        say(f"image {final.name} ready ({kernel_version})")
    except BaseException:
        with contextlib.suppress(LabError, OSError):
            _remove_tree(work, mmdebstrap)
        raise


def _sources_for(suite: str) -> bytes | None:
    """The machine's Debian sources when they name ``suite`` (else mmdebstrap's default mirror)."""
    for path in DEBIAN_SOURCES:
        if path.is_file():
            text = path.read_bytes()
            if suite.encode() in text:
                return text
    return None


def _run_logged(command: list[str], log: TextIO, say: Callable[[str], None], stdin: bytes | None, what: str) -> None:
    """Run ``command``, its output to ``log``; mmdebstrap's stage lines also to ``say``."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"},
    )
    try:
        assert proc.stdout is not None
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            log.write(line + "\n")
            if line.startswith(_STAGES):
                say(f"{what}: {line[3:].split(' in shell:')[0].rstrip('.')}")
        log.flush()
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: mmdebstrap got the same SIGINT; give it time to clean up
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if code != 0:
        log.write(f"{what} exited with status {code}\n")
        log.flush()
        raise ImageBuildError(f"building the lab image failed: {what} exited with status {code}; see {log.name}")


def _copy_boot_files(root: Path, work: Path, helper: list[str], log: TextIO) -> str:
    """Copy the newest kernel and its initrd out of the root folder; returns the kernel version."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError(f"building the lab image failed: no kernel in {root / 'boot'}; see {log.name}")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    for source, target in ((kernels[-1], "vmlinuz"), (root / "boot" / f"initrd.img-{version}", "initrd.img")):
        with open(work / target, "wb") as out:
            if subprocess.run([*helper, "cat", str(source)], stdout=out, stderr=log).returncode != 0:
                raise ImageBuildError(f"building the lab image failed: cannot read {source}; see {log.name}")
    return version


def _remove_tree(path: Path, mmdebstrap: str) -> None:
    """Remove a build folder, never following a mount that is still there into the host."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        mounted = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
    if mounted:
        raise LabError(f"not removing {path}: {mounted[0]} is still mounted there")
    if os.geteuid() == 0:
        shutil.rmtree(path)
    else:  # files owned by mmdebstrap's namespace root: remove them from inside it
        subprocess.run([mmdebstrap, "--unshare-helper", "rm", "-rf", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)
