"""A run's or a verify's report for the systems around an exam: CSV (one row per candidate
and step, for a spreadsheet or a grade book) and JUnit XML (one test case per step, for an
author's CI), both made from the same report as ``--format json``."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["CSV_COLUMNS", "report_as_csv", "report_as_json", "report_as_junit"]


def report_as_json(report: Any) -> dict[str, Any]:
    """A run's or a verify's report (``chaosrun.run.model.RunReport``) as the JSON of
    ``--format json``, the API and the server: every environment with its points,
    integrity, signals, shortcuts and steps."""
    return {
        "run": report.run_id,
        "section": report.section.value,
        "ok": report.ok,
        "interrupted": report.interrupted,
        "seed": report.seed,
        "audit": str(report.audit_path),
        "points": sum(e.points for e in report.environments),
        "max_points": sum(e.max_points for e in report.environments),
        "environments": [
            {
                "name": e.name,
                "ok": e.ok,
                "points": e.points,
                "max_points": e.max_points,
                "integrity": e.integrity,
                "signals": [s.as_json() for s in e.signals],
                "zeroed": e.zeroed,
                "shortcuts": [s.as_json() for s in e.shortcuts],
                "penalty": e.penalty,
                "guarded": e.guarded,
                "steps": [
                    {
                        "id": s.id,
                        "status": s.status.value,
                        "reason": s.reason,
                        "duration": s.duration,
                        "attempts": s.attempts,
                        "points": s.points,
                        "max_points": s.max_points,
                        "result": s.result,
                    }
                    for s in e.steps
                ],
            }
            for e in report.environments
        ],
    }


CSV_COLUMNS = (
    "environment",
    "step",
    "status",
    "points",
    "max_points",
    "reason",
    "integrity",
    "signals",
    "zeroed",
    "time_to_fix",
    "shortcuts",
    "penalty",
)


def _points(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else ""


def report_as_csv(report: Mapping[str, Any]) -> str:
    """One row per environment and step, in the report's order; ``signals`` joined by
    spaces, ``shortcuts`` their kinds likewise (the environment's, on each of its rows). An
    environment without steps (it never connected) still has a row."""
    out = io.StringIO()
    import csv

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for env in report["environments"]:
        signals = " ".join(s.get("signal", "") for s in env.get("signals", []))
        common = [env.get("integrity", ""), signals, "yes" if env.get("zeroed") else ""]
        cuts = [" ".join(c.get("kind", "") for c in env.get("shortcuts") or []), _points(env.get("penalty") or 0)]
        for step in env["steps"] or [{"id": "", "status": "", "points": None, "max_points": None, "reason": ""}]:
            fixed = step.get("time_to_fix")
            writer.writerow(
                [
                    env["name"],
                    step["id"],
                    step["status"],
                    _points(step.get("points")),
                    _points(step.get("max_points")),
                    step.get("reason") or "",
                    *common,
                    "" if fixed is None else f"{fixed:g}",
                    *cuts,
                ]
            )
    return out.getvalue()


def report_as_junit(report: Mapping[str, Any]) -> str:
    """A ``<testsuites>`` with a suite per environment and a case per step: ``failed`` and
    ``timeout`` are failures (with the reason), ``skipped`` is skipped; an environment
    whose integrity is suspect carries it as a property and in its suite's system-out."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name=f"chaosrun {report.get('section', '')} {report.get('run', '')}".strip())
    total = failures = skipped = 0
    for env in report["environments"]:
        suite = ET.SubElement(root, "testsuite", name=env["name"])
        props = ET.SubElement(suite, "properties")
        for key in ("integrity", "points", "max_points"):
            ET.SubElement(props, "property", name=key, value=str(env.get(key, "")))
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for step in env["steps"]:
            case = ET.SubElement(suite, "testcase", classname=env["name"], name=step["id"])
            case.set("time", f"{step.get('duration') or 0:.3f}")
            counts["tests"] += 1
            if step["status"] in ("failed", "timeout"):
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", message=step.get("reason") or step["status"])
                failure.set("type", step["status"])
                failure.text = f"points {_points(step.get('points'))} of {_points(step.get('max_points'))}"
            elif step["status"] == "skipped":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=step.get("reason") or "skipped")
        said = []
        if env.get("signals"):
            said.append("integrity suspect: " + ", ".join(s.get("signal", "") for s in env["signals"]))
        if env.get("shortcuts"):
            said += [f"shortcut {c.get('kind')}: {c.get('detail')}" for c in env["shortcuts"]]
        if said:
            ET.SubElement(suite, "system-out").text = "\n".join(said)
        for key, value in counts.items():
            suite.set(key, str(value))
        total, failures, skipped = total + counts["tests"], failures + counts["failures"], skipped + counts["skipped"]
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("skipped", str(skipped))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def formatted(report: dict[str, Any], fmt: str) -> str:
    """A run or verify report as ``--format`` wants it: ``json``, ``csv`` or ``junit``."""
    if fmt == "csv":
        return report_as_csv(report)
    if fmt == "junit":
        return report_as_junit(report)
    return json.dumps(report, indent=2) + "\n"
