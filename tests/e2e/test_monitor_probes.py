"""Probes run ``from: monitor``, end to end through ``chaosrun verify``, against real servers
on 127.0.0.1: the test sshd (port_open, ssh_login), stdlib HTTP/HTTPS servers with
certificates made here (http), dnsmasq (dns). No binary goes to the target for them."""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import Exam, RunResult, free_port
from monitor_servers import dnsmasq, http_server, make_certificate

from chaosrun.run.audit import verify_file

pytestmark = pytest.mark.e2e


def verify(exam: Exam, probes: str, *, name: str = "exam") -> RunResult:
    """``chaosrun verify`` of a scenario whose verify section is ``probes`` (YAML), on the
    test sshd as role ``box``."""
    text = f"version: 1\nname: monitor-probes\ntargets:\n  box: {{ host: {exam.sshd.host} }}\nverify:\n"
    path = exam.workdir / f"{name}.yaml"
    path.write_text(text + textwrap.indent(textwrap.dedent(probes), "  "))
    run = exam.chaosrun("verify", path, "-i", exam.inventory(["box"]), "--plain")
    assert run.audit_path is not None and verify_file(run.audit_path).ok
    assert "Traceback" not in run.stdout + run.stderr
    return run


def result(run: RunResult, step: str) -> dict[str, Any]:
    (found,) = [r for r in run.events("result") if r["step"] == step]
    assert found["ok"] is True, found
    return dict(found["result"])


def status(run: RunResult, step: str) -> str:
    return str(run.step_end(step)["status"])


def test_port_open_from_the_monitor_finds_the_sshd_port_open_and_a_free_port_closed(exam: Exam) -> None:
    closed = free_port()
    run = verify(
        exam,
        f"""
        - {{ id: ssh_port, probe: port_open, from: monitor, with: {{ port: {exam.sshd.port} }}, expect: result.open }}
        - id: free_port
          probe: port_open
          from: monitor
          with: {{ port: {closed}, timeout_ms: 500 }}
          expect: not result.open
        """,
    )
    assert run.code == 0, run.stdout + run.stderr
    ssh_port, free = result(run, "ssh_port"), result(run, "free_port")
    assert (ssh_port["open"], ssh_port["state"], ssh_port["reason"]) == (True, "open", "")
    assert ssh_port["latency_ms"] >= 0
    assert (free["open"], free["state"]) == (False, "closed")
    assert free["reason"] == f"connect 127.0.0.1:{closed}: Connection refused"
    # the audit log says what the monitor did, and that nothing went to the target
    probes = {r["step"]: r for r in run.events("monitor_probe")}
    assert probes["ssh_port"]["address"] == f"127.0.0.1:{exam.sshd.port}"
    assert probes["ssh_port"]["summary"] == "tcp open" and probes["ssh_port"]["ok"] is True
    assert probes["free_port"]["summary"].startswith("tcp closed: connect 127.0.0.1:")
    assert run.events("listen") == [] and run.events("connect") == []


def test_port_open_with_settle_ms_calls_a_port_that_hangs_up_at_once_closed(exam: Exam) -> None:
    """What a forwarder does for a service that is down (qemu's user network for a lab VM):
    accept, then hang up. ``settle_ms`` tells that from the sshd, which speaks first."""
    with socket.socket() as hangs_up:
        hangs_up.bind(("127.0.0.1", 0))
        hangs_up.listen(8)
        port = hangs_up.getsockname()[1]
        stop = threading.Event()

        def serve() -> None:
            hangs_up.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    hangs_up.accept()[0].close()

        server = threading.Thread(target=serve)
        server.start()
        try:
            run = verify(
                exam,
                f"""
                - {{ id: forwarder, probe: port_open, from: monitor, with: {{ port: {port}, settle_ms: 1000 }}, expect: not result.open }}
                - {{ id: plain, probe: port_open, from: monitor, with: {{ port: {port} }}, expect: result.open }}
                - {{ id: sshd, probe: port_open, from: monitor, with: {{ port: {exam.sshd.port}, settle_ms: 1000 }}, expect: result.open }}
                """,
            )
        finally:
            stop.set()
            server.join()
    assert run.code == 0, run.stdout + run.stderr
    forwarder = result(run, "forwarder")
    assert (forwarder["open"], forwarder["state"]) == (False, "closed")
    assert forwarder["reason"] == (
        f"connect 127.0.0.1:{port}: accepted, then closed without a byte within 1000 ms"
        " (a forwarder whose service behind it refused?)"
    )
    assert forwarder["latency_ms"] < 1000  # the connect's, not the wait's
    assert result(run, "plain")["open"] and result(run, "sshd")["state"] == "open"


def _wrong_key(folder: Path) -> Path:
    path = folder / "not_authorized_ed25519"
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


