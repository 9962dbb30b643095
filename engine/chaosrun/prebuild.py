"""Build ahead: every module a plan (or the catalogue) needs, compiled before anything connects.

``chaosrun build`` fills the build cache ahead of exam day; ``run`` and ``verify`` call
the same :func:`prebuild` before their first connection, so a cold cache shows "building
N modules" with progress instead of a silent pause, and a missing Go toolchain is an error
before any candidate's machine is touched.

The targets' architecture is known only once connected; ahead of that the monitor's own
(``uname -m``) is assumed, or the ones ``chaosrun build --arch`` names. A target of
another architecture still gets its binary: the run builds it when it first meets one.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from .build import Binary, Builder, BuildError, goarch_for
from .errors import EXIT_FAILED, EXIT_OK, UsageError
from .scenario import Origin, Scenario, Section

__all__ = ["BuildReport", "Built", "local_goarch", "modules_for", "prebuild"]

#: Modules of chaosrun's own that a run or a restore deploys besides the scenario's
#: (chaosrun.shortcuts, chaosrun.restore).
GUARD, RESTORE = "guard", "restore"


@dataclass(frozen=True)
class Built:
    """One module for one architecture: its binary, or why it did not build."""

    module: str
    goarch: str
    binary: Binary | None = None
    error: str | None = None


@dataclass
class BuildReport:
    """What :func:`prebuild` found in the cache and what it compiled."""

    cached: list[Built] = field(default_factory=list)
    built: list[Built] = field(default_factory=list)
    failed: list[Built] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def local_goarch() -> str:
    """The monitor's own architecture as GOARCH (``amd64`` on x86_64)."""
    try:
        return goarch_for(platform.machine())
    except BuildError:
        return "amd64"


def modules_for(scenario: Scenario, section: Section | None = None) -> list[str]:
    """The modules ``section`` of ``scenario`` (both without one) may deploy, every
    ``one_of`` option and chaosrun's own included, sorted."""
    found = {
        s.module
        for s in scenario.all_steps()
        if s.module and s.origin is Origin.TARGET and (section is None or s.section is section)
    }  # a probe `from: monitor` is no binary: the monitor runs it itself
    if found:
        found.add(GUARD)  # the baseline before the first chaos step; verify compares against it
    return sorted(found)


def prebuild(
    builder: Builder,
    modules: Iterable[str],
    goarchs: Sequence[str] = (),
    *,
    jobs: int = 2,
    starting: Callable[[int, int], None] | None = None,
    progress: Callable[[Built], None] | None = None,
) -> BuildReport:
    """Build every module in ``modules`` for each of ``goarchs`` (the monitor's when empty)
    that the cache lacks, ``jobs`` at once.

    ``starting(to_build, cached)`` is called once the cache was looked at, before the first
    compile (only when something is to be built); ``progress`` once per module compiled or
    failed. A module that does not compile is in ``failed``, not raised: the run goes on and
    fails its steps, as a build failure at run time would.

    Raises:
        BuildError: no Go toolchain, or an unknown module.
    """
    started = time.perf_counter()
    report = BuildReport()
    wanted = [(m, a) for m in dict.fromkeys(modules) for a in (goarchs or (local_goarch(),))]
    todo: list[tuple[str, str]] = []
    for module, goarch in wanted:
        if builder.is_cached(module, "linux", goarch):
            report.cached.append(Built(module, goarch))
        else:
            todo.append((module, goarch))
    if todo and starting is not None:
        starting(len(todo), len(report.cached))

    def one(module: str, goarch: str) -> Built:
        try:
            return Built(module, goarch, binary=builder.build(module, "linux", goarch))
        except BuildError as exc:
            return Built(module, goarch, error=str(exc))

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in as_completed([pool.submit(one, m, a) for m, a in todo]):
            built = future.result()
            (report.failed if built.error else report.built).append(built)
            if progress is not None:
                progress(built)
    report.seconds = time.perf_counter() - started
    return report


