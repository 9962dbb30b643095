"""Audit stage, checking side: which key an audit log's seal must be signed by, and the check.

What ``chaosrun audit verify`` and ``chaosrun demo`` share. The check itself (hash chain,
seal, signature) is :func:`chaosrun.run.audit.verify_file`; this module decides which key
to trust, and fails closed: a seal proves who wrote a log only if its key is one the
examiner trusts, since whoever rewrites a log can re-seal it with a key of their own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import EXIT_USAGE
from .run.audit import Verdict, verify_file
from .run.signing import MonitorKeyError, default_key_path, key_id, load_public, public_b64

__all__ = ["KeyMismatchError", "trusted_key", "verify_audit_log"]


class KeyMismatchError(MonitorKeyError):
    """A key file and the ``.pub`` beside it hold different keys: which one is trusted?"""

    exit_code = EXIT_USAGE


def trusted_key(key: Path | None = None) -> Ed25519PublicKey | None:
    """The public key an audit log's seal must be signed by.

    Args:
        key: a ``.pub`` file (base64 raw key) or a private key file, whose public half is
            derived from it. None: the local monitor key (``$CHAOSRUN_KEY``, else
            ``~/.config/chaosrun/monitor_ed25519``, else only its ``.pub``) if it exists.

    Returns:
        The key, or None when ``key`` is None and there is no local monitor key: then
        nobody vouches for the key embedded in the log.

    Raises:
        MonitorKeyError: the key file cannot be read or holds no Ed25519 key.
        KeyMismatchError: a ``.pub`` beside the key file holds another key.
    """
    path = key if key is not None else default_key_path()
    beside = path.with_name(path.name + ".pub")
    if key is None and not path.exists():
        if not beside.exists():
            return None
        path = beside  # an examiner's machine may hold the public half only
    public = _load(path)
    if path != beside and beside.exists():
        other = _load(beside)
        if public_b64(other) != public_b64(public):
            raise KeyMismatchError(
                f"{path} holds key {key_id(public)} but {beside} beside it holds key {key_id(other)}; "
                "pass the one to trust with --key"
            )
    return public


def _load(path: Path) -> Ed25519PublicKey:
    try:
        return load_public(path)
    except OSError as exc:
        raise MonitorKeyError(f"cannot read {path}: {exc.strerror or exc}") from None


def verify_audit_log(path: Path, key: Path | None = None, *, trust_embedded: bool = False) -> Verdict:
    """Check an audit log's hash chain and seal, signed by :func:`trusted_key` ``(key)``.

    Args:
        path: the log.
        key: the trusted key's file (see :func:`trusted_key`); None: the local monitor key.
        trust_embedded: trust the key the seal names instead (the examiner's explicit
            choice); ``key`` is then ignored.

    Returns:
        The verdict; ``message`` names the first broken record, or says the log holds and
        which key sealed it. A log that holds, sealed by a key nobody trusts (no key given,
        no local monitor key, no ``trust_embedded``), is not ok: ``untrusted`` is set.

    Raises:
        MonitorKeyError: ``key`` (or the local monitor key) is unusable.
        KeyMismatchError: ``key`` and the ``.pub`` beside it differ.
    """
    trusted = None if trust_embedded else trusted_key(key)
    verdict = verify_file(path, trusted)
    if not verdict.ok or trusted is not None:
        return verdict
    intact = f"{verdict.records} records, chain intact"
    if trust_embedded:
        message = f"{path}: OK, {intact}, sealed by key {verdict.key_id} (embedded in the log, trusted as asked)"
        return dataclasses.replace(verdict, message=message)
    message = (
        f"{path}: {intact}, but sealed by key {verdict.key_id} that nobody trusts "
        "(pass --key with the monitor's public key, or --trust-embedded)"
    )
    return dataclasses.replace(verdict, ok=False, untrusted=True, message=message)
