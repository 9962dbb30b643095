"""Benchmark: parse + lint of a generated 2,000-step scenario.

Usage: .venv/bin/python bench/bench_lint.py [--steps N] [--runs N] [--profile]

The scenario mixes chaos, probe and wait steps, ``needs`` (lists, ``[]`` and none),
``when`` conditions that read earlier steps, ``${...}`` parameters (typed and rendered
into text) and ``one_of`` groups; it lints clean. The figure is the median of several
in-process runs after one warm-up, with the expression cache cleared before each run
(what a fresh ``chaosrun lint`` process sees). The baseline is ``yaml.safe_load`` of the
same text in the same process: the ratio says what positions, schemas and checks cost on
top of reading the YAML at all. Target: under 1 s.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

import yaml

from chaosrun.expr.parse import _parse_cached
from chaosrun.lint import check_scenario_text

TARGET_SECONDS = 1.0


def generate(steps: int) -> str:
    """A lint-clean scenario with ``steps`` top-level steps."""
    out = [
        "# yaml-language-server: $schema=../schemas/scenario.schema.json",
        "version: 1",
        "name: bench",
        "description: generated for bench/bench_lint.py",
        "targets:",
        "  web: { host: 127.0.0.1, identity: ~/.ssh/exam_ed25519 }",
        "  db: { host: 127.0.0.2, port: 2222 }",
        "vars:",
        "  root: /srv/exam",
        "  fill_mb: 64",
        "  service: nginx",
        "  ports: [80, 443, 8080]",
        "steps:",
    ]
    for i in range(steps):
        sid = f"s{i:05d}"
        kind = i % 10
        prev = f"s{i - 1:05d}" if i else None
        if kind == 0:
            out += [
                f"  - id: {sid}",
                "    target: web",
                "    chaos: fill_disk",
                "    with:",
                f"      path: ${{vars.root}}/fill/{sid}.bin",
                "      size_mb: ${vars.fill_mb}",
                "    timeout: 30s",
            ]
        elif kind == 1:
            out += [
                f"  - id: {sid}",
                "    target: web",
                "    chaos: kill_process",
                f"    needs: [{prev}]",
                f"    when: steps.{prev}.ok and steps.{prev}.result.written_mb >= vars.fill_mb",
                "    with: { name: '${vars.service}', signal: KILL }",
                "    retries: 1",
            ]
        elif kind == 2:
            out += [f"  - id: {sid}", "    wait: 500ms"]
        elif kind == 3:
            out += [
                f"  - id: {sid}",
                "    needs: []",
                "    one_of:",
                f"      - {{ id: {sid}_a, target: web, chaos: chmod,",
                "          with: { path: '${vars.root}/a', mode: '0000' } }",
                f"      - {{ id: {sid}_b, target: web, chaos: chown,",
                "          with: { path: '${vars.root}/b', user: nobody } }",
            ]
        elif kind == 4:
            out += [
                f"  - id: {sid}",
                "    target: db",
                "    probe: port_open",
                "    with: { port: '${vars.ports[2]}', timeout_ms: 500 }",
                "    expect: result.open == true and result.state in ['open', 'open|filtered']",
            ]
        elif kind == 5:
            out += [
                f"  - id: {sid}",
                "    target: web",
                "    chaos: occupy_port",
                f"    when: steps.{prev}.ok or steps.{prev}.status == 'failed'",
                "    with:",
                "      port: ${vars.ports[0] + 8000}",
                "      process_name: 'nginx: worker ${env.name} on ${target.host}'",
            ]
        elif kind == 6:
            two_back = f"s{i - 2:05d}"
            out += [
                f"  - id: {sid}",
                "    target: web",
                "    probe: file_exists",
                f"    needs: [{prev}, {two_back}]",
                f"    with: {{ path: '${{vars.root}}/flag-${{steps.{two_back}.status}}' }}",
                "    expect: |",
                "      result.exists",
                "        and result.size >= 0",
            ]
        elif kind == 7:
            out += [
                f"  - id: {sid}",
                "    target: db",
                "    chaos: stop_service",
                "    with: { service: '${vars.service}', action: stop }",
                "    timeout: 1m",
            ]
        elif kind == 8:
            out += [
                f"  - id: {sid}",
                "    target: web",
                "    probe: process_running",
                f"    when: len(vars.ports) > 2 and startswith(vars.service, 'ng') and steps.{prev}.ok",
                "    with: { name: '$${literal}' }",
                "    expect: not result.running",
            ]
        else:
            out += [
                f"  - id: {sid}",
                "    target: web",
                "    chaos: kill_process",
                f"    needs: [{prev}]",
                "    with: { name: 'worker-${vars.fill_mb}', all: true }",
            ]
    out += [
        "verify:",
        "  - id: web_answers",
        "    target: web",
        "    probe: port_open",
        "    with: { port: 80 }",
        "    expect: result.open",
        "    points: 5",
    ]
    return "\n".join(out) + "\n"


def measure(fn: Callable[[], object], runs: int, before: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``runs`` calls of ``fn`` after one warm-up call."""
    before()
    fn()
    times = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of one run")
    args = parser.parse_args()

    text = generate(args.steps)
    _, errors = check_scenario_text(text, "bench.yaml")
    if errors:
        for err in errors[:10]:
            print(err)
        print(f"the generated scenario has {len(errors)} errors")
        return 1

    def lint() -> object:
        return check_scenario_text(text, "bench.yaml")

    def clear() -> None:
        _parse_cached.cache_clear()

    if args.profile:
        clear()
        profiler = cProfile.Profile()
        profiler.runcall(lint)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)

    lint_s = measure(lint, args.runs, clear)
    warm_s = measure(lint, args.runs)
    load_s = measure(lambda: yaml.safe_load(text), args.runs)
    lines = text.count("\n")
    print(f"scenario: {args.steps} steps, {lines} lines, {len(text) / 1024:.0f} KiB")
    print(f"parse+lint:           {lint_s * 1000:8.1f} ms  (median of {args.runs}, expression cache cold)")
    print(f"parse+lint, warm:     {warm_s * 1000:8.1f} ms  (expression cache warm)")
    print(f"yaml.safe_load:       {load_s * 1000:8.1f} ms  (baseline)")
    print(f"ratio to baseline:    {lint_s / load_s:8.2f}x")
    verdict = "ok" if lint_s < TARGET_SECONDS else "SLOWER than"
    print(f"target {TARGET_SECONDS:.0f} s: {verdict}")
    return 0 if lint_s < TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
