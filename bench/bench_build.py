"""Benchmark the build stage: what a step pays for its module binary.

Per module:
  cold      first build into an empty chaosrun cache (Go's own build cache as it is:
            pass --cold-go-cache for an empty one, which makes the first module compile
            the standard library)
  warm      median of 50 lookups of the cached binary by the same Builder
  fresh     first lookup by a new Builder on the warm cache (a new monitor process:
            Go version from the on-disk memo, binary hashed once)
  rebuild   build after a one-line change to the module's main.go (in a temp copy)
  size      binary size

Usage: .venv/bin/python bench/bench_build.py [MODULE ...] [--arch arm64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from chaosrun._resources import data_dir
from chaosrun.build import Builder

WARM_ROUNDS = 50


@dataclass
class Row:
    module: str
    cold_s: float
    warm_ms: float
    fresh_ms: float
    rebuild_s: float
    size_bytes: int


def bench_module(module: str, goarch: str, source: Path, scratch: Path) -> Row:
    cache = scratch / f"cache-{module}"
    builder = Builder(cache_dir=cache, source_dir=source)
    builder.go_version()  # measured separately: once per Builder, then on disk

    started = time.perf_counter()
    cold = builder.build(module, "linux", goarch)
    cold_s = time.perf_counter() - started
    assert not cold.cached

    timings = []
    for _ in range(WARM_ROUNDS):
        started = time.perf_counter()
        warm = builder.build(module, "linux", goarch)
        timings.append(time.perf_counter() - started)
        assert warm.cached

    started = time.perf_counter()
    Builder(cache_dir=cache, source_dir=source).build(module, "linux", goarch)
    fresh_ms = (time.perf_counter() - started) * 1000

    main_go = source / "modules" / module / "main.go"
    original = main_go.read_bytes()
    try:
        main_go.write_bytes(original + b"\nvar benchEdit = 1\n")
        started = time.perf_counter()
        rebuilt = builder.build(module, "linux", goarch)
        rebuild_s = time.perf_counter() - started
        assert not rebuilt.cached
    finally:
        main_go.write_bytes(original)

    return Row(
        module=module,
        cold_s=cold_s,
        warm_ms=statistics.median(timings) * 1000,
        fresh_ms=fresh_ms,
        rebuild_s=rebuild_s,
        size_bytes=cold.size,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to measure (default: all)")
    parser.add_argument("--arch", default="amd64", help="GOARCH (default amd64)")
    parser.add_argument("--cold-go-cache", action="store_true", help="use an empty GOCACHE")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="chaosrun-bench-") as tmp:
        scratch = Path(tmp)
        source = scratch / "chaos_go"
        shutil.copytree(data_dir("chaos_go"), source)  # never edit the real tree
        if args.cold_go_cache:
            os.environ["GOCACHE"] = str(scratch / "go-build")
        probe = Builder(cache_dir=scratch / "probe", source_dir=source)
        modules = args.modules or probe.modules()
        started = time.perf_counter()
        version = probe.go_version()
        version_ms = (time.perf_counter() - started) * 1000

        print(
            f"{version}, linux/{args.arch}, {len(modules)} modules; go env GOVERSION "
            f"took {version_ms:.0f} ms (once per cache, then memoised on disk)"
        )
        header = f"{'module':<20} {'cold s':>7} {'warm ms':>8} {'fresh ms':>9} {'rebuild s':>10} {'size MiB':>9}"
        print(header)
        print("-" * len(header))
        rows = []
        for module in modules:
            row = bench_module(module, args.arch, source, scratch)
            rows.append(row)
            print(
                f"{row.module:<20} {row.cold_s:>7.2f} {row.warm_ms:>8.2f} "
                f"{row.fresh_ms:>9.2f} {row.rebuild_s:>10.2f} "
                f"{row.size_bytes / (1 << 20):>9.2f}",
                flush=True,
            )
        if len(rows) > 1:
            print("-" * len(header))
            print(
                f"{'median':<20} {statistics.median(r.cold_s for r in rows):>7.2f} "
                f"{statistics.median(r.warm_ms for r in rows):>8.2f} "
                f"{statistics.median(r.fresh_ms for r in rows):>9.2f} "
                f"{statistics.median(r.rebuild_s for r in rows):>10.2f} "
                f"{statistics.median(r.size_bytes for r in rows) / (1 << 20):>9.2f}"
            )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
