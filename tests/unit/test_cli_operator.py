"""The operator's command line: unknown commands, -v/-q, --log-file, chaosrun.toml and
CHAOSRUN_* settings, and shell completion in the real bash, zsh and fish."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosrun import cli
from chaosrun.cli import main

GOOD = "version: 1\nname: t\nsteps:\n  - { id: p, wait: 1s }\n"
CHAOSRUN = str(Path(sys.executable).parent / "chaosrun")


def _run(*argv: str, cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with a scenario, and a user config dir of its own (no CHAOSRUN_* set)."""
    for name in [k for k in os.environ if k.startswith("CHAOSRUN_") and k not in ("CHAOSRUN_KEY", "CHAOSRUN_GO")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "exam").mkdir()
    (tmp_path / "exam" / "s.yaml").write_text(GOOD)
    yield tmp_path


def _settled(argv: list[str]) -> dict[str, object]:
    """The options ``main`` would run the command with."""
    parser = cli._parser()
    argv = cli.with_command(argv, cli.COMMANDS)
    counts = cli.apply_settings(parser, parser.parse_args(argv))
    settled = vars(parser.parse_args(argv))
    return {**settled, **{k: settled[k] or v for k, v in counts.items()}}


# -- unknown commands ---------------------------------------------------------------------


def test_a_mistyped_command_is_an_unknown_command_with_a_suggestion(home: Path) -> None:
    code, out, err = _run("serv", cwd=home)
    assert (code, out) == (2, "")
    assert err == "chaosrun: unknown command 'serv' (did you mean 'serve'?); `chaosrun --help` lists them\n"
    code, _, err = _run("frobnicate", "x", cwd=home)
    assert code == 2 and err == "chaosrun: unknown command 'frobnicate'; `chaosrun --help` lists them\n"


def test_the_command_list_is_the_parsers() -> None:
    parser = cli._parser()
    subs = next(a for a in parser._actions if a.dest == "command")
    assert sorted(cli.COMMANDS) == sorted(subs.choices or ())


def test_a_scenario_file_alone_is_still_a_run(home: Path) -> None:
    assert cli.with_command(["exam/s.yaml"], cli.COMMANDS) == ["run", "exam/s.yaml"]
    assert cli.with_command(["-v", "x.yml", "-i", "inv"], cli.COMMANDS) == ["-v", "run", "x.yml", "-i", "inv"]
    assert cli.with_command(["--log-file", "l", "lint", "x"], cli.COMMANDS) == ["--log-file", "l", "lint", "x"]


def test_a_mistyped_action_or_choice_says_what_was_meant(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["lab", "upp"])
    assert exit_.value.code == 2
    assert "invalid choice: 'upp' (did you mean 'up'?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plan", "exam/s.yaml", "--format", "jsn"])
    assert "invalid choice: 'jsn' (did you mean 'json'?)" in capsys.readouterr().err


# -- -q, -v, --log-file -------------------------------------------------------------------


def test_quiet_leaves_out_the_notes_and_global_options_go_before_or_after_the_command(home: Path) -> None:
    assert _run("lint", "exam/s.yaml", cwd=home) == (0, "", "ok: 1 file checked\n")
    assert _run("lint", "-q", "exam/s.yaml", cwd=home) == (0, "", "")
    assert _run("-q", "lint", "exam/s.yaml", cwd=home) == (0, "", "")


def test_the_log_file_gets_the_command_line_the_error_and_the_exit_status(home: Path) -> None:
    log = home / "logs" / "chaosrun.log"
    code, out, _ = _run("--log-file", str(log), "plan", "exam/missing.yaml", cwd=home)
    assert code == 1 and "cannot read file" in out
    lines = log.read_text().splitlines()
    assert lines[0].endswith(f"DEBUG   chaosrun --log-file {log} plan exam/missing.yaml")
    assert "ERROR" in lines[1] and "exam/missing.yaml:1:1: cannot read file" in lines[1]
    assert lines[2].endswith("exit status 1")
    _run("plan", "exam/s.yaml", "--seed", "3", "--log-file", str(log), cwd=home)
    assert log.read_text().splitlines()[-1].endswith("exit status 0")  # appended


