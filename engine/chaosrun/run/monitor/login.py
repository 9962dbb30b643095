"""Run stage, monitor probes: ``ssh_login``, a login to the target as a given user.

The SSH itself is ``run.ssh.try_login`` (asyncssh stays behind that module); here are the
parameters, the host key settings (the target's own unless ``known_hosts`` is given) and
the result.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..connection import TargetError
from .common import Answer, ProbeCall, ProbeError, host_port, since

DEFAULT_TIMEOUT_MS = 10000


def port_of(call: ProbeCall) -> int:
    return int(call.params.get("port") or call.target.port)


async def ssh_login(call: ProbeCall) -> Answer:
    """Log in and run ``id -un``.

    Raises:
        ProbeError: neither ``identity`` nor ``password``, or a key or known_hosts file
            that cannot be read (the examiner's problem, not the candidate's).
    """
    from ..ssh import HostSpec, try_login  # asyncssh only when a scenario logs in

    identity, password = call.path("identity"), call.params.get("password")
    if identity is None and password is None:
        raise ProbeError("ssh_login needs identity or password")
    known_hosts = call.path("known_hosts")
    insecure = call.target.insecure and known_hosts is None
    if known_hosts is None and not insecure:
        known_hosts = call.target.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        if not os.path.isfile(known_hosts):
            raise ProbeError(f"known_hosts file {known_hosts} not found (give known_hosts, or an insecure target)")
    spec = HostSpec(
        host=call.host,
        port=port_of(call),
        user=str(call.params["user"]),
        identity=Path(identity) if identity else None,
        known_hosts=Path(known_hosts) if known_hosts else None,
        insecure=insecure,
    )
    secret = None if password is None else str(password)
    start = time.monotonic()
    result = {"ok": False, "user": "", "error": "", "duration_ms": 0.0}
    try:
        done = await try_login(spec, password=secret, timeout=call.seconds(DEFAULT_TIMEOUT_MS))
    except TargetError as exc:
        # the connector's wording names public keys; here a password may have been refused too
        result["error"] = "permission denied" if exc.reason.startswith("permission denied") else exc.reason
    else:
        if done.ok:
            result.update(ok=True, user=done.stdout.decode("utf-8", "replace").strip())
        else:
            why = done.stderr.decode("utf-8", "replace").strip()[:200] or f"exit status {done.exit_status}"
            result["error"] = f"logged in, but `id -un` failed: {why}"
    result["duration_ms"] = since(start)
    where = f"{spec.user}@{host_port(spec.host, spec.port)}"
    return Answer(result, f"{where}: " + (f"logged in as {result['user']}" if result["ok"] else str(result["error"])))