def build_on_terminal(
    builder: Builder, modules: Sequence[str], goarchs: Sequence[str] = (), *, jobs: int = 2, quiet: bool = False
) -> BuildReport:
    """:func:`prebuild` with its progress on stderr: a bar on a terminal, else one log line
    per module (``chaosrun: built kill_process for amd64 in 12.3 s``); nothing with
    ``quiet`` but failures. What ``chaosrun build``, ``run`` and ``verify`` show.

    Raises:
        BuildError: no Go toolchain, or an unknown module.
    """
    import sys

    from ._log import LOG

    bar: Any = None
    task: Any = None

    def starting(to_build: int, cached: int) -> None:
        nonlocal bar, task
        arches = ", ".join(goarchs or (local_goarch(),))
        what = f"building {to_build} module{'s' if to_build != 1 else ''} for linux/{arches}"
        LOG.info("%s (%d cached); the first build of a module takes a while", what, cached)
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            bar.start()
            task = bar.add_task(what, total=to_build)

    def progress(built: Built) -> None:
        if built.error is not None:
            LOG.warning("module %s does not build for %s: %s", built.module, built.goarch, built.error)
        elif built.binary is not None:
            LOG.info("built %s for %s in %.1f s", built.module, built.goarch, built.binary.seconds)
        if bar is not None:
            bar.update(task, advance=1, description=f"built {built.module}")

    try:
        return prebuild(builder, modules, goarchs, jobs=jobs, starting=starting, progress=progress)
    finally:
        if bar is not None:
            bar.stop()


def build_command(args: argparse.Namespace) -> int:
    """``chaosrun build [SCENARIO...|--all] [--arch LIST] [--jobs N] [--format]``."""
    from .lint import load_scenario

    builder = Builder()
    if args.all:
        modules = builder.modules()
    elif args.scenarios:
        needed: set[str] = set()
        for path in args.scenarios:
            scenario = load_scenario(path)
            needed.update(modules_for(scenario))
            if any(s.kind.value == "chaos" for s in scenario.all_steps() if s.kind is not None):
                needed.add(RESTORE)  # `chaosrun restore` undoes the chaos with it
        modules = sorted(needed)
    else:
        raise UsageError("chaosrun build wants SCENARIO files or --all")
    try:
        goarchs = [a if a in _GOARCHS else goarch_for(a) for a in (args.arch or "").split(",") if a]
    except BuildError as exc:
        raise UsageError(f"--arch {args.arch}: {exc}") from None
    report = build_on_terminal(builder, modules, goarchs, jobs=args.jobs, quiet=args.quiet)
    arches = ", ".join(goarchs) or local_goarch()
    if args.format == "json":
        print(json.dumps({
            "ok": report.ok, "seconds": round(report.seconds, 3), "cache": str(builder.cache_dir),
            "built": [_built_json(b) for b in report.built], "cached": [_built_json(b) for b in report.cached],
            "failed": [_built_json(b) for b in report.failed],
        }, indent=2))  # fmt: skip
    else:
        for failed in report.failed:
            print(f"{failed.module} ({failed.goarch}): {failed.error}")
        print(
            f"{len(modules)} module{'s' if len(modules) != 1 else ''} for linux/{arches}: {len(report.built)} built, "
            f"{len(report.cached)} already built, {len(report.failed)} failed, in {report.seconds:.1f} s; "
            f"cache {builder.cache_dir}"
        )
    return EXIT_OK if report.ok else EXIT_FAILED


#: GOARCH names ``chaosrun build --arch`` takes as they are (``uname -m`` names are mapped).
_GOARCHS = ("amd64", "arm64", "arm", "386", "riscv64", "ppc64le", "s390x")


def _built_json(built: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"module": built.module, "goarch": built.goarch}
    if built.binary is not None:
        out.update(sha256=built.binary.sha256, size=built.binary.size, seconds=round(built.binary.seconds, 3))
    if built.error is not None:
        out["error"] = built.error
    return out
