"""Lab: disposable real Debian 12 machines (qemu VMs) for authors, tests and the demo.

``chaosrun lab up`` builds the base image once per machine (``image``: mmdebstrap, the
``recipe``, mke2fs), boots one VM per role and environment on copy-on-write overlays
(``vm``), each on its own loopback address with its ports forwarded (``network``), KVM when
it really works and TCG otherwise (``accel``), waits until each answers SSH with its pinned
host key (``login``), and writes an inventory the other commands take (``state``).
``commands`` holds the three commands; docs/lab.md is the user's page.

Synchronous code only (subprocess and polling): only ``run/`` is async.
"""

from .commands import UpOptions, VmStatus, for_lab, format_status, lab_down, lab_status, lab_up, scenario_lab
from .errors import ImageBuildError, LabError, PortTakenError, ResourceError, ToolMissingError, VmBootError
from .image import Image, cache_dir, ensure_image
from .state import LabState, VmRecord, lab_dir_for, load_state

__all__ = [
    "Image",
    "ImageBuildError",
    "LabError",
    "LabState",
    "PortTakenError",
    "ResourceError",
    "ToolMissingError",
    "UpOptions",
    "VmBootError",
    "VmRecord",
    "VmStatus",
    "cache_dir",
    "ensure_image",
    "for_lab",
    "format_status",
    "lab_dir_for",
    "lab_down",
    "lab_status",
    "lab_up",
    "load_state",
    "scenario_lab",
]
