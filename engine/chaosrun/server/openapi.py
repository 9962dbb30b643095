"""The OpenAPI 3.1 document of ``chaosrun serve`` (``GET /openapi.json``), written by hand
next to the routes it describes; schemathesis checks the running server against it."""

from __future__ import annotations

from typing import Any

from .. import __version__

__all__ = ["document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NULL_STR = {"type": ["string", "null"]}
_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}
_NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}
_ACTS = {"403": {"$ref": "#/components/responses/Forbidden"}}
_INVALID = {"422": {"$ref": "#/components/responses/Invalid"}}
_EXAM = {"name": "exam", "in": "path", "required": True, "schema": {"type": "string"}, "description": "the exam's id"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "errors": {"type": "array", "items": _ref("LintError")}},
    },
    "LintError": {
        "type": "object",
        "required": ["file", "line", "column", "message"],
        "properties": {
            "file": {"type": "string", "description": "`scenario` or `inventory` for text, else the path"},
            "line": {"type": "integer"},
            "column": {"type": "integer"},
            "message": {"type": "string"},
            "hint": _NULL_STR,
        },
    },
    "NewExam": {
        "type": "object",
        "additionalProperties": False,
        "description": "the scenario and inventory as text, or as paths under the server's --files folders",
        "anyOf": [{"required": ["scenario"]}, {"required": ["scenario_path"]}],
        "properties": {
            "scenario": {"type": "string", "description": "the scenario's YAML"},
            "inventory": {"type": "string", "description": "the inventory's YAML"},
            "scenario_path": {"type": "string"},
            "inventory_path": {"type": "string"},
        },
    },
    "Operation": {
        "type": "object",
        "required": ["id", "exam", "kind", "state", "params", "started", "ended", "audit", "ok", "error"],
        "properties": {
            "id": {"type": "string"},
            "exam": {"type": "string"},
            "kind": {"enum": ["run", "verify", "restore", "watch"]},
            "state": {"enum": ["running", "done", "failed", "interrupted", "stopped"]},
            "params": {"type": "object"},
            "started": {"type": "string", "format": "date-time"},
            "ended": {"type": ["string", "null"]},
            "audit": {
                "type": ["string", "null"],
                "description": "its audit log (the first, for a watch); null with --db: the workers' logs are theirs",
            },
            "ok": {"type": ["boolean", "null"]},
            "error": _NULL_STR,
        },
    },
    "Exam": {
        "type": "object",
        "required": ["id", "name", "created", "state", "environments", "operation"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "created": {"type": "string"},
            "state": {
                "enum": ["created", "busy", "ran", "verified", "restored", "watched", "interrupted", "failed"],
                "description": "busy while an operation runs, else what the newest one did",
            },
            "environments": {"type": "integer"},
            "scenario": {"type": "string"},
            "inventory": _NULL_STR,
            "operation": {"oneOf": [_ref("Operation"), {"type": "null"}], "description": "the newest operation"},
        },
    },
    "Parameters": {
        "type": "object",
        "additionalProperties": False,
        "description": "the command line's options; each operation takes its own (see the operation)",
        "properties": {
            "limit": {"type": "string", "description": "--limit: names, globs, comma lists, @failed, @suspect"},
            "seed": {"type": "integer", "minimum": 0},
            "strict": {"type": "boolean"},
            "resume": {"type": "boolean", "description": "run: go on with the newest interrupted run"},
            "interval": {"type": ["string", "number"], "description": "watch: 30s, 5m..."},
            "until": {"type": ["string", "number"], "description": "watch: 2h..."},
            "transfer": {
                "enum": ["auto", "raw", "gzip"],
                "description": "run, verify, watch: how module binaries travel (--transfer); with --db a worker's own",
            },
        },
    },
    "Cell": {
        "type": "object",
        "properties": {
            "status": {"type": ["string", "null"]},
            "points": {"type": ["number", "null"]},
            "max_points": {"type": ["number", "null"]},
            "reason": _NULL_STR,
            "duration": {"type": ["number", "null"]},
            "time_to_fix": {"type": ["number", "null"]},
        },
    },
    "Row": {
        "type": "object",
        "required": ["name", "state", "points", "max_points", "integrity", "cells"],
        "properties": {
            "name": {"type": "string"},
            "state": {"enum": ["waiting", "running", "done", "failed"]},
            "points": {"type": "number"},
            "max_points": {"type": "number"},
            "integrity": {"type": ["string", "null"]},
            "signals": {"type": "array"},
            "shortcuts": {"type": "array"},
            "penalty": {"type": "number"},
            "zeroed": {"type": ["string", "null"], "description": "why its points were set to 0"},
            "cells": {"type": "object", "additionalProperties": _ref("Cell")},
        },
    },
    "Room": {
        "type": "object",
        "required": ["exam", "seq", "steps", "environments"],
        "properties": {
            "exam": _ref("Exam"),
            "seq": {"type": "integer", "description": "the newest event: send it as Last-Event-ID to /events"},
            "steps": {"type": "array", "items": {"type": "object"}},
            "environments": {"type": "array", "items": _ref("Row")},
        },
    },
    "Report": {
        "type": "object",
        "description": "the JSON of `chaosrun run|verify --format json`",
        "required": ["run", "section", "ok", "points", "max_points", "environments"],
        "properties": {
            "run": {"type": "string"},
            "section": {"enum": ["steps", "verify"]},
            "ok": {"type": "boolean"},
            "interrupted": {"type": "boolean"},
            "points": {"type": "number"},
            "max_points": {"type": "number"},
            "environments": {"type": "array", "items": {"type": "object"}},
        },
    },
}


