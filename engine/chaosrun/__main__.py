"""The ``chaosrun`` program (``python -m chaosrun`` and the installed script)."""

import sys


def console() -> None:
    """:func:`chaosrun.cli.main`, then exit with its status. The objects alive at the end are
    frozen out of the garbage collector first: the interpreter's last collection would
    otherwise walk every module a run loaded (~100 ms; atexit handlers and finalizers still
    run). ``main`` itself, called in a process that goes on, freezes nothing."""
    from .cli import main

    code = main()
    import gc

    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
