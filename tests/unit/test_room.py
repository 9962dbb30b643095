"""The exam room the server keeps (chaosrun.server.room): what each event does to a row."""

from __future__ import annotations

from chaosrun.server.room import Room

STEPS = [{"id": "lock", "section": "steps", "points": 0}, {"id": "key", "section": "verify", "points": 2}]


def _room() -> Room:
    room = Room()
    room.apply({"seq": 1, "type": "exam_created", "environments": ["a", "b"], "steps": STEPS})
    return room


def test_a_watch_pass_keeps_the_time_to_fix_and_clears_the_rest() -> None:
    room = _room()
    room.apply(
        {
            "seq": 2,
            "type": "run_started",
            "operation": "w",
            "section": "verify",
            "environments": ["a"],
            "steps": STEPS[1:],
        }
    )
    room.apply(
        {"seq": 3, "type": "step_ended", "env": "a", "step": "key", "status": "ok", "points": 2, "max_points": 2}
    )
    room.apply({"seq": 4, "type": "time_to_fix", "env": "a", "step": "key", "seconds": 252.0})
    room.apply(
        {
            "seq": 5,
            "type": "run_started",
            "operation": "w",
            "section": "verify",
            "environments": ["a"],
            "steps": STEPS[1:],
        }
    )
    assert room.rows["a"].cells["key"] == {"status": None, "time_to_fix": 252.0}
    assert room.rows["a"].state == "waiting" and room.seq == 5


def test_what_an_operation_left_under_way_is_closed_when_it_ends() -> None:
    room = _room()
    room.apply({"seq": 2, "type": "step_started", "env": "a", "step": "lock"})
    room.apply({"seq": 3, "type": "env_graded", "env": "b", "ok": False, "points": 0, "max_points": 2,
                "integrity": "suspect", "signals": [{"signal": "binary_stopped"}], "zeroed": None})  # fmt: skip
    room.apply({"seq": 4, "type": "operation_ended", "operation": "r", "state": "stopped"})
    a, b = room.rows["a"], room.rows["b"]
    assert a.state == "waiting" and a.cells["lock"]["status"] == "interrupted"
    assert b.state == "failed" and b.integrity == "suspect" and b.shortcuts == [] and b.penalty == 0
    assert [s["id"] for s in room.as_json()["steps"]] == ["lock", "key"]
