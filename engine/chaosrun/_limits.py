"""Open files: each environment holds an SSH connection and a listener per running step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._log import LOG

if TYPE_CHECKING:
    from .inventory import Inventory


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit toward the hard limit (each environment holds
    an SSH connection and a listener per running step). Returns the soft limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


def check_fd_limit(inventory: Inventory | None, parallel: int, environments: int | None = None) -> None:
    """Raise the open-file limit; say so when it stays too low for the run."""
    count = environments if environments is not None else len(inventory.environments) if inventory else 1
    limit = raise_fd_limit()
    if limit < 4 * min(parallel, count) + 64:
        LOG.warning(
            "only %d open files allowed; raise `ulimit -n` for %d environments at --parallel %d", limit, count, parallel
        )