def test_ssh_login_from_the_monitor_gets_in_with_the_users_key_and_not_with_another(exam: Exam) -> None:
    user = exam.sshd.user
    wrong = _wrong_key(exam.workdir)
    run = verify(
        exam,
        f"""
        - id: with_key
          probe: ssh_login
          from: monitor
          with: {{ user: {user}, identity: {exam.sshd.identity} }}
          expect: result.ok and result.user == "{user}"
        - id: with_other_key
          probe: ssh_login
          from: monitor
          with: {{ user: {user}, identity: {wrong} }}
          expect: not result.ok
        - id: with_password
          probe: ssh_login
          from: monitor
          with: {{ user: {user}, password: "not the password" }}
          expect: not result.ok
        - id: no_credentials
          probe: ssh_login
          from: monitor
          with: {{ user: {user} }}
        """,
    )
    assert result(run, "with_key") == {"ok": True, "user": user, "error": "", "duration_ms": pytest.approx(1, abs=1e4)}
    other = result(run, "with_other_key")
    assert (other["ok"], other["user"], other["error"]) == (False, "", "permission denied")
    assert result(run, "with_password")["error"] == "permission denied"  # the test sshd takes keys only
    assert [status(run, s) for s in ("with_key", "with_other_key", "with_password")] == ["ok", "ok", "ok"]
    # neither key nor password: the probe cannot run, and says why
    assert status(run, "no_credentials") == "failed"
    assert run.step_end("no_credentials")["reason"] == "module failed: ssh_login needs identity or password"
    summaries = {r["step"]: r["summary"] for r in run.events("monitor_probe")}
    assert summaries["with_key"] == f"{user}@127.0.0.1:{exam.sshd.port}: logged in as {user}"
    assert summaries["with_other_key"] == f"{user}@127.0.0.1:{exam.sshd.port}: permission denied"


def test_ssh_login_checks_the_host_key_against_the_targets_known_hosts(exam: Exam) -> None:
    other_known_hosts = exam.workdir / "other_known_hosts"
    other_known_hosts.write_text(f"[127.0.0.1]:{exam.sshd.port} {exam.sshd.client_public_key}\n")  # a wrong key
    run = verify(
        exam,
        f"""
        - id: wrong_host_key
          probe: ssh_login
          from: monitor
          with: {{ user: {exam.sshd.user}, identity: {exam.sshd.identity}, known_hosts: {other_known_hosts} }}
        """,
    )
    found = result(run, "wrong_host_key")
    assert found["ok"] is False and found["error"].startswith("host key verification failed")


def test_http_from_the_monitor_reports_status_headers_and_body(exam: Exam) -> None:
    with http_server() as port:
        run = verify(
            exam,
            f"""
            - id: home
              probe: http
              from: monitor
              with: {{ port: {port}, body_pattern: "hello [a-z]+", headers: {{ X-Token: abc 123 }} }}
              expect: result.status == 200 and result.body_matches and result.headers["x-echo"] == "abc 123"
              points: 2
            - id: missing
              probe: http
              from: monitor
              with: {{ port: {port}, path: /nothing-here, expect_status: 404 }}
              expect: result.status_matches
            - id: big
              probe: http
              from: monitor
              with: {{ port: {port}, path: /big, max_body: 1000 }}
            - id: head
              probe: http
              from: monitor
              with: {{ port: {port}, method: HEAD }}
            - {{ id: chunked, probe: http, from: monitor, with: {{ port: {port}, path: /chunked }} }}
            - {{ id: chunked_cut, probe: http, from: monitor, with: {{ port: {port}, path: /chunked, max_body: 8 }} }}
            """,
        )
    assert run.code == 0, run.stdout + run.stderr
    home = result(run, "home")
    assert (home["status"], home["status_matches"], home["body"], home["body_matches"]) == (
        200,
        True,
        "hello exam\n",
        True,
    )
    assert home["headers"]["content-type"] == "text/plain"
    assert home["headers"]["set-cookie"] == "a=1, b=2"
    assert home["error"] == "" and home["tls"] is None and home["body_truncated"] is False
    assert 0 < home["duration_ms"] < 5000
    missing = result(run, "missing")
    assert (missing["status"], missing["status_matches"]) == (404, True)
    big = result(run, "big")
    assert (len(big["body"]), big["body_truncated"]) == (1000, True)
    head = result(run, "head")
    assert (head["status"], head["body"]) == (200, "")
    assert (result(run, "chunked")["body"], result(run, "chunked")["body_truncated"]) == ("hello chunked\n", False)
    assert (result(run, "chunked_cut")["body"], result(run, "chunked_cut")["body_truncated"]) == ("hello ch", True)
    assert run.step_end("home")["points"] == 2