def test_an_unwritable_log_file_is_a_usage_error(home: Path) -> None:
    (home / "file").write_text("")
    code, _, err = _run("--log-file", str(home / "file" / "x.log"), "modules", cwd=home)
    assert code == 2 and err.startswith(f"chaosrun: --log-file {home / 'file' / 'x.log'}: ")


# -- settings: chaosrun.toml and CHAOSRUN_* -----------------------------------------------


def test_settings_come_from_the_command_line_then_the_environment_then_the_files(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = home / "config" / "chaosrun" / "chaosrun.toml"
    user.parent.mkdir(parents=True)
    user.write_text('parallel = 5\naudit = "audit-user"\n[verify]\nstrict = true\n')
    scenario = str(home / "exam" / "s.yaml")
    settled = _settled(["verify", scenario])
    assert (settled["parallel"], settled["strict"]) == (5, True)
    assert settled["audit"] == str(user.parent / "audit-user")  # relative to its file
    assert _settled(["run", scenario])["parallel"] == 5  # a top-level key: every command with it

    (home / "exam" / "chaosrun.toml").write_text("parallel = 7\n[run]\nparallel = 8\nplain = true\n")
    assert _settled(["verify", scenario])["parallel"] == 7  # beside the scenario, over the user's
    assert (_settled(["run", scenario])["parallel"], _settled(["run", scenario])["plain"]) == (8, True)

    monkeypatch.setenv("CHAOSRUN_PARALLEL", "9")
    monkeypatch.setenv("CHAOSRUN_PLAIN", "no")
    assert (_settled(["run", scenario])["parallel"], _settled(["run", scenario])["plain"]) == (9, False)
    assert _settled(["run", scenario, "--parallel", "10"])["parallel"] == 10

    monkeypatch.setenv("CHAOSRUN_VERBOSE", "2")
    assert _settled(["run", scenario])["verbose"] == 2
    assert _settled(["-v", "run", scenario])["verbose"] == 1


def test_an_explicit_config_file_replaces_both_files(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "exam" / "chaosrun.toml").write_text("parallel = 7\n")
    (home / "other.toml").write_text("parallel = 3\n")
    scenario = str(home / "exam" / "s.yaml")
    assert _settled(["run", scenario, "--config", str(home / "other.toml")])["parallel"] == 3
    monkeypatch.setenv("CHAOSRUN_CONFIG_FILE", str(home / "other.toml"))
    assert _settled(["run", scenario])["parallel"] == 3
    code, _, err = _run("run", scenario, "--config", str(home / "none.toml"), cwd=home)
    assert code == 2 and err == f"chaosrun: {home / 'none.toml'}: no such config file\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "parallel = 5\n[verify]\nparalel = 3\n",
            "3:1: unknown setting 'paralel' for verify (did you mean 'parallel'?)",
        ),
        ("  parallel = 'many'\n", "1:3: parallel wants a whole number, got 'many'"),
        ("[veriffy]\nstrict = true\n", "1:1: no command 'veriffy' (did you mean 'verify'?)"),
        ("[lab.up]\nmemory = 512\naccel = 'fast'\n", "3:1: accel is one of auto, kvm, tcg, not 'fast'"),
        ("plain = 'yes'\n", "1:1: plain wants true or false"),
        ("\nparallel = 5 5\n", "2:14: Expected newline or end of document after a statement"),
    ],
)
def test_a_bad_config_file_names_its_line_and_column(home: Path, text: str, message: str) -> None:
    (home / "exam" / "chaosrun.toml").write_text(text)
    code, out, err = _run("plan", "exam/s.yaml", cwd=home)  # checked whole, whatever the command
    assert (code, out) == (2, "")
    assert err.startswith(f"chaosrun: {home / 'exam' / 'chaosrun.toml'}")
    assert message in err


