"""``chaosrun lint`` on the command line: output streams, exit codes, several files."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaosrun.cli import main

GOOD = "version: 1\nname: t\nsteps:\n  - { id: p, wait: 1s }\n"
BAD = "version: 1\nname: t\nsteps:\n  - { id: p, wait: 1 }\n  - { id: p, wait: 1s }\n"
INVENTORY = "environments:\n  cand-001: { web: { host: 10.0.0.1 } }\n"


def _run(*argv: str, cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    (tmp_path / "bad_inv.yaml").write_text("environments:\n  e: { web: { host: h, port: x } }\n")
    return tmp_path


def test_clean_files_exit_0_print_nothing_on_stdout_and_a_count_on_stderr(files: Path) -> None:
    assert _run("lint", "good.yaml", cwd=files) == (0, "", "ok: 1 file checked\n")
    assert _run("lint", "good.yaml", "inv.yaml", cwd=files) == (0, "", "ok: 2 files checked\n")


def test_errors_go_to_stdout_one_per_line_with_a_summary_on_stderr_and_exit_1(files: Path) -> None:
    code, out, err = _run("lint", "bad.yaml", cwd=files)
    assert code == 1
    assert out.splitlines() == [
        "bad.yaml:4:7: duplicate step id 'p' (used again at line 5)",
        "bad.yaml:4:20: invalid duration 1 (write e.g. 500ms, 30s, 5m or 1h)",
        "bad.yaml:5:7: duplicate step id 'p' (first used at line 4)",
    ]
    assert err == "3 errors in 1 file\n"


def test_every_file_is_checked_even_after_one_fails(files: Path) -> None:
    code, out, err = _run("lint", "bad.yaml", "good.yaml", "bad_inv.yaml", cwd=files)
    assert code == 1
    assert [line.split(":")[0] for line in out.splitlines()] == ["bad.yaml"] * 3 + ["bad_inv.yaml"]
    assert err == "4 errors in 2 files\n"


def test_an_inventory_is_recognised_and_checked_as_one(files: Path) -> None:
    code, out, _ = _run("lint", "bad_inv.yaml", cwd=files)
    assert (code, out) == (1, 'bad_inv.yaml:2:30: environments.e.web.port: expected integer, got string "x"\n')


def test_a_missing_file_is_an_error_at_line_one(files: Path) -> None:
    code, out, _ = _run("lint", "nope.yaml", "good.yaml", cwd=files)
    assert (code, out) == (1, "nope.yaml:1:1: cannot read file: No such file or directory\n")


def test_a_file_that_is_not_utf8_is_an_error_not_a_crash(files: Path) -> None:
    (files / "latin1.yaml").write_bytes(b"version: 1\nname: caf\xe9\n")
    code, out, _ = _run("lint", "latin1.yaml", cwd=files)
    assert code == 1 and out.startswith("latin1.yaml:1:1: cannot read file: ")


def test_json_format_prints_one_document_for_all_files_and_no_summary(files: Path) -> None:
    code, out, err = _run("lint", "--format", "json", "good.yaml", "bad.yaml", cwd=files)
    assert code == 1 and err == ""
    data = json.loads(out)
    assert data["ok"] is False
    assert [(e["file"], e["line"], e["col"]) for e in data["errors"]] == [
        ("bad.yaml", 4, 7),
        ("bad.yaml", 4, 20),
        ("bad.yaml", 5, 7),
    ]
    assert all(set(e) == {"file", "line", "col", "message", "hint"} for e in data["errors"])


def test_json_format_for_clean_files_is_ok_true(files: Path) -> None:
    code, out, err = _run("lint", "--format", "json", "good.yaml", cwd=files)
    assert (code, json.loads(out), err) == (0, {"ok": True, "errors": []}, "")


def test_lint_without_files_is_a_usage_error(files: Path) -> None:
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()):
        _run("lint", cwd=files)
    assert info.value.code == 2


def test_the_installed_command_runs_lint_as_a_real_process(files: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chaosrun", "lint", "bad.yaml", "good.yaml"],
        cwd=files,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == "bad.yaml:4:7: duplicate step id 'p' (used again at line 5)"
    assert proc.stderr == "3 errors in 1 file\n"


SELINUX = """version: 1
name: t
targets:
  web: { host: h }
steps:
  - { id: label, target: web, chaos: selinux_context, with: { path: /var/www/html, type: user_home_t } }
  - { id: stop, target: web, chaos: stop_service, with: { service: nginx } }
"""


def test_a_module_that_needs_selinux_is_a_warning_at_its_step_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SELINUX)
    code, out, err = _run("lint", "s.yaml", cwd=tmp_path)
    assert code == 0 and err == "ok: 1 file checked\n"
    (line,) = out.splitlines()
    assert line.startswith("s.yaml:6:38: warning: step 'label': selinux_context needs SELinux enabled"), line
    assert "Debian, Ubuntu and the chaosrun lab VMs have none" in line and "fails and changes nothing" in line
    code, out, _ = _run("lint", "--format", "json", "s.yaml", cwd=tmp_path)
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["errors"] == []
    ((warning),) = report["warnings"]
    assert (warning["line"], warning["col"]) == (6, 38) and "selinux_context needs SELinux" in warning["message"]
    # and run says it too, before it connects anywhere (here: the missing inventory stops it)
    code, _, err = _run("plan", "s.yaml", cwd=tmp_path)
    assert "chaosrun: s.yaml:6:38: warning: step 'label': selinux_context needs SELinux" in err, err


FSTAB = """version: 1
name: t
targets:
  web: { host: h }
vars:
  safe: true
steps:
  - { id: a, target: web, chaos: fstab_entry, with: { mount_point: /srv/a, fault: add } }
  - { id: b, target: web, chaos: fstab_entry, with: { mount_point: /srv/b, fault: add, nofail: false } }
  - { id: c, target: web, chaos: fstab_entry, with: { mount_point: /srv/c, fault: add, nofail: true } }
  - { id: d, target: web, chaos: fstab_entry, with: { mount_point: /srv/d, fault: add, nofail: "${vars.safe}" } }
"""


def test_a_declaration_warns_at_a_use_that_is_valid_but_usually_a_mistake(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(FSTAB)
    code, out, err = _run("lint", "f.yaml", cwd=tmp_path)
    assert code == 0 and err == "ok: 1 file checked\n"
    lines = out.splitlines()
    assert [line.split(": warning: ")[0] for line in lines] == ["f.yaml:8:34", "f.yaml:9:34"], out
    assert "step 'a': fstab_entry without nofail stops the next boot in emergency mode" in lines[0]
    assert lines[0].endswith("(give nofail: true)")
