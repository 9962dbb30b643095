"""The command line's parser: global options on every command, defaults from
``chaosrun.toml`` and ``CHAOSRUN_*`` (chaosrun.settings), and errors that say what was meant.

``chaosrun.cli`` declares the commands; this module is what every command shares.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from . import settings
from .errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose "invalid choice" says which choice was likely meant."""

    def error(self, message: str) -> NoReturn:
        import re

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            message = message.replace(m.group(0), f"invalid choice: {m.group(1)!r}{did_you_mean(m.group(1), choices)}")
        super().error(message)


def add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """-v, -q, --log-file and --config, on ``parser``: every command takes them, before or
    after its name (a command's copy has no default, so it cannot undo the one before)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="more detail on stderr: every audit record"
    )
    group.add_argument("-q", "--quiet", action="store_true", default=default(False), help="only warnings and errors")
    group.add_argument("--log-file", metavar="FILE", default=default(None), help="append everything, with times")
    group.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        default=default(None),
        help=f"settings from FILE instead of {settings.CONFIG_NAME} files (${settings.CONFIG_FILE_VAR})",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                add_globals(sub, suppress=True)


def _leaf(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], argparse.ArgumentParser]:
    """The command's words (``["lab", "up"]``) and the parser of its options."""
    words: list[str] = []
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if not subs or name is None:
            return words, parser
        words.append(name)
        parser = subs[0].choices[name]


def _commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command's words and parser, ``("lab",)`` and ``("lab", "up")`` alike."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*words, name), child
                yield from _commands(child, (*words, name))


def apply_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, int]:
    """Defaults from chaosrun.toml files and CHAOSRUN_* variables (chaosrun.settings).

    Returns the counts (``verbose``) a setting gives: argparse would add a ``-v`` to a
    count's default, so the caller puts these in only where the command line gave none.
    """
    words, leaf = _leaf(parser, args)
    top = settings.settings_of(parser)
    commands = {w: {k: v for k, v in settings.settings_of(p).items() if k not in top} for w, p in _commands(parser)}
    found = settings.defaults_for(
        words,
        commands,
        top=top,
        explicit=getattr(args, "config_file", None),
        scenario=getattr(args, "scenario", None),
    )
    own = {**commands.get(tuple(words), {}), **top}
    counts = {k: v for k, v in found.items() if isinstance(own[k].action, argparse._CountAction)}
    parser.set_defaults(**{k: v for k, v in found.items() if k in top and k not in counts})
    leaf.set_defaults(**{k: v for k, v in found.items() if k not in top and k not in counts})
    return counts


#: Global options that take a value: skipped when looking for the command's name.
_GLOBAL_WITH_VALUE = ("--log-file", "--config")


def with_command(args: list[str], commands: Sequence[str]) -> list[str]:
    """``args`` with the command named: ``chaosrun SCENARIO.yml`` is ``chaosrun run
    SCENARIO.yml``; a word that is neither a command nor a scenario file is an error
    (with the command it most likely meant)."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        i += 2 if args[i] in _GLOBAL_WITH_VALUE else 1
    if i >= len(args) or args[i] in commands:
        return args
    word = args[i]
    if word == "-" or word.endswith((".yml", ".yaml")) or os.sep in word or os.path.exists(word):
        return [*args[:i], "run", *args[i:]]
    raise UsageError(f"unknown command {word!r}{did_you_mean(word, commands)}; `chaosrun --help` lists them")


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """`` (did you mean 'serve'?)`` when one of ``known`` is close to ``word``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
