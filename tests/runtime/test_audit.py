"""The audit log: hash chain, signed seal, fail-closed writes, and `chaosrun audit verify`
naming the first record where an edited, deleted, reordered or truncated log breaks."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import trio

from chaosrun.cli import main
from chaosrun.errors import EXIT_UNTRUSTED, EXIT_USAGE
from chaosrun.run.audit import AuditError, open_audit, verify_file
from chaosrun.run.signing import load_or_create_key, load_public


async def write_log(tmp_path: Path, records: int = 6) -> tuple[Path, Path]:
    key_path = tmp_path / "keys" / "monitor_ed25519"
    key = load_or_create_key(key_path)
    async with open_audit(tmp_path / "audit", "run-1", key=key) as log:
        await log.record("run_start", seed=1, token_id="abc")
        async with trio.open_nursery() as nursery:  # concurrent writers share one chain
            for i in range(records):
                nursery.start_soon(
                    functools.partial(log.record, "log", step=f"s{i}", msg="line\nwith newline \x1b[31m")
                )
        await log.record("run_end", ok=True)
    return log.path, key_path


async def test_a_sealed_log_verifies_and_the_key_is_private(tmp_path: Path) -> None:
    path, key_path = await write_log(tmp_path)
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    verdict = verify_file(path, load_public(key_path.with_name(key_path.name + ".pub")))
    assert verdict.ok, verdict.message
    lines = path.read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines][-2:] == ["run_end", "seal"]
    assert all("\n" not in x for x in lines)


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(x + "\n" for x in lines))


@pytest.mark.parametrize(
    ("tamper", "line", "words"),
    [
        ("edit", 4, "hash chain broken"),  # record 3 edited: the link from 4 to it breaks
        ("edit_seq", 3, "out of sequence"),
        ("delete", 3, "out of sequence"),
        ("reorder", 3, "out of sequence"),
        ("truncate", 7, "without its signed seal"),
        ("cut_mid_line", 9, "truncated record"),
        ("resign_other_key", 9, "not the trusted key"),
        ("forge_signature", 9, "bad signature"),
    ],
)
async def test_tampering_is_found_at_the_first_broken_record(
    tmp_path: Path, tamper: str, line: int, words: str
) -> None:
    path, key_path = await write_log(tmp_path)
    lines = path.read_text().splitlines()
    if tamper == "edit":
        lines[2] = lines[2].replace('"msg":"line', '"msg":"fine')
    elif tamper == "edit_seq":
        rec = json.loads(lines[2])
        rec["seq"] = 99
        lines[2] = json.dumps(rec, separators=(",", ":"))
    elif tamper == "delete":
        del lines[2]
    elif tamper == "reorder":
        lines[2], lines[3] = lines[3], lines[2]
    elif tamper == "truncate":
        lines = lines[:-2]
    elif tamper in ("resign_other_key", "forge_signature"):
        from chaosrun.run import signing

        seal = json.loads(lines[-1])
        other = signing.load_or_create_key(tmp_path / "other" / "k")
        if tamper == "resign_other_key":
            seal["public_key"] = signing.public_b64(other.public_key())
            seal["sig"] = signing.sign(other, seal["head"])
        else:
            seal["sig"] = signing.sign(other, seal["head"])  # someone else's signature, our key
        lines[-1] = json.dumps(seal, separators=(",", ":"))
    if tamper == "cut_mid_line":
        path.write_text("\n".join(lines)[:-20])
    else:
        _rewrite(path, lines)
    verdict = verify_file(path, load_public(key_path))
    assert not verdict.ok
    assert verdict.line == line, verdict.message
    assert words in verdict.message
    assert f"{path}:{line}:" in verdict.message


async def test_audit_verify_command_reports_ok_or_the_broken_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, key_path = await write_log(tmp_path)
    assert main(["audit", "verify", str(path), "--key", str(key_path.with_name(key_path.name + ".pub"))]) == 0
    assert "OK" in capsys.readouterr().out
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("run_start", "run_stop")
    _rewrite(path, lines)
    assert main(["audit", "verify", str(path), "--key", str(key_path)]) == 1
    assert f"{path}:2: hash chain broken" in capsys.readouterr().out


async def test_a_record_that_cannot_be_written_fails_closed(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k")
    with pytest.raises(AuditError):  # as itself, not inside the writer's ExceptionGroup
        async with open_audit(tmp_path / "audit", "run-2", key=key) as log:
            await log.record("run_start")
            log._fh.close()  # the disk goes away under us
            await log.record("step_end", step="x")
    with pytest.raises(AuditError):  # and every later record fails too
        await log.record("anything")


async def test_an_existing_log_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "run-3.jsonl").write_text("precious\n")
    with pytest.raises(AuditError):
        async with open_audit(tmp_path / "audit", "run-3"):
            pass
    assert (tmp_path / "audit" / "run-3.jsonl").read_text() == "precious\n"


def test_a_group_readable_monitor_key_is_refused(tmp_path: Path) -> None:
    key_path = tmp_path / "k"
    load_or_create_key(key_path)
    os.chmod(key_path, 0o640)
    from chaosrun.run.signing import MonitorKeyError

    with pytest.raises(MonitorKeyError, match="chmod 600"):
        load_or_create_key(key_path)


# -- who sealed it: a rewritten log re-sealed with the attacker's own key ---------------------


async def _graded_log(tmp_path: Path) -> tuple[Path, Path]:
    """A real verify run on the local connector whose one probe fails: 0 of 3 points."""
    import platform

    from chaosrun.build import Builder, goarch_for
    from chaosrun.lint import check_scenario_text
    from chaosrun.plan import build_plan
    from chaosrun.run.local import LocalConnector
    from chaosrun.run.model import RunOptions
    from chaosrun.run.runner import run_plan
    from chaosrun.scenario import Section

    Builder().build("file_exists", "linux", goarch_for(platform.machine()))
    (tmp_path / "target-tmp").mkdir()
    text = (
        "version: 1\nname: graded\n"
        f"targets:\n  web: {{host: 127.0.0.1, tmp_dir: {tmp_path / 'target-tmp'}}}\n"
        "verify:\n"
        f"  - {{id: fixed, target: web, probe: file_exists, with: {{path: {tmp_path / 'nope'}}},"
        " expect: result.exists, points: 3}\n"
    )
    scenario, errors = check_scenario_text(text, "graded.yaml")
    assert scenario is not None and not errors, [str(e) for e in errors]
    key_path = tmp_path / "keys" / "monitor_ed25519"
    options = RunOptions(
        audit_dir=tmp_path / "audit", section=Section.VERIFY, connector=LocalConnector(), key_path=key_path
    )
    report = await run_plan(build_plan(scenario, seed=1), options)
    assert report.audit_path is not None and not report.ok
    return report.audit_path, key_path


def _forge_full_points(path: Path, attacker: Path) -> str:
    """Rewrite the log as a candidate who is root on the monitor would: every point
    awarded, the chain recomputed, a new seal by ``attacker``'s key. Returns its key id."""
    from chaosrun.run import signing
    from chaosrun.run.audit import GENESIS, encode, line_hash

    key = load_or_create_key(attacker)
    records = [json.loads(line) for line in path.read_text().splitlines()][:-1]  # the seal goes
    for record in records:
        if record["event"] == "step_end" and "points" in record:
            record.update(status="ok", reason=None, points=3.0)
        if record["event"] == "run_end":
            record.update(ok=True, points=record["max_points"])
            for env in record["environments"].values():
                env.update(ok=True, points=env["max_points"])
    lines, prev = [], GENESIS
    for record in records:
        record["prev"] = prev
        lines.append(encode(record))
        prev = line_hash(lines[-1])
    public = key.public_key()
    seal = {"seq": len(records), "ts": records[-1]["ts"], "run": records[-1]["run"], "event": "seal", "head": prev}
    seal.update(key_id=signing.key_id(public), public_key=signing.public_b64(public), sig=signing.sign(key, prev))
    seal["prev"] = prev
    lines.append(encode(seal))
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return signing.key_id(public)