def test_a_bad_variable_is_named(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSRUN_PARALLEL", "lots")
    code, _, err = _run("run", "exam/s.yaml", cwd=home)
    assert (code, err) == (2, "chaosrun: CHAOSRUN_PARALLEL: parallel wants a whole number, got 'lots'\n")


# -- shell completion ---------------------------------------------------------------------


def _complete(words: str) -> list[str]:
    out = io.StringIO()
    argv = words.split(" ")
    with contextlib.redirect_stdout(out):
        assert main(["completion", "--cword", str(len(argv) - 1), "--", *argv]) == 0
    return [line.split("\t")[0] for line in out.getvalue().splitlines()]


def test_completion_walks_the_parser() -> None:
    assert _complete("chaosrun ver") == ["verify"]
    assert _complete("chaosrun lab ") == ["up", "status", "down"]
    assert "--boot-timeout" in _complete("chaosrun verify --b")
    assert _complete("chaosrun run x.yml --format j") == ["json", "junit"]
    assert _complete("chaosrun run ") == ["__files__"]
    assert _complete("chaosrun run x.yml -i ") == ["__files__"]
    assert _complete("chaosrun completion ") == ["bash", "zsh", "fish"]
    assert "--log-file" in _complete("chaosrun token create --")  # global options everywhere


def _shell(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: scripts/install installs it"
    return found


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(CHAOSRUN).parent}:{os.environ['PATH']}"}


def test_bash_completes_commands_options_and_choices() -> None:
    script = f"""
source <({CHAOSRUN} completion bash)
ask() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _chaosrun_complete; echo "${{COMPREPLY[*]}}"; }}
ask chaosrun ve
ask chaosrun lab d
ask chaosrun verify x.yml --format c
complete -p chaosrun
"""
    done = subprocess.run([_shell("bash"), "-c", script], capture_output=True, text=True, env=_env(), check=True)
    assert done.stdout.splitlines() == ["verify", "down", "csv", "complete -F _chaosrun_complete chaosrun"]


def test_zsh_completes_through_its_completion_system(tmp_path: Path) -> None:
    script = f"""
autoload -U compinit && compinit -u -d {tmp_path / "zcompdump"}
source <({CHAOSRUN} completion zsh)
_describe() {{ local name=$4; print -l -- ${{(P)name}} }}
_files() {{ print -- FILES }}
words=(chaosrun token c); CURRENT=3; _chaosrun
words=(chaosrun lint ""); CURRENT=3; _chaosrun
print -- $_comps[chaosrun]
"""
    done = subprocess.run([_shell("zsh"), "-f", "-c", script], capture_output=True, text=True, env=_env(), check=True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("create:a new token for NAME")
    assert lines[1:] == ["FILES", "_chaosrun"]


def test_fish_completes_through_complete_c(tmp_path: Path) -> None:
    (tmp_path / "exam.yaml").write_text(GOOD)
    script = f"""
chaosrun completion fish | source
complete -C'chaosrun mod'
complete -C'chaosrun run --format j'
complete -C'chaosrun lint {tmp_path}/ex'
"""
    done = subprocess.run([_shell("fish"), "-c", script], capture_output=True, text=True, env=_env(), check=True)
    assert done.stdout.splitlines() == [
        "modules\tthe catalogue of chaos and probe modules",
        "json",
        "junit",
        f"{tmp_path}/exam.yaml",
    ]


# -- start-up -----------------------------------------------------------------------------


def test_the_command_line_loads_no_parser_libraries_until_a_command_needs_them() -> None:
    """--version, --help and a shell's TAB load neither YAML, the grammar, JSON Schema nor
    the runtime (bench/bench_startup.py measures what that saves)."""
    check = (
        "import sys, contextlib, io\n"
        "from chaosrun.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['completion', '--cword', '1', '--', 'chaosrun', 'r'])\n"
        "heavy = {'yaml', 'lark', 'jsonschema', 'trio', 'asyncssh', 'rich', 'cryptography'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_env_per_choices_are_the_inventorys() -> None:
    from chaosrun.inventory import ENV_PER

    assert cli.ENV_PER == ENV_PER
