"""Option defaults from ``chaosrun.toml`` files and ``CHAOSRUN_*`` variables.

Every option of a command (not its positional arguments) can be given three more ways than
on the command line, and the first that gives it wins::

    the command line              --parallel 200
    the environment               CHAOSRUN_PARALLEL=200
    chaosrun.toml beside the scenario
    the user's chaosrun.toml      ~/.config/chaosrun/chaosrun.toml ($XDG_CONFIG_HOME)
    (or the one --config / CHAOSRUN_CONFIG_FILE names, instead of both files)

A file's top-level keys apply to every command that has that option; a table applies to one
command (``[verify]``, ``[lab.up]``). Keys are the long option names, ``-`` or ``_`` alike
(``log-file``, ``boot_timeout``). Relative paths in a file are relative to that file's folder.

Everything is checked before the command runs: an unknown key, a value of the wrong type or
not among the choices is an error naming the file, line and column (or the variable).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["CONFIG_NAME", "ENV_PREFIX", "ConfigError", "Setting", "defaults_for", "settings_of", "user_config"]

CONFIG_NAME = "chaosrun.toml"
ENV_PREFIX = "CHAOSRUN_"
#: The variable naming a config file; ``CHAOSRUN_CONFIG`` is the modules' own (docs/protocol.md).
CONFIG_FILE_VAR = "CHAOSRUN_CONFIG_FILE"

#: Options whose value is a path: relative ones in a file are taken from the file's folder.
_PATH_DESTS = frozenset(
    {"audit", "key", "log_file", "data", "inventory", "cert", "tls_key", "monitor_key", "files", "resume", "since"}
)
#: Options that only make sense for one invocation: never from a file or the environment.
_NOT_SETTINGS = frozenset({"help", "version", "config_file", "var", "resume", "from_log", "since", "output"})

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(UsageError):
    """A config file or a variable gives a setting chaosrun cannot take."""


@dataclass(frozen=True)
class Setting:
    """One option of one command, as a file or the environment may set it."""

    name: str  # the key: the dest, with '_' (``boot_timeout``)
    action: argparse.Action

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.name.upper()


def settings_of(parser: argparse.ArgumentParser) -> dict[str, Setting]:
    """The options of ``parser`` that a file or the environment may set, by key."""
    found: dict[str, Setting] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in _NOT_SETTINGS or action.dest == argparse.SUPPRESS:
            continue
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        found[action.dest] = Setting(action.dest, action)
    return found


def user_config() -> Path:
    """``$XDG_CONFIG_HOME/chaosrun/chaosrun.toml``, else ``~/.config/chaosrun/chaosrun.toml``."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "chaosrun" / CONFIG_NAME


def config_files(explicit: str | None, scenario: str | None) -> list[Path]:
    """The files read, lowest precedence first: the user's, then the one beside the scenario;
    or only ``explicit`` (``--config`` / ``$CHAOSRUN_CONFIG_FILE``), which must exist."""
    explicit = explicit or os.environ.get(CONFIG_FILE_VAR) or None
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        return [path]
    files = [user_config()]
    if scenario and scenario != "-":
        files.append(Path(scenario).resolve().parent / CONFIG_NAME)
    seen: list[Path] = []
    for f in files:
        if f.is_file() and f.resolve() not in [s.resolve() for s in seen]:
            seen.append(f)
    return seen


