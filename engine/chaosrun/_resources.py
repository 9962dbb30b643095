"""Find the data folders (grammar/, schemas/, chaos_go/, scenarios/).

In an installed wheel they live in ``chaosrun/_data/``; in a checkout (or an editable
install) they are top-level folders of the repository. This is the only place that knows.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """Return the folder ``name`` (e.g. ``"grammar"``), wherever chaosrun is installed.

    Raises:
        FileNotFoundError: neither an installed nor a checkout copy exists.
    """
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"chaosrun data folder {name!r} not found (broken install?)")
