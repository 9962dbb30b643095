"""The cache of linted scenarios and inventories: a second ``run`` or ``verify`` of the same
files reads no YAML, grammar or JSON Schema.

An entry is the result of loading a file -- the ``Scenario`` with its lint warnings, or the
``Inventory`` -- pickled under the SHA-256 of everything the result depends on: the file's
bytes, its name as given and where it is (relative paths in it resolve from there), the
``--var`` assignments or ``--env-per``, and the code that reads it (chaosrun's own Python,
the grammar, the schemas and the modules' declarations, by name, size and mtime). A change
to any of them is another key; files with errors are never cached, so their errors are
found and reported afresh each time.

The folder is ``$XDG_CACHE_HOME/chaosrun/linted`` (``~/.cache/chaosrun/linted``), made
0700; an entry is read only from a folder this user owns that nobody else can write to,
and one that does not load (a chaosrun upgrade, a torn file) is dropped and rebuilt.
``CHAOSRUN_LINT_CACHE=off`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ._log import LOG

if TYPE_CHECKING:
    from ._spans import ScenarioError
    from .inventory_model import Inventory
    from .scenario import Scenario

__all__ = ["cache_folder", "code_fingerprint", "load_inventory_cached", "load_scenario_cached", "with_vars"]

#: Entries kept; the oldest go first. An entry is ~10 KB for a real scenario.
MAX_ENTRIES = 256
#: Bytes read of a file: past ``MAX_YAML_BYTES`` (1 MiB), so the loader refuses a bigger one.
READ_LIMIT = 2 * 1024 * 1024
_FORMAT = b"chaosrun-linted-1"
T = TypeVar("T")


def cache_folder() -> Path | None:
    """The cache's folder, or None when ``CHAOSRUN_LINT_CACHE=off``."""
    if os.environ.get("CHAOSRUN_LINT_CACHE", "").lower() in ("off", "0", "no", "false"):
        return None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(os.path.expanduser("~")) / ".cache"
    return base / "chaosrun" / "linted"


_fingerprint: bytes | None = None


def code_fingerprint() -> bytes:
    """A digest of the code and data that turn a file into a Scenario or an Inventory: each
    file's path, size and mtime (stat only; ~200 files, a millisecond or two)."""
    global _fingerprint
    if _fingerprint is None:
        from . import __version__
        from ._resources import data_dir

        digest = hashlib.sha256(__version__.encode())
        roots = [Path(__file__).parent, data_dir("grammar"), data_dir("schemas"), data_dir("chaos_go") / "modules"]
        for root in roots:
            for path in sorted(_files(root, root.name == "modules")):
                info = path.stat()
                digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
        _fingerprint = digest.digest()
    return _fingerprint


def _files(root: Path, declarations_only: bool) -> list[Path]:
    if declarations_only:
        return list(root.glob("*/params.schema.json"))
    return [p for p in root.rglob("*") if p.suffix in (".py", ".lark", ".json") and "__pycache__" not in p.parts]


def _key(kind: str, path: str, text: str, extra: Sequence[str]) -> str:
    digest = hashlib.sha256(_FORMAT + b"\0" + code_fingerprint())
    for part in (kind, path, os.path.abspath(path), *extra):
        digest.update(b"\0" + part.encode("utf-8", "surrogateescape"))
    digest.update(b"\0" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    return digest.hexdigest()


def _safe_folder(folder: Path) -> bool:
    """The folder is ours and nobody else can write to it (a pickle is code)."""
    try:
        info = folder.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def _read(path: str) -> str | None:
    """The file's text as ``parse.read_source`` reads it (UTF-8, universal newlines), or
    None when it cannot be read (the loader then says why, with the file's name)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(READ_LIMIT)
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except (OSError, UnicodeDecodeError):
        return None


def _cached(kind: str, path: str, extra: Sequence[str], load: Callable[[str], T]) -> T:
    """``load(text)``'s result from the cache when the key matches, else ``load(text)``,
    stored. A file that cannot be read is read as the loaders read it (``read_source``),
    which says why with the file's name."""
    text = _read(path)
    if text is None:
        from .parse import read_source

        return load(read_source(path)[0])
    folder = cache_folder()
    if folder is None:
        return load(text)
    entry = folder / _key(kind, path, text, extra)
    if _safe_folder(folder):
        try:
            with open(entry, "rb") as fh:
                if fh.read(len(_FORMAT)) == _FORMAT:
                    value: T = pickle.load(fh)
                    return value
        except FileNotFoundError:
            pass
        except Exception as exc:  # a torn entry, classes that moved: load again, store anew
            LOG.debug("linted cache: dropping %s (%s)", entry.name, exc)
            entry.unlink(missing_ok=True)
    value = load(text)
    _store(folder, entry, value)
    return value


def _store(folder: Path, entry: Path, value: object) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not _safe_folder(folder):
            LOG.debug("linted cache: %s is not this user's alone; not caching", folder)
            return
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(_FORMAT)
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
        _prune(folder)
    except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
        LOG.debug("linted cache: not stored (%s)", exc)


def _prune(folder: Path) -> None:
    entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda e: e.stat().st_mtime_ns)
    for old in entries[: len(entries) - MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            os.unlink(old.path)


def load_scenario_cached(path: str, assignments: Sequence[str] = ()) -> tuple[Scenario, list[ScenarioError]]:
    """The linted scenario at ``path`` with ``--var`` ``assignments`` applied, and its lint
    warnings (``api.load_exam``'s first half).

    Raises:
        ScenarioErrors: every error of the file (never cached).
        UsageError: an assignment names no variable of the scenario.
    """

    def load(text: str) -> tuple[Scenario, list[ScenarioError]]:
        from ._spans import ScenarioErrors
        from .lint import check_scenario_text, lint_scenario, scenario_warnings

        loaded, errors = check_scenario_text(text, path)
        if errors or loaded is None:
            raise ScenarioErrors(errors)
        warnings = scenario_warnings(loaded)
        if assignments:
            loaded = with_vars(loaded, assignments)
            if errors := lint_scenario(loaded):  # the new values must still fit the modules
                raise ScenarioErrors(errors)
        return loaded, warnings

    return _cached("scenario", path, ["--var", *assignments], load)


def with_vars(scenario: Scenario, assignments: Sequence[str]) -> Scenario:
    """The scenario with ``--var NAME=VALUE`` applied (VALUE read as a YAML scalar).

    Raises:
        UsageError: an assignment is not NAME=VALUE, or names no variable of the scenario.
    """
    import dataclasses

    import yaml

    from .errors import UsageError

    values = dict(scenario.vars)
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--var wants NAME=VALUE, got {item!r}")
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise UsageError(f"--var {name}: the scenario has no variable {name!r} (it has: {known})")
        values[name] = yaml.safe_load(text) if text else ""
    return dataclasses.replace(scenario, vars=values)


def load_inventory_cached(path: str, env_per: str = "host") -> Inventory:
    """The inventory at ``path`` (``inventory.load_inventory``), from the cache when it can.

    Raises:
        ScenarioErrors: every error of the file (never cached).
    """

    def load(text: str) -> Inventory:
        from ._spans import ScenarioErrors
        from .inventory import parse_inventory

        inventory, errors = parse_inventory(text, path, env_per=env_per)
        if errors or inventory is None:
            raise ScenarioErrors(errors)
        return inventory

    return _cached("inventory", path, ["--env-per", env_per], load)