def defaults_for(
    command: Sequence[str],
    commands: Mapping[tuple[str, ...], Mapping[str, Setting]],
    *,
    top: Mapping[str, Setting],
    explicit: str | None = None,
    scenario: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The defaults the files and the environment give ``command`` (``("lab", "up")``).

    ``commands`` holds every command's options by its words (``("lab",)`` and ``("lab",
    "up")`` alike), ``top`` the options every command takes (``verbose``). The whole of
    each file is checked, not only what ``command`` reads: a file that is wrong for
    ``verify`` is an error for ``plan`` too.

    Raises:
        ConfigError: naming the file, line and column, or the variable.
    """
    environ = os.environ if environ is None else environ
    own = {**commands.get(tuple(command), {}), **top}
    values: dict[str, Any] = {}
    for path in config_files(explicit, scenario):
        values.update(_from_file(path, tuple(command), commands, top))
    for name, setting in own.items():
        raw = environ.get(setting.variable)
        if raw is not None:
            values[name] = _convert(setting, raw, setting.variable, None)
    return values


def _from_file(
    path: Path,
    command: tuple[str, ...],
    commands: Mapping[tuple[str, ...], Mapping[str, Setting]],
    top: Mapping[str, Setting],
) -> dict[str, Any]:
    """What ``path`` gives ``command``, after checking all of it."""
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(exc))
        raise ConfigError(f"{path}:{m[2]}:{m[3]}: {m[1]}" if m else f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    base = path.resolve().parent
    anywhere: dict[str, Setting] = dict(top)
    for options in commands.values():
        for name, setting in options.items():
            anywhere.setdefault(name, setting)
    values: dict[str, dict[str, Any]] = {}  # by the table it came from: deeper wins

    def walk(table: Mapping[str, Any], words: tuple[str, ...]) -> None:
        options = {**commands[words], **top} if words else anywhere
        for key, value in table.items():
            name = key.replace("-", "_")
            if isinstance(value, dict):
                if (*words, key) not in commands and not words and name in anywhere:
                    raise _error(path, text, words, key, f"{key} is a setting, not a table")
                if (*words, key) not in commands:
                    known = sorted(c[-1] for c in commands if c[:-1] == words)
                    raise _error(path, text, words, key, f"no command {key!r}{_did_you_mean(key, known)}")
                walk(value, (*words, key))
                continue
            if name not in options:
                what = " ".join(words) if words else "any command"
                hint = _did_you_mean(name, sorted(options))
                raise _error(path, text, words, key, f"unknown setting {key!r} for {what}{hint}")
            mine = {**commands.get(command, {}), **top}
            setting = mine[name] if not words and name in mine else options[name]
            converted = _convert(setting, value, _where(path, text, words, key), base)
            if command[: len(words)] == words and name in mine:
                values.setdefault(" ".join(words), {})[name] = converted

    walk(data, ())
    found: dict[str, Any] = {}
    for words in sorted(values, key=lambda w: len(w.split())):
        found.update(values[words])
    return found


def _convert(setting: Setting, value: Any, where: str, base: Path | None) -> Any:
    """``value`` (a TOML value, or a variable's text) as the option would take it."""
    action = setting.action
    from_text = isinstance(value, str) and base is None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if from_text:
            text = value.strip().lower()
            if text not in _TRUE | _FALSE:
                raise ConfigError(f"{where}: {setting.name} wants true or false, got {value!r}")
            value = text in _TRUE
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {setting.name} wants true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._CountAction):
        if from_text:
            value = _int(value, where, setting.name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: {setting.name} wants a count (0, 1, 2)")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value.split(os.pathsep) if from_text else value
        if not isinstance(items, list):
            raise ConfigError(f"{where}: {setting.name} wants a list")
        return [_one(setting, item, where, base) for item in items]
    return _one(setting, value, where, base)


def _one(setting: Setting, value: Any, where: str, base: Path | None) -> Any:
    action = setting.action
    if action.type is int:
        if isinstance(value, str):
            value = _int(value, where, setting.name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: {setting.name} wants a whole number")
    elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: {setting.name} wants a text value")
    else:
        value = str(value)
        if base is not None and setting.name in _PATH_DESTS:
            value = str(base / Path(value).expanduser())
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise ConfigError(f"{where}: {setting.name} is one of {choices}, not {value!r}")
    return value


def _int(text: str, where: str, name: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: {name} wants a whole number, got {text!r}") from None


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(path: Path, text: str, table: Sequence[str], key: str) -> str:
    line, col = _position(text, table, key)
    return f"{path}:{line}:{col}"


def _error(path: Path, text: str, table: Sequence[str], key: str, message: str) -> ConfigError:
    return ConfigError(f"{_where(path, text, table, key)}: {message}")


def _position(text: str, table: Sequence[str], key: str) -> tuple[int, int]:
    """Line and column of ``key`` inside ``[table]`` (tomllib keeps no positions)."""
    current: tuple[str, ...] = ()
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    for number, line in _lines(text):
        m = header.match(line)
        if m:
            current = tuple(part.strip().strip("\"'") for part in m.group(1).split("."))
            if current == (*table, key):
                return number, line.index("[") + 1
            continue
        m = re.match(rf"^(\s*)[\"']?{re.escape(key)}[\"']?\s*=", line)
        if m and current == tuple(table):
            return number, len(m.group(1)) + 1
    return 1, 1


def _lines(text: str) -> Iterator[tuple[int, str]]:
    yield from enumerate(text.splitlines(), start=1)
