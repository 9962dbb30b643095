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
