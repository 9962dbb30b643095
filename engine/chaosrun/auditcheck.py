"""Audit stage, checking side: which key an audit log's seal must be signed by, and the check.

What ``chaosrun audit verify`` and ``chaosrun demo`` share. The check itself (hash chain,
seal, signature) is :func:`chaosrun.run.audit.verify_file`; this module decides which key
to trust.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .run.audit import Verdict, verify_file
from .run.signing import MonitorKeyError, default_key_path, load_public

__all__ = ["trusted_key", "verify_audit_log"]


def trusted_key(key: Path | None = None) -> Ed25519PublicKey | None:
    """The public key an audit log's seal must be signed by.

    Args:
        key: a ``.pub`` file (base64 raw key) or a private key file; for a private key, the
            ``.pub`` beside it is read when there is one. None: the local monitor key
            (``$CHAOSRUN_KEY``, else ``~/.config/chaosrun/monitor_ed25519``) if it exists.

    Returns:
        The key, or None when ``key`` is None and there is no local monitor key: then the
        seal can only be checked against the key embedded in the log.

    Raises:
        MonitorKeyError: the key file cannot be read or holds no Ed25519 key.
    """
    path = key if key is not None else default_key_path()
    public = path.with_name(path.name + ".pub")
    if key is None and not path.exists() and not public.exists():
        return None
    source = public if public.exists() else path
    try:
        return load_public(source)
    except OSError as exc:
        raise MonitorKeyError(f"cannot read {source}: {exc.strerror or exc}") from None


def verify_audit_log(path: Path, key: Path | None = None) -> Verdict:
    """Check an audit log's hash chain and seal, signed by :func:`trusted_key` ``(key)``.

    Returns:
        The verdict; ``message`` names the first broken record, or says the log holds.

    Raises:
        MonitorKeyError: ``key`` (or the local monitor key) is unusable.
    """
    return verify_file(path, trusted_key(key))
