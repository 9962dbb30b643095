"""The Python API from another program's event loop, asyncio and trio alike, against the
test sshd: load, run, verify with events, report, restore."""

from __future__ import annotations

import asyncio
from typing import Any

import trio
from e2e_support import Exam

import chaosrun.api as api

SCENARIO = """\
version: 1
name: api
targets:
  web: {host: 127.0.0.1}
steps:
  - {id: lock, target: web, chaos: chmod, with: {path: "%(root)s/key", mode: "0000"}}
verify:
  - {id: key, target: web, probe: file_mode, with: {path: "%(root)s/key"}, expect: result.mode == "0644", points: 1}
"""


def _exam(exam: Exam) -> api.Exam:
    (exam.sandbox / "key").write_text("k\n")
    (exam.sandbox / "key").chmod(0o644)
    scenario = exam.workdir / "api.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    return api.load_exam(scenario, exam.inventory(["web"]), audit_dir=exam.workdir / "audit")


def test_the_api_under_asyncio(exam: Exam) -> None:
    loaded = _exam(exam)
    events: list[dict[str, Any]] = []

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        ticks = 0

        async def ticker() -> None:  # the loop stays free while the engine works
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        ran = await api.run(loaded)
        graded = await api.verify(loaded, on_event=lambda e: loop.call_soon_threadsafe(events.append, e))
        restored = await api.restore(loaded)
        task.cancel()
        assert ticks > 10
        return ran, graded, restored

    ran, graded, restored = asyncio.run(main())
    assert ran["ok"] and ran["section"] == "steps"
    assert graded["points"] == 0 and graded["max_points"] == 1
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run_started" and "step_ended" in kinds and kinds[-1] == "env_graded"
    assert restored["restored"] is True and (exam.sandbox / "key").stat().st_mode & 0o777 == 0o644


def test_the_api_under_trio(exam: Exam) -> None:
    loaded = _exam(exam)

    async def main() -> dict[str, Any]:
        await api.run(loaded)
        (exam.sandbox / "key").chmod(0o644)  # the candidate repairs
        return await api.verify(loaded)

    graded = trio.run(main)
    assert graded["points"] == 1 and graded["environments"][0]["integrity"] == "ok"
