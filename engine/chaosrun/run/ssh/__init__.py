"""Run stage, SSH transport: the default connector, a trio-native SSH client over asyncssh.

This is the one package of the runtime that imports asyncssh (``core``: settings,
errors and the asyncio side; ``tunnel``: the remote port forward; ``client``: the
connection, the connector and ``try_login``). asyncssh runs on the asyncio
loop thread of ``run.bridge``; nothing asyncio-flavoured leaves this module: callers get
plain data (``ExecResult``, ``str``, ``bytes``) or this module's classes, which implement
the connection seam (``run.connection``): ``SshConnector`` opens an ``SshConnection`` per
target.

Remote processes and cancellation: closing an SSH channel does not stop the command behind
it (OpenSSH leaves a process without a pty running, and refuses the SSH ``signal`` request
for root logins). So every command runs as ``echo $$; COMMAND`` (the remote shell is a
session leader, so ``$$`` is its process group id; the line is stripped from stdout), and on
cancel/timeout a second channel runs ``kill -s TERM -- -PGID``, waits up to ``KILL_GRACE``,
then sends ``KILL`` and closes the channel. Cancellation therefore returns within about
``KILL_GRACE`` even if the remote command ignores SIGTERM. Commands that detach into their
own session (``setsid``, daemons) are not followed.

Typical use::

    async with open_bridge():                      # once, around a whole run
        async with open_ssh(HostSpec("10.0.0.5", known_hosts=kh)) as conn:
            result = await conn.run("uname -m")
"""

import warnings

from ..bridge import open_bridge
from ..connection import ExecResult

# asyncssh's annotations name cryptography's DSA classes, and cryptography (47 and later)
# warns on each, at every import: five lines on every run's stderr. chaosrun's connections
# never offer or accept DSA keys (OpenSSH dropped them); the warning says nothing about them.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    from .client import Process, SshConnection, SshConnector, open_ssh, try_login
    from .core import KILL_GRACE, HostSpec, RemoteFileExists, SshError, SshTimeout

__all__ = [
    "KILL_GRACE",
    "ExecResult",
    "HostSpec",
    "Process",
    "RemoteFileExists",
    "SshConnection",
    "SshConnector",
    "SshError",
    "SshTimeout",
    "open_bridge",
    "open_ssh",
    "try_login",
]