@pytest.fixture
def no_local_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No monitor key at $CHAOSRUN_KEY or the default path: nobody is trusted unless named."""
    monkeypatch.delenv("CHAOSRUN_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


async def test_a_log_rewritten_to_full_points_and_resealed_is_untrusted_without_a_key_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local_key: None
) -> None:
    path, _ = await _graded_log(tmp_path)
    forged = _forge_full_points(path, tmp_path / "attacker" / "k")
    assert json.loads(path.read_text().splitlines()[-2])["points"] == 3.0
    assert main(["audit", "verify", str(path)]) == EXIT_UNTRUSTED == 3
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ") and "chain intact" in out
    assert f"sealed by key {forged} that nobody trusts (pass --key" in out and "--trust-embedded" in out
    assert "OK" not in out


async def test_the_resealed_log_fails_against_the_real_monitor_key_naming_both_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key_path = await _graded_log(tmp_path)
    forged = _forge_full_points(path, tmp_path / "attacker" / "k")
    from chaosrun.run.signing import key_id

    real = key_id(load_public(key_path))
    seal_line = len(path.read_text().splitlines())
    want = f"{path}:{seal_line}: signed by key {forged}, not the trusted key {real}\n"
    for key in (key_path, key_path.with_name(key_path.name + ".pub")):  # private or public half
        assert main(["audit", "verify", str(path), "--key", str(key)]) == 1
        assert capsys.readouterr().out == want
    monkeypatch.setenv("CHAOSRUN_KEY", str(key_path))  # the local monitor key is trusted too
    assert main(["audit", "verify", str(path)]) == 1
    assert capsys.readouterr().out == want


async def test_trust_embedded_accepts_the_resealed_log_but_names_the_key_it_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local_key: None
) -> None:
    path, _ = await _graded_log(tmp_path)
    forged = _forge_full_points(path, tmp_path / "attacker" / "k")
    assert main(["audit", "verify", str(path), "--trust-embedded"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK, ") and f"sealed by key {forged} (embedded in the log, trusted as asked)" in out


async def test_the_genuine_log_is_untrusted_without_a_key_and_ok_with_the_monitor_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key_path = await _graded_log(tmp_path)
    from chaosrun.run.signing import key_id

    real = key_id(load_public(key_path))
    assert main(["audit", "verify", str(path)]) == 3
    assert f"sealed by key {real} that nobody trusts" in capsys.readouterr().out
    assert main(["audit", "verify", str(path), "--key", str(key_path)]) == 0
    records = len(path.read_text().splitlines())
    assert capsys.readouterr().out == f"{path}: OK, {records} records, chain intact, sealed by trusted key {real}\n"
    monkeypatch.setenv("CHAOSRUN_KEY", str(key_path))
    assert main(["audit", "verify", str(path)]) == 0


async def test_a_private_key_whose_pub_beside_it_is_another_key_is_a_usage_error_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local_key: None
) -> None:
    path, key_path = await _graded_log(tmp_path)
    _forge_full_points(path, tmp_path / "attacker" / "k")
    beside = key_path.with_name(key_path.name + ".pub")
    attacker_pub = (tmp_path / "attacker" / "k.pub").read_text()
    beside.write_text(attacker_pub)  # the forger swapped the .pub next to the real key
    assert main(["audit", "verify", str(path), "--key", str(key_path)]) == EXIT_USAGE == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"chaosrun: {key_path} holds key ") and f"but {beside} beside it holds key " in err
    assert len(err.splitlines()) == 1


async def test_a_log_never_sealed_says_where_its_run_stopped(tmp_path: Path) -> None:
    """A monitor killed mid-run leaves a log without a seal (or with half a line): verify
    names the run, the last record, the steps started and not ended, and the environments
    that never finished, so an operator knows what may have been applied where."""
    key = load_or_create_key(tmp_path / "keys" / "monitor_ed25519")
    async with open_audit(tmp_path / "audit", "run-7", key=key) as log:
        plan = {"environments": [{"name": "cand-1"}, {"name": "cand-2"}, {"name": "cand-3"}]}
        await log.record("run_start", seed=1, plan=plan)
        for env in ("cand-1", "cand-2", "cand-3"):
            await log.record("step_start", env=env, step="fill")
        await log.record("step_end", env="cand-1", step="fill", status="ok")
        await log.record("env_end", env="cand-1", ok=True)
        await log.record("step_start", env="cand-2", step="kill")
        await log.record("step_end", env="cand-2", step="fill", status="ok")
        await log.record("run_end", ok=False)
    lines = log.path.read_text().splitlines()[:-2]  # killed before run_end and the seal
    _rewrite(log.path, lines)
    verdict = verify_file(log.path)
    assert not verdict.ok and "log ends without its signed seal record" in verdict.message
    assert "; run run-7, last record seq 7 (step_end at " in verdict.message, verdict.message
    assert "; steps in flight: cand-2/kill, cand-3/fill;" in verdict.message
    assert verdict.message.endswith("; environments not finished: 2 of 3 (cand-2, cand-3)")
    log.path.write_text("\n".join(lines)[:-15])  # and cut mid-line
    verdict = verify_file(log.path)
    assert "truncated record (no newline at end of file); run run-7, last record seq 6" in verdict.message
    assert "steps in flight: cand-2/fill, cand-2/kill, cand-3/fill;" in verdict.message  # its end was cut off


async def test_the_runs_own_records_keep_every_environment_and_target_data_stays_bounded(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "monitor_key")
    room = [{"name": f"cand-{i:04d}", "steps": []} for i in range(1200)]
    async with open_audit(tmp_path / "audit", "run-big", key=key) as log:
        await log.record("run_start", plan={"environments": room})
        await log.record("result", env="cand-0001", step="s", result={"lines": list(range(1200))})
        await log.record("run_end", ok=True, environments={e["name"]: {"ok": True} for e in room})
    records = [json.loads(line) for line in log.path.read_text().splitlines()]
    start, result, end = (next(r for r in records if r["event"] == name) for name in ("run_start", "result", "run_end"))
    assert len(start["plan"]["environments"]) == 1200  # restore and --limit read every one
    assert len(end["environments"]) == 1200
    assert len(result["result"]["lines"]) == 200  # what a target says stays bounded
    assert verify_file(log.path).ok