def _operation_body(kind: str) -> dict[str, Any]:
    return {
        "required": False,
        "content": {"application/json": {"schema": _ref("Parameters")}},
        "description": f"the options of `chaosrun {kind}`",
    }


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/whoami": {
            "get": {
                "summary": "The token's name and role",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["name", "role"],
                            "properties": {"name": {"type": "string"}, "role": {"enum": ["operator", "proctor"]}},
                        },
                        "who you are",
                    ),
                    **_ERRORS,
                },
            }
        },
        "/v1/exams": {
            "get": {
                "summary": "Every exam, newest first",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["exams"],
                            "properties": {"exams": {"type": "array", "items": _ref("Exam")}},
                        },
                        "the exams",
                    ),
                    **_ERRORS,
                },
            },
            "post": {
                "summary": "A new exam: a scenario and an inventory, linted",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewExam")}}},
                "responses": {
                    "201": _json(_ref("Exam"), "the exam"),
                    **_ERRORS,
                    **_ACTS,
                    "413": {"$ref": "#/components/responses/Invalid"},
                    **_INVALID,
                },
            },
        },
        "/v1/exams/{exam}": {
            "parameters": [_EXAM],
            "get": {
                "summary": "One exam and its state",
                "responses": {"200": _json(_ref("Exam"), "the exam"), **_ERRORS, **_NOT_FOUND},
            },
        },
        "/v1/exams/{exam}/room": {
            "parameters": [_EXAM],
            "get": {
                "summary": "The room: every candidate's state, points, flags and steps (what the proctor page loads)",
                "responses": {"200": _json(_ref("Room"), "the room"), **_ERRORS, **_NOT_FOUND},
            },
        },
        "/v1/exams/{exam}/events": {
            "parameters": [
                _EXAM,
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "the seq of the last event seen: the stream starts after it",
                },  # fmt: skip
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Last-Event-ID as a query parameter",
                },  # fmt: skip
            ],
            "get": {
                "summary": "Server-Sent Events: the exam's events from the first (or after Last-Event-ID), then live",
                "responses": {
                    "200": {
                        "description": "an event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            },
        },
        "/v1/exams/{exam}/report": {
            "parameters": [
                _EXAM,
                {
                    "name": "operation",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "whose report (default: the newest verify or watch, else the newest run)",
                },  # fmt: skip
            ],
            "get": {
                "summary": "The report (JSON; CSV with Accept: text/csv; JUnit XML with Accept: application/xml)",
                "responses": {
                    "200": {
                        "description": "the report",
                        "content": {
                            "application/json": {"schema": _ref("Report")},
                            "text/csv": {"schema": {"type": "string"}},
                            "application/xml": {"schema": {"type": "string"}},
                        },
                    },
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            },
        },
        "/v1/exams/{exam}/audit": {
            "parameters": [_EXAM],
            "get": {
                "summary": "The exam's audit logs, each with its verification (hash chain, seal, signing key)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["logs"],
                            "properties": {
                                "logs": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["name", "bytes", "verification"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "bytes": {"type": "integer"},
                                            "verification": {"type": "object"},
                                        },
                                    },
                                }
                            },
                        },  # fmt: skip
                        "the logs",
                    ),
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            },
        },
        "/v1/exams/{exam}/audit/{name}": {
            "parameters": [_EXAM, {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "summary": "One audit log, as it is on disk (JSON lines)",
                "responses": {
                    "200": {
                        "description": "the log",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            },
        },
        "/v1/exams/{exam}/environments/{env}": {
            "parameters": [_EXAM, {"name": "env", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "summary": "One candidate: its row, its steps' observed values, its events and an audit excerpt",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["name", "row", "steps", "events", "audit"],
                            "properties": {
                                "name": {"type": "string"},
                                "row": _ref("Row"),
                                "steps": {"type": "array"},
                                "events": {"type": "array"},
                                "audit": {"type": "array"},
                            },
                        },
                        "the candidate",
                    ),
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            },
        },
        "/v1/exams/{exam}/operations": {
            "parameters": [_EXAM],
            "get": {
                "summary": "The exam's operations, oldest first",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["operations"],
                            "properties": {"operations": {"type": "array", "items": _ref("Operation")}},
                        },
                        "the operations",
                    ),  # fmt: skip
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            },
        },
        "/v1/exams/{exam}/operations/{operation}": {
            "parameters": [_EXAM, {"name": "operation", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "summary": "One operation",
                "responses": {"200": _json(_ref("Operation"), "it"), **_ERRORS, **_NOT_FOUND},
            },
        },
        "/v1/exams/{exam}/operations/{operation}/stop": {
            "parameters": [_EXAM, {"name": "operation", "in": "path", "required": True, "schema": {"type": "string"}}],
            "post": {
                "summary": "Stop an operation as Ctrl-C does (steps under way end, the audit log is sealed)",
                "responses": {
                    "202": _json(_ref("Operation"), "stopping (or over already)"),
                    **_ERRORS,
                    **_ACTS,
                    **_NOT_FOUND,
                },
            },
        },
    }
    for kind, summary in (
        ("run", "Run the chaos on every environment (or --limit's)"),
        ("verify", "Grade every environment (or --limit's)"),
        ("restore", "Undo the newest run's chaos"),
        ("watch", "Grade again and again, recording each probe's time to fix"),
    ):
        paths[f"/v1/exams/{{exam}}/{kind}"] = {
            "parameters": [_EXAM],
            "post": {
                "summary": summary,
                "requestBody": _operation_body(kind),
                "responses": {
                    "202": _json(_ref("Operation"), "started"),
                    **_ERRORS,
                    **_ACTS,
                    **_NOT_FOUND,
                    "409": {"$ref": "#/components/responses/Busy"},
                    **_INVALID,
                },
            },
        }
    return paths


def document() -> dict[str, Any]:
    def error(description: str) -> dict[str, Any]:
        return _json(_ref("Error"), description)

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chaosrun",
            "version": __version__,
            "description": "Run, grade, watch and restore hands-on exams. See docs/api.md.",
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
            "responses": {
                "Unauthorized": error("no token, or not one of this server's"),
                "Forbidden": error("a proctor's token: proctors read, operators act"),
                "NotFound": error("no such exam, operation, environment or log"),
                "Busy": error("another operation is running on the exam"),
                "Invalid": error("a bad body or parameter; a scenario's lint errors, each with its line and column"),
                "Unavailable": error("the database (--db) cannot be reached just now; try again"),
            },
        },
    }
