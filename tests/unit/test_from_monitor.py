"""``from: monitor`` through parse, lint and plan: where a probe runs, and every misuse
reported at the key that causes it."""

from __future__ import annotations

import textwrap

from chaosrun.lint import check_scenario_text
from chaosrun.parse import parse_scenario
from chaosrun.plan import build_plan, format_plan, plan_as_json
from chaosrun.run.monitor.certs import name_matches
from chaosrun.scenario import Origin

HEADER = """\
version: 1
name: t
targets:
  web: { host: 10.0.0.5, user: exam }
"""


def _text(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def lint(body: str) -> list[str]:
    _, errors = check_scenario_text(_text(body), "s.yaml")
    return [str(e).removeprefix("s.yaml:") for e in errors]


def test_from_is_parsed_onto_the_step_and_target_is_the_default() -> None:
    scenario, errors = parse_scenario(
        _text("""\
        verify:
          - { id: a, probe: port_open, from: monitor, with: { port: 80 } }
          - { id: b, probe: port_open, from: target, with: { port: 80 } }
          - { id: c, probe: port_open, with: { port: 80 } }
          - id: d
            one_of:
              - { id: d1, probe: http, from: monitor }
              - { id: d2, probe: file_exists, with: { path: /x } }
        """),
        "s.yaml",
    )
    assert errors == [] and scenario is not None
    assert [s.origin for s in scenario.all_steps()] == [
        Origin.MONITOR,
        Origin.TARGET,
        Origin.TARGET,
        Origin.TARGET,  # the one_of itself
        Origin.MONITOR,
        Origin.TARGET,
    ]


def test_probes_that_can_run_from_the_monitor_lint_clean() -> None:
    assert (
        lint("""\
        verify:
          - { id: a, probe: port_open, from: monitor, with: { port: 80, protocol: udp }, expect: result.open }
          - { id: b, probe: http, from: monitor, with: { scheme: https, headers: { Host: x } }, expect: result.tls.valid }
          - { id: c, probe: dns, from: monitor, with: { name: www.exam.test, type: MX }, expect: "'x' in result.values" }
          - { id: d, probe: ssh_login, from: monitor, with: { user: alice, password: pw }, expect: result.ok }
          - { id: e, probe: port_open, from: target, with: { port: 80, host: 127.0.0.1 } }
        steps:
          - { id: gate, probe: http, from: monitor, with: { port: 8080 } }
        """)
        == []
    )


def test_from_monitor_on_a_probe_that_runs_only_on_the_target_points_at_the_from_key() -> None:
    assert lint("""\
        verify:
          - id: mode
            probe: file_mode
            from: monitor
            with: { path: /etc/shadow }
        """) == [
        "8:5: file_mode runs only on the target, not from the monitor "
        "(from: monitor takes port_open, http, ssh_login, dns)"
    ]


def test_a_probe_that_runs_only_from_the_monitor_needs_from_monitor() -> None:
    assert lint("""\
        verify:
          - { id: a, probe: ssh_login, with: { user: u, identity: k, known_hosts: h }, expect: true }
          - { id: b, probe: dns, from: target, with: { name: x } }
        """) == [
        "6:21: ssh_login runs only from the monitor; write 'from: monitor'",
        "7:26: dns runs only from the monitor; write 'from: monitor'",
    ]


def test_from_is_refused_on_chaos_wait_and_one_of_steps() -> None:
    assert lint("""\
        steps:
          - { id: kill, chaos: kill_process, from: monitor, with: { name: nginx } }
          - { id: kill2, chaos: kill_process, from: target, with: { name: nginx } }
          - { id: pause, wait: 1s, from: monitor }
          - id: pick
            from: monitor
            one_of:
              - { id: p1, wait: 1s }
        """) == [
        "6:38: step 'kill': chaos always runs on the target; 'from' is only for probes",
        "7:39: step 'kill2': chaos always runs on the target; 'from' is only for probes",
        "8:28: step 'pause': a wait step takes no 'from'",
        "10:5: step 'pick': a one_of step takes no 'from'",
    ]


def test_a_misspelt_from_value_is_a_schema_error_at_the_value() -> None:
    assert lint("""\
        verify:
          - { id: a, probe: port_open, from: monitr, with: { port: 80 } }
        """) == ['6:38: verify[0].from: must be one of "target", "monitor", got string "monitr"']


def test_with_is_checked_against_the_declaration_of_a_monitor_probe() -> None:
    assert lint("""\
        verify:
          - id: web
            probe: http
            from: monitor
            with: { schme: https, method: FETCH, headers: { X-A: 1 } }
            expect: result.tls.vaild and result.statuss == 200
          - { id: login, probe: ssh_login, from: monitor, with: { identity: k } }
        """) == [
        "9:13: with: unknown key 'schme' (did you mean 'scheme'?)",
        '9:35: with.method: must be one of "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", got string "FETCH"',
        "9:58: with.headers.X-A: expected string, got integer 1",
        "10:34: http has no result field 'statuss' (did you mean 'status'?)",
        "11:51: with: missing required key 'user'",
    ]


def test_the_plan_carries_from_into_its_text_and_its_json() -> None:
    scenario, errors = check_scenario_text(
        _text("""\
        verify:
          - { id: outside, probe: port_open, from: monitor, with: { port: 80 }, expect: result.open, points: 2 }
          - { id: inside, probe: port_open, with: { port: 80 } }
        """),
        "s.yaml",
    )
    assert errors == [] and scenario is not None
    plan = build_plan(scenario, seed=1)
    outside, inside = plan.environments[0].verify
    assert (outside.origin, inside.origin) == (Origin.MONITOR, Origin.TARGET)
    text = format_plan(plan)
    assert "outside          probe port_open from monitor to web (10.0.0.5)" in text
    assert "inside           probe port_open on web (exam@10.0.0.5:22)" in text
    steps = plan_as_json(plan)["environments"][0]["verify"]
    assert [(s["id"], s["from"]) for s in steps] == [("outside", "monitor"), ("inside", "target")]


def test_certificate_names_match_as_rfc_6125_says() -> None:
    names = ["exam.test", "*.web.exam.test"]
    assert name_matches("exam.test", names, [])
    assert name_matches("EXAM.test.", names, [])
    assert name_matches("www.web.exam.test", names, [])
    assert not name_matches("web.exam.test", names, [])  # a * is one whole label, not none
    assert not name_matches("a.b.web.exam.test", names, [])  # nor two
    assert not name_matches("other.test", names, [])
    assert name_matches("10.0.0.5", names, ["10.0.0.5"])
    assert not name_matches("10.0.0.5", ["10.0.0.5"], [])  # an address matches an IP name only
    assert name_matches("[::1]", [], ["::1"])