def test_http_from_the_monitor_tells_a_closed_port_and_a_server_that_never_answers(exam: Exam) -> None:
    closed = free_port()
    with http_server() as port:
        run = verify(
            exam,
            f"""
            - {{ id: closed, probe: http, from: monitor, with: {{ port: {closed} }}, expect: result.status == 200, points: 1 }}
            - {{ id: slow, probe: http, from: monitor, with: {{ port: {port}, path: /slow, timeout_ms: 300 }} }}
            - {{ id: step_limit, probe: http, from: monitor, timeout: 300ms, with: {{ port: {port}, path: /slow }} }}
            """,
        )
    refused = result(run, "closed")
    assert (refused["status"], refused["error"]) == (0, f"connect 127.0.0.1:{closed}: Connection refused")
    assert status(run, "closed") == "failed" and run.step_end("closed")["points"] == 0
    slow = result(run, "slow")
    assert (slow["status"], slow["error"]) == (0, "no answer within 300 ms")
    assert 250 < slow["duration_ms"] < 2000
    # the step's own timeout ends the probe too, and the audit log says it was cut short
    assert (status(run, "step_limit"), run.step_end("step_limit")["reason"]) == ("timeout", "timed out after 0.3s")
    (cut,) = [r for r in run.events("monitor_probe") if r["step"] == "step_limit"]
    assert (cut["ok"], cut["summary"]) == (False, "interrupted (step timeout or Ctrl-C)")


def test_https_from_the_monitor_inspects_a_self_signed_and_an_expired_certificate(exam: Exam) -> None:
    fresh = make_certificate(exam.workdir, "exam.test", days=(-1, 30))
    expired = make_certificate(exam.workdir, "exam.test", days=(-60, -3))
    with http_server(fresh.server_context()) as good_port, http_server(expired.server_context()) as old_port:
        run = verify(
            exam,
            f"""
            - {{ id: self_signed, probe: http, from: monitor, with: {{ scheme: https, port: {good_port}, server_name: exam.test }} }}
            - id: trusted
              probe: http
              from: monitor
              with: {{ scheme: https, port: {good_port}, server_name: exam.test, ca_file: {fresh.cert} }}
              expect: result.tls.valid and result.tls.name_matches and result.tls.expires_in_days >= 29
            - {{ id: other_name, probe: http, from: monitor, with: {{ scheme: https, port: {good_port}, server_name: www.other.test, ca_file: {fresh.cert} }} }}
            - {{ id: by_address, probe: http, from: monitor, with: {{ scheme: https, port: {good_port}, ca_file: {fresh.cert} }} }}
            - {{ id: expired, probe: http, from: monitor, with: {{ scheme: https, port: {old_port}, server_name: exam.test, ca_file: {expired.cert} }} }}
            - {{ id: not_tls, probe: http, from: monitor, with: {{ scheme: https, port: {exam.sshd.port}, timeout_ms: 2000 }} }}
            """,
        )
    self_signed = result(run, "self_signed")
    assert self_signed["status"] == 200 and self_signed["body"] == "hello exam\n"
    tls = self_signed["tls"]
    assert tls["valid"] is False and "self-signed" in tls["verify_error"]
    assert tls["names"] == ["exam.test", "127.0.0.1"] and tls["name_matches"] is True
    assert tls["subject"] == tls["issuer"] == "CN=exam.test"
    assert tls["expires_in_days"] in (29, 30) and tls["not_after"].endswith("+00:00")
    assert tls["version"].startswith("TLSv1.")
    trusted = result(run, "trusted")["tls"]
    assert (trusted["valid"], trusted["verify_error"]) == (True, "")
    assert status(run, "trusted") == "ok"
    assert result(run, "other_name")["tls"]["name_matches"] is False
    assert result(run, "other_name")["tls"]["valid"] is True  # the chain is fine; the name is not
    assert result(run, "by_address")["tls"]["name_matches"] is True  # the IP address SAN
    old = result(run, "expired")
    assert old["status"] == 200, "an expired certificate can still be inspected"
    assert old["tls"]["valid"] is False and "expired" in old["tls"]["verify_error"]
    assert old["tls"]["expires_in_days"] in (-3, -4)
    not_tls = result(run, "not_tls")
    assert not_tls["status"] == 0 and not_tls["error"].startswith("TLS handshake failed")


