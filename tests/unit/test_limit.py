"""``--limit``: names, globs, comma lists, and the sets a past run's audit log leaves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chaosrun.limit import LimitError, past_run, select

NAMES = ["cand-001", "cand-002", "cand-010", "cand-011", "proctor"]


def _log(path: Path, planned: list[str], ended: dict[str, tuple[bool, str]], *, cut: bool = False) -> Path:
    records = [{"seq": 0, "event": "run_start", "plan": {"environments": [{"name": n} for n in planned]}}]
    records += [{"event": "env_end", "env": n, "ok": ok, "integrity": i} for n, (ok, i) in ended.items()]
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + ('{"event": "env_st' if cut else ""))
    return path


def test_names_globs_and_comma_lists_keep_the_inventory_order(tmp_path: Path) -> None:
    assert select(NAMES, "cand-010", tmp_path) == ["cand-010"]
    assert select(NAMES, "cand-01*", tmp_path) == ["cand-010", "cand-011"]
    assert select(NAMES, "proctor, cand-00?", tmp_path) == ["cand-001", "cand-002", "proctor"]
    assert select(NAMES, "cand-00[2-9],cand-002", tmp_path) == ["cand-002"]


def test_a_name_or_glob_that_matches_nothing_is_an_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(LimitError, match=r"no environment 'cand-01' in the inventory \(did you mean 'cand-01.'\?\)"):
        select(NAMES, "cand-001,cand-01", tmp_path)
    with pytest.raises(LimitError, match="'web-\\*' matches no environment"):
        select(NAMES, "web-*", tmp_path)
    with pytest.raises(LimitError, match="empty pattern"):
        select(NAMES, " , ", tmp_path)
    with pytest.raises(LimitError, match="unknown set '@broken'"):
        select(NAMES, "@broken", tmp_path)
    assert LimitError("x").exit_code == 2


def test_failed_and_suspect_come_from_the_newest_audit_log(tmp_path: Path) -> None:
    old = _log(tmp_path / "a.jsonl", NAMES, dict.fromkeys(NAMES, (False, "ok")))
    new = _log(
        tmp_path / "b.jsonl",
        NAMES,
        {"cand-001": (True, "ok"), "cand-002": (False, "ok"), "cand-010": (True, "suspect"), "proctor": (True, "ok")},
    )
    os.utime(old, ns=(1, 1))
    # cand-011 never ended (the run was cut short): failed too
    assert select(NAMES, "@failed", tmp_path) == ["cand-002", "cand-011"]
    assert select(NAMES, "@suspect", tmp_path) == ["cand-010"]
    assert select(NAMES, "@failed,@suspect,proctor", tmp_path) == ["cand-002", "cand-010", "cand-011", "proctor"]
    assert select(NAMES, f"@failed:{old}", tmp_path) == NAMES
    assert past_run(new)["@failed"] == {"cand-002", "cand-011"}


def test_a_log_cut_mid_line_is_read_up_to_its_last_whole_record(tmp_path: Path) -> None:
    log = _log(tmp_path / "k.jsonl", NAMES, {"cand-001": (True, "ok")}, cut=True)
    assert past_run(log)["@failed"] == set(NAMES) - {"cand-001"}


def test_what_a_past_run_cannot_give_is_said(tmp_path: Path) -> None:
    with pytest.raises(LimitError, match=f"no audit log in {tmp_path}"):
        select(NAMES, "@failed", tmp_path)
    _log(tmp_path / "ok.jsonl", NAMES, dict.fromkeys(NAMES, (True, "ok")))
    with pytest.raises(LimitError, match="selects no environment \\(the past run has none @failed\\)"):
        select(NAMES, "@failed", tmp_path)
    (tmp_path / "x.jsonl").write_text('{"event": "step_start"}\n')
    with pytest.raises(LimitError, match="is not a chaosrun audit log"):
        select(NAMES, f"@failed:{tmp_path / 'x.jsonl'}", tmp_path)
    (tmp_path / "y.jsonl").write_text('{"event": "run_start"}\nnot json\n{}\n')
    with pytest.raises(LimitError, match="y.jsonl:2: not an audit record"):
        select(NAMES, f"@suspect:{tmp_path / 'y.jsonl'}", tmp_path)
    with pytest.raises(LimitError, match="cannot read"):
        select(NAMES, f"@failed:{tmp_path / 'none.jsonl'}", tmp_path)
