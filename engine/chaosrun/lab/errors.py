"""Lab: the errors ``chaosrun lab`` raises, one line each, naming what to do about it.

Every one of them leaves nothing running: the code that raises them stops the VMs it
started and removes their overlays first (``commands.py``).
"""

from __future__ import annotations

from ..errors import ChaosrunError

__all__ = ["ImageBuildError", "LabError", "PortTakenError", "ResourceError", "ToolMissingError", "VmBootError"]


class LabError(ChaosrunError):
    """A lab could not be brought up, inspected or taken down; the message says why."""


class ToolMissingError(LabError):
    """qemu, qemu-img or mmdebstrap is not installed; the message names the Debian package."""


class ImageBuildError(LabError):
    """The VM image could not be built; the message names the build log."""


class VmBootError(LabError):
    """A VM did not start or never answered SSH; the message carries its console's last lines."""


class PortTakenError(LabError):
    """An address:port a VM forwards is already taken on this machine."""


class ResourceError(LabError):
    """Not enough free disk (for the image, the overlays) or memory (for the VMs)."""