def test_dns_from_the_monitor_asks_the_targets_resolver(exam: Exam) -> None:
    records = [
        "--address=/exam.test/127.0.0.5",
        "--host-record=www.exam.test,127.0.0.6",
        "--cname=web.exam.test,www.exam.test",
        "--mx-host=exam.test,mail.exam.test,10",
        "--txt-record=exam.test,hello exam",
    ]
    with dnsmasq(*records) as port:
        run = verify(
            exam,
            f"""
            - id: any_name
              probe: dns
              from: monitor
              with: {{ name: db.exam.test, port: {port} }}
              expect: result.rcode == "NOERROR" and "127.0.0.5" in result.addresses
              points: 1
            - {{ id: alias, probe: dns, from: monitor, with: {{ name: web.exam.test, port: {port} }} }}
            - {{ id: mail, probe: dns, from: monitor, with: {{ name: exam.test, type: MX, port: {port}, protocol: tcp }} }}
            - {{ id: text, probe: dns, from: monitor, with: {{ name: exam.test, type: TXT, port: {port} }} }}
            - {{ id: reverse, probe: dns, from: monitor, with: {{ name: 127.0.0.6, type: PTR, port: {port} }} }}
            - {{ id: elsewhere, probe: dns, from: monitor, with: {{ name: example.invalid, port: {port} }} }}
            """,
        )
        dead = free_port()
        silent = verify(
            exam,
            f"- {{ id: nobody, probe: dns, from: monitor, with: {{ name: exam.test, port: {dead}, timeout_ms: 300 }} }}\n",
        )
    assert run.code == 0, run.stdout + run.stderr
    any_name = result(run, "any_name")
    assert any_name["answers"] == [{"name": "db.exam.test.", "type": "A", "ttl": 0, "data": "127.0.0.5"}]
    assert (any_name["values"], any_name["authoritative"], any_name["error"]) == (["127.0.0.5"], True, "")
    alias = result(run, "alias")
    assert alias["values"] == alias["addresses"] == ["127.0.0.6"]  # the A record after the CNAME
    assert [a["type"] for a in alias["answers"]] == ["CNAME", "A"]
    assert result(run, "mail")["values"] == ["10 mail.exam.test."]
    assert result(run, "text")["values"] == ["hello exam"]
    assert result(run, "reverse")["values"] == ["www.exam.test."]
    assert result(run, "elsewhere")["rcode"] == "REFUSED"
    nobody = result(silent, "nobody")
    assert nobody["rcode"] == "" and nobody["error"] == f"no answer from 127.0.0.1:{dead} within 300 ms"


def test_a_verify_mixing_probes_from_the_monitor_and_on_the_target_grades_both(exam: Exam) -> None:
    (exam.sandbox / "index.html").write_text("hello\n")
    closed = free_port()
    with http_server() as web:
        run = verify(
            exam,
            f"""
            - id: sshd_answers
              probe: port_open
              from: monitor
              with: {{ port: {exam.sshd.port} }}
              expect: result.open
              points: 2
            - id: sshd_listens
              probe: port_open
              with: {{ port: {exam.sshd.port} }}
              expect: result.open
              points: 1
            - id: candidate_can_log_in
              probe: ssh_login
              from: monitor
              with: {{ user: {exam.sshd.user}, identity: {exam.sshd.identity} }}
              expect: result.ok
              points: 3
            - id: site_up
              probe: http
              from: monitor
              with: {{ port: {web}, body_pattern: hello }}
              expect: result.status == 200 and result.body_matches
              points: 2
            - id: api_up
              probe: http
              from: monitor
              with: {{ port: {closed} }}
              expect: result.status == 200
              points: 2
            - id: page_there
              probe: file_exists
              with: {{ path: {exam.sandbox / "index.html"} }}
              expect: result.exists
              points: 1
            """,
        )
    assert run.code == 1  # api_up fails
    points = {r["step"]: r["points"] for r in run.events("step_end")}
    assert points == {
        "sshd_answers": 2,
        "sshd_listens": 1,
        "candidate_can_log_in": 3,
        "site_up": 2,
        "api_up": 0,
        "page_there": 1,
    }
    (env_end,) = run.events("env_end")
    assert (env_end["points"], env_end["max_points"]) == (9, 11)
    # only the on-target probes deployed a binary; the monitor's ran here
    assert {r["step"] for r in run.events("listen")} == {"sshd_listens", "page_there"}
    assert {r["step"] for r in run.events("monitor_probe")} == {
        "sshd_answers",
        "candidate_can_log_in",
        "site_up",
        "api_up",
    }
    (start,) = run.events("run_start")
    froms = {s["id"]: s["from"] for s in start["plan"]["environments"][0]["verify"]}
    assert froms["sshd_answers"] == "monitor" and froms["sshd_listens"] == "target"


def test_the_plan_shows_which_probes_run_from_the_monitor(exam: Exam) -> None:
    path = exam.workdir / "plan.yaml"
    path.write_text(
        "version: 1\nname: p\ntargets: { box: { host: 127.0.0.1 } }\nverify:\n"
        "  - { id: web, probe: http, from: monitor, with: { port: 8080 } }\n"
    )
    run = exam.chaosrun("plan", path, "--seed", "1")
    assert "web              probe http from monitor to box (127.0.0.1)" in run.stdout
    as_json = json.loads(exam.chaosrun("plan", path, "--seed", "1", "--format", "json").stdout)
    assert as_json["environments"][0]["verify"][0]["from"] == "monitor"
