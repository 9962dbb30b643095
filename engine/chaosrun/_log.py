"""The command line's log: ``chaosrun: ...`` notes on stderr, and everything in ``--log-file``.

The ``chaosrun`` logger carries what an operator may want besides the report: notes
(INFO: "building 3 modules", "resuming ..."), warnings, and at DEBUG one line per audit
record (every listen, deploy, exec, result of every step). On stderr ``-q`` keeps warnings
and errors, the default adds notes, ``-v`` adds the DEBUG lines. ``--log-file`` always gets
everything, with times. As a library chaosrun logs nothing anywhere until a caller says so.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .errors import UsageError

LOG = logging.getLogger("chaosrun")
LOG.addHandler(logging.NullHandler())

_OURS = "_chaosrun_cli"
#: ``extra=`` of a record meant for the log file only (the command line, an error already printed).
FILE_ONLY = {"file_only": True}


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and rich's Live replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):
            return
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never end the run
            self.handleError(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"chaosrun: error: {text}"
        if record.levelno >= logging.WARNING:
            return f"chaosrun: warning: {text}"
        return f"chaosrun: {text}"


def setup(verbosity: int, log_file: str | None) -> None:
    """Send the ``chaosrun`` logger to stderr at ``verbosity`` (-1 quiet, 0, 1 verbose) and,
    with ``log_file``, everything to that file (appended).

    Raises:
        UsageError: the log file cannot be opened.
    """
    for handler in [h for h in LOG.handlers if getattr(h, _OURS, False)]:
        LOG.removeHandler(handler)
        handler.close()
    stderr = _Stderr()
    stderr.setFormatter(_Format())
    stderr.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)
    handlers: list[logging.Handler] = [stderr]
    if log_file:
        try:
            Path(log_file).expanduser().parent.mkdir(parents=True, exist_ok=True)
            to_file = logging.FileHandler(Path(log_file).expanduser(), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--log-file {log_file}: {exc.strerror or exc}") from None
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
        to_file.setLevel(logging.DEBUG)
        handlers.append(to_file)
    for handler in handlers:
        setattr(handler, _OURS, True)
        LOG.addHandler(handler)
    LOG.setLevel(min(h.level for h in handlers))
    LOG.propagate = False


def teardown() -> None:
    """Close what :func:`setup` opened (``main`` may run many times in one process)."""
    for handler in [h for h in LOG.handlers if getattr(h, _OURS, False)]:
        LOG.removeHandler(handler)
        handler.close()
    LOG.setLevel(logging.NOTSET)
    LOG.propagate = True
