"""The built wheel works on its own: installed into a fresh venv, away from the checkout.

Builds with ``pip wheel``, installs into a new venv (dependencies from the package index,
as a user would get them), then runs the installed ``chaosrun`` from an unrelated folder,
so that grammar/, schemas/ and chaos_go/ must come from inside the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv with the wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    dist, venv = base / "dist", base / "venv"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)], cwd=base)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("chaosrun-*.whl")
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    # the checkout's pip installs into the new venv (saves bootstrapping pip there)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile"]
    done = _run([*pip, str(wheel)], cwd=base)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


def test_installed_wheel_lints_a_scenario_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "exam"
    elsewhere.mkdir()
    shutil.copy(ROOT / "scenarios" / "web_outage.yaml", elsewhere / "web.yaml")
    done = _run([str(installed / "chaosrun"), "lint", "web.yaml"], cwd=elsewhere)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "ok: 1 file checked\n")


def test_installed_wheel_reports_lint_errors(installed: Path, tmp_path: Path) -> None:
    text = "version: 1\nname: b\ntargets: { web: { host: h } }\nsteps:\n  - { id: x, chaos: fil_disk }\n"
    (tmp_path / "bad.yaml").write_text(text)
    done = _run([str(installed / "chaosrun"), "lint", "bad.yaml"], cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == "bad.yaml:5:21: unknown chaos module 'fil_disk' (did you mean 'fill_disk'?)\n"


def test_installed_wheel_lists_its_modules(installed: Path, tmp_path: Path) -> None:
    done = _run([str(installed / "chaosrun"), "modules"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "chaos modules:" and "probes:" in lines
    names = {line.split()[0] for line in lines if line.startswith("  ")}
    assert {"fill_disk", "kill_process", "port_open", "file_exists"} <= names
    assert {"http", "dns", "ssh_login"} <= names  # the monitor probes' declarations ship in schemas/


def test_installed_wheel_plans_a_scenario(installed: Path, tmp_path: Path) -> None:
    shutil.copy(ROOT / "scenarios" / "web_outage.yaml", tmp_path / "web.yaml")
    done = _run([str(installed / "chaosrun"), "plan", "web.yaml", "--seed", "1"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("plan for web-outage (web.yaml, sha256 ")


def test_installed_wheel_reads_its_data_from_inside_the_package(installed: Path, tmp_path: Path) -> None:
    code = "from chaosrun._resources import data_dir; print(data_dir('schemas')); print(data_dir('grammar'))"
    done = _run([str(installed / "python"), "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        assert "site-packages/chaosrun/_data/" in line
        assert not line.startswith(str(ROOT))


def test_the_proctor_page_ships_in_the_wheel(installed: Path, tmp_path: Path) -> None:
    probe = "import chaosrun.server as s, pathlib; d = pathlib.Path(s.__file__).parent / 'static'; "
    probe += "print(sorted(p.name for p in d.iterdir()))"
    done = _run([str(installed / "python"), "-c", probe], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['index.html', 'proctor.css', 'proctor.js']"
