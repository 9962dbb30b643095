"""Lint and the runtime agree on every name, in every position.

Every name path the docs list (docs/expressions.md, "Names"), and near misses of each, is
put in turn into a verify probe's ``when``, ``expect`` and ``${...}`` in ``with``. Lint's
verdict on that one step must be the runtime's: a name lint accepts resolves when the step
runs (the ``expect`` that knew only ``result`` was this bug), and a name lint refuses does
not resolve at run time either. The run is real: the local connector runs the real module
binaries, which call back over TCP.
"""

from __future__ import annotations

import platform
import textwrap
from pathlib import Path

import pytest
import trio

from chaosrun.build import Builder, goarch_for
from chaosrun.lint import check_scenario_text
from chaosrun.plan import build_plan
from chaosrun.run.local import LocalConnector
from chaosrun.run.model import RunOptions, StepStatus
from chaosrun.run.runner import run_plan
from chaosrun.scenario import Section

#: Name paths the docs promise, each true to resolve in this scenario.
DOCUMENTED = (
    "vars.n",
    "vars.text",
    "vars.nested.inner",
    "vars.items[1]",
    "env.name",
    "target.host",
    "target.port",
    "target.user",
    "target.role",
    "steps.first.ok",
    "steps.first.status",
    "steps.first.duration",
    "steps.first.result",
    "steps.first.result.exit_status",
    "steps.first.result.stdout",
)
#: Near misses: an unknown root, field, variable or step.
NEAR_MISSES = (
    "var.n",
    "vars.nope",
    "vars.nested.nope",
    "env.nope",
    "target.nope",
    "steps.nope.ok",
    "steps.first.nope",
    "steps.first.result.nope",
    "step.first.ok",
    "nope",
)
POSITIONS = ("when", "expect", "with")


def _step(position: str, path: str) -> str:
    probe = "{id: second, target: web, probe: command, needs: [first]"
    if position == "with":
        return probe + f', with: {{command: "echo ${{{path}}}"}}, expect: result.exit_status == 0}}'
    test = f"str({path}) != '\\u0000'"  # true whenever the name resolves
    extra = f'when: "{test}"' if position == "when" else f'expect: "{test}"'
    return probe + ", with: {command: 'true'}, " + extra + "}"


def _scenario(tmp_dir: Path, position: str, path: str) -> str:
    return textwrap.dedent(f"""\
        version: 1
        name: names
        targets:
          web: {{host: 127.0.0.1, tmp_dir: {tmp_dir}}}
        vars: {{n: 1, text: hello, nested: {{inner: 2}}, items: [a, b]}}
        steps: []
        verify:
          - {{id: first, target: web, probe: command, with: {{command: 'echo hi'}}, expect: result.exit_status == 0}}
          - {_step(position, path)}
        """)


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    Builder().build("command", "linux", goarch_for(platform.machine()))


async def _runtime_resolves(tmp_path: Path, text: str) -> tuple[bool, str]:
    scenario, _ = check_scenario_text(text, "names.yaml")  # run it whatever lint said
    assert scenario is not None
    try:
        plan = build_plan(scenario, seed=1)
    except Exception as exc:  # a static ${vars.nope} fails at plan time: it did not resolve
        return False, str(exc)
    options = RunOptions(
        audit_dir=tmp_path / "audit",
        section=Section.VERIFY,
        connector=LocalConnector(),
        key_path=tmp_path / "keys" / "k",
    )
    report = await run_plan(plan, options)
    (second,) = [s for s in report.environments[0].steps if s.id == "second"]
    unresolved = second.status is StepStatus.FAILED and second.reason.startswith(("when:", "expect:", "with:"))
    return not unresolved and second.status is StepStatus.OK, second.reason


@pytest.mark.parametrize("position", POSITIONS)
async def test_lint_and_the_runtime_agree_on_every_documented_name_and_its_near_misses(
    tmp_path: Path, position: str
) -> None:
    tmp_dir = tmp_path / "target-tmp"
    tmp_dir.mkdir()
    disagree = []
    for path in DOCUMENTED + NEAR_MISSES:
        text = _scenario(tmp_dir, position, path)
        _, errors = check_scenario_text(text, "names.yaml")
        lint_ok = not errors
        run_ok, reason = await _runtime_resolves(tmp_path, text)
        if lint_ok != run_ok:
            disagree.append(f"{position} {path}: lint {'ok' if lint_ok else errors[0]}; run {reason or 'ok'}")
        if path in DOCUMENTED and not lint_ok:
            disagree.append(f"{position} {path}: documented, but lint says {errors[0]}")
    await trio.sleep(0)
    assert disagree == []
    assert list(tmp_dir.iterdir()) == []
