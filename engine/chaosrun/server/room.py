"""The exam room: per exam, every candidate's state, points, flags and per-step cells, as
the events of its operations left them. It is what the proctor page loads first (then it
follows the events itself), and it is rebuilt from the stored events when the server starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Room"]


@dataclass
class Row:
    name: str
    state: str = "waiting"  # waiting | running | done | failed
    points: float = 0
    max_points: float = 0
    integrity: str | None = None
    signals: list[Any] = field(default_factory=list)
    shortcuts: list[Any] = field(default_factory=list)
    penalty: float = 0
    zeroed: str | None = None  # why its points were set to 0 (--strict on a suspect one)
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "points": self.points,
            "max_points": self.max_points,
            "integrity": self.integrity,
            "signals": self.signals,
            "shortcuts": self.shortcuts,
            "penalty": self.penalty,
            "zeroed": self.zeroed,
            "cells": self.cells,
        }


class Room:
    """One exam's room, fed one event at a time (:meth:`apply`)."""

    def __init__(self, environments: list[str] | None = None) -> None:
        self.seq = 0
        self.steps: dict[str, dict[str, Any]] = {}  # id -> {"id", "section", "points"}
        self.rows: dict[str, Row] = {name: Row(name) for name in environments or ()}
        self._section: dict[str, str] = {}  # operation -> the section its run runs

    def row(self, name: str) -> Row:
        if (row := self.rows.get(name)) is None:
            row = self.rows[name] = Row(name)
        return row

    def apply(self, event: dict[str, Any]) -> None:
        self.seq = max(self.seq, int(event.get("seq", 0)))
        kind = event.get("type")
        if kind == "exam_created":
            for step in event.get("steps", []):
                self.steps.setdefault(step["id"], step)
            for name in event.get("environments", []):
                self.row(name)
            return
        if kind == "run_started":
            section = str(event.get("section"))
            self._section[str(event.get("operation"))] = section
            for step in event.get("steps", []):
                self.steps.setdefault(step["id"], step)
            for name in event.get("environments", []):
                row = self.row(name)
                row.state = "waiting"
                for sid in [s for s, st in self.steps.items() if st.get("section") == section]:
                    # a watch's next pass: the probe's time to fix stays until the pass says otherwise
                    fix = row.cells.pop(sid, {}).get("time_to_fix")
                    if fix is not None:
                        row.cells[sid] = {"status": None, "time_to_fix": fix}
            return
        if kind == "operation_ended":  # what it left under way (stopped, the server killed) did not end
            for row in self.rows.values():
                if row.state == "running":
                    row.state = "waiting"
                for cell in row.cells.values():
                    if cell.get("status") == "running":
                        cell["status"] = "interrupted"
            return
        env = event.get("env")
        if not isinstance(env, str):
            return
        row = self.row(env)
        if kind == "step_started":
            row.state = "running"
            row.cells[event["step"]] = {**row.cells.get(event["step"], {}), "status": "running"}
        elif kind == "step_ended":
            cell = row.cells.setdefault(event["step"], {})
            cell.update({k: event.get(k) for k in ("status", "reason", "points", "max_points", "duration")})
            cell.setdefault("time_to_fix", None)
        elif kind == "env_ended":
            row.state = "done" if event.get("ok") else "failed"
            row.points, row.max_points = event.get("points") or 0, event.get("max_points") or 0
        elif kind == "env_graded":
            row.state = "done" if event.get("ok") else "failed"
            row.points, row.max_points = event.get("points") or 0, event.get("max_points") or 0
            row.integrity = event.get("integrity")
            row.signals, row.shortcuts = list(event.get("signals") or []), list(event.get("shortcuts") or [])
            row.penalty, row.zeroed = event.get("penalty") or 0, event.get("zeroed")
        elif kind == "time_to_fix":
            cell = row.cells.setdefault(event["step"], {"status": None})
            cell["time_to_fix"] = event.get("seconds")

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "steps": list(self.steps.values()),
            "environments": [row.as_json() for row in self.rows.values()],
        }
