"""``/openapi.json`` matches the running server: schemathesis generates requests for every
operation it describes (valid and invalid bodies, parameters and headers) and checks each
response against it -- no 500 for any input, status codes, content types and bodies as
documented. A body the schema allows may still be refused with 422 on what no schema says
(a scenario's lint errors, a --limit that selects nobody, a duration that is not one): for
the POSTs, schema-valid data is not required to be accepted."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from server_support import Server, serving

from chaosrun.server.openapi import document

schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("openapi"))


def test_the_server_serves_the_document_it_is_checked_against(server: Server) -> None:
    served = httpx.get(server.url + "/openapi.json").json()
    assert served == document()
    assert served["openapi"].startswith("3.")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case, server: Server) -> None:
    excluded = [positive_data_acceptance] if case.method == "POST" else []
    auth = {"Authorization": f"Bearer {server.operator}"}
    case.call_and_validate(base_url=server.url, headers=auth, excluded_checks=excluded, timeout=10)


def test_real_resources_match_their_schemas(server: Server) -> None:
    """The generated ids rarely exist: the responses about a real exam, with an operation
    that failed to reach its machine, are checked against the document too."""
    scenario = (
        "version: 1\nname: doc\ntargets:\n  web: {host: 127.0.0.1}\n"
        "verify:\n  - {id: up, target: web, probe: file_exists, with: {path: /etc/hostname}, expect: true, points: 1}\n"
    )
    inventory = "environments:\n  cand-1:\n    web: {host: 127.0.0.1, port: 9, user: nobody}\n"
    with server.client() as http:
        created = http.post("/v1/exams", json={"scenario": scenario, "inventory": inventory})
        assert created.status_code == 201, created.text
        exam = created.json()["id"]
        op = http.post(f"/v1/exams/{exam}/verify", json={}).json()
        ended = server.wait(exam, op["id"])
        assert ended["state"] in ("done", "failed")
        for path, template in (
            ("/v1/exams", "/v1/exams"),
            (f"/v1/exams/{exam}", "/v1/exams/{exam}"),
            (f"/v1/exams/{exam}/room", "/v1/exams/{exam}/room"),
            (f"/v1/exams/{exam}/operations", "/v1/exams/{exam}/operations"),
            (f"/v1/exams/{exam}/operations/{op['id']}", "/v1/exams/{exam}/operations/{operation}"),
            (f"/v1/exams/{exam}/report", "/v1/exams/{exam}/report"),
            (f"/v1/exams/{exam}/environments/cand-1", "/v1/exams/{exam}/environments/{env}"),
            (f"/v1/exams/{exam}/audit", "/v1/exams/{exam}/audit"),
        ):
            response = http.get(path)
            assert response.status_code == 200, (path, response.text)
            schema[template]["GET"].validate_response(response)
