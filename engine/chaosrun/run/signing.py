"""The monitor's Ed25519 key: it signs the last record of every audit log.

The key is created on first use with 0600 permissions. Its path is ``--key PATH``, else
``$CHAOSRUN_KEY``, else ``~/.config/chaosrun/monitor_ed25519``. The public half is
written beside it (``.pub``, raw key in base64) for examiners who verify logs elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ChaosrunError


class MonitorKeyError(ChaosrunError):
    """The monitor key cannot be read or created."""


def default_key_path() -> Path:
    env = os.environ.get("CHAOSRUN_KEY")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "chaosrun" / "monitor_ed25519"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_b64(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_or_create_key(path: Path | None = None) -> Ed25519PrivateKey:
    """The monitor's signing key, created (0600) if it does not exist yet."""
    path = path or default_key_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(path)  # created by a concurrent run
        except OSError as exc:
            raise MonitorKeyError(f"cannot create monitor key {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        path.with_name(path.name + ".pub").write_text(public_b64(key.public_key()) + "\n")
        return key
    except OSError as exc:
        raise MonitorKeyError(f"cannot read monitor key {path}: {exc.strerror or exc}") from None
    if path.stat().st_mode & 0o077:
        raise MonitorKeyError(f"monitor key {path} is readable by others; chmod 600 it")
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise MonitorKeyError(f"monitor key {path} is not a PEM private key: {exc}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise MonitorKeyError(f"monitor key {path} is not an Ed25519 key")
    return loaded


def load_public(path: Path) -> Ed25519PublicKey:
    """A trusted public key: a ``.pub`` file (base64 raw key) or the private key file."""
    text = path.read_text().strip()
    if "PRIVATE KEY" in text:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:  # corrupt, or protected by a passphrase
            reason = str(exc).split(". See ")[0]  # cryptography appends a link to its FAQ
            raise MonitorKeyError(f"{path} holds no usable Ed25519 key: {reason}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise MonitorKeyError(f"{path} is not an Ed25519 key")
        return key.public_key()
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
    except ValueError as exc:
        raise MonitorKeyError(f"{path} is not an Ed25519 public key: {exc}") from None


def sign(key: Ed25519PrivateKey, head: str) -> str:
    return base64.b64encode(key.sign(head.encode())).decode()


def check(public: Ed25519PublicKey, head: str, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature), head.encode())
    except (InvalidSignature, ValueError):
        return False
    return True
