"""Test support, apart from the core (as ``trio.testing``): local SSH servers and a Python
callback client, for chaosrun's own tests, ``chaosrun demo`` and users' tests.

- :func:`local_sshd`: a throwaway OpenSSH ``sshd`` on 127.0.0.1 (``chaosrun.testing.sshd``).
- :func:`local_asyncssh_server`: an in-process SSH server for machines without OpenSSH or
  root (``chaosrun.testing.asyncssh_server``).
- :func:`send_callback`: the module binary's side of the callback protocol
  (``chaosrun.testing.callback``).

The core never imports this package. ``local_asyncssh_server`` and ``send_callback`` are
imported on first use, since they bring asyncssh and trio, which a test that only needs
an sshd does not.
"""

from typing import TYPE_CHECKING, Any

from .sshd import LocalSshd, LocalSshdError, local_sshd, write_known_hosts

if TYPE_CHECKING:
    from .asyncssh_server import LocalAsyncsshServer, local_asyncssh_server
    from .callback import send_callback

__all__ = [
    "LocalAsyncsshServer",
    "LocalSshd",
    "LocalSshdError",
    "local_asyncssh_server",
    "local_sshd",
    "send_callback",
    "write_known_hosts",
]


def __getattr__(name: str) -> Any:
    if name in ("LocalAsyncsshServer", "local_asyncssh_server"):
        from . import asyncssh_server

        return getattr(asyncssh_server, name)
    if name == "send_callback":
        from . import callback

        return callback.send_callback
    raise AttributeError(f"module 'chaosrun.testing' has no attribute {name!r}")
