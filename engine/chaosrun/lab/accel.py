"""Lab: KVM when it really works, else qemu's software emulation (TCG).

``/dev/kvm`` existing is not enough: on a machine whose CPU does not expose hardware
virtualisation (no ``vmx``/``svm`` flag in ``/proc/cpuinfo``, as in many nested or
sandboxed VMs) a KVM guest hangs without a single line on its console. So KVM is used only
when the device opens for reading and writing *and* the CPU has the flag; otherwise TCG,
multi-threaded, with every CPU feature qemu can emulate. ``$CHAOSRUN_LAB_ACCEL`` (``kvm``,
``tcg`` or ``auto``) overrides the choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError

__all__ = ["Accel", "choose_accel", "detect_accel"]

ACCEL_ENV = "CHAOSRUN_LAB_ACCEL"


@dataclass(frozen=True)
class Accel:
    """How qemu runs the guest's CPU: ``name`` (``kvm``/``tcg``), its qemu arguments, and why."""

    name: str
    args: tuple[str, ...]
    reason: str


KVM_ARGS = ("-accel", "kvm", "-cpu", "host")
TCG_ARGS = ("-accel", "tcg,thread=multi", "-cpu", "max")


def cpu_virt_flags(cpuinfo: str) -> set[str]:
    """The hardware virtualisation flags (``vmx``, ``svm``) named on any ``flags`` line."""
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            found |= {"vmx", "svm"} & set(value.split())
    return found


def detect_accel(cpuinfo: str, kvm_device: Path = Path("/dev/kvm")) -> Accel:
    """KVM if ``kvm_device`` opens read-write and ``cpuinfo`` has vmx or svm; TCG otherwise.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``.
        kvm_device: the KVM device node.
    """
    flags = cpu_virt_flags(cpuinfo)
    if not flags:
        why = "the CPU has no vmx/svm flag"
        if kvm_device.exists():
            why += f" ({kvm_device} exists, but a KVM guest would hang)"
        return Accel("tcg", TCG_ARGS, why)
    if not kvm_device.exists():
        return Accel("tcg", TCG_ARGS, f"{kvm_device} does not exist")
    try:
        fd = os.open(kvm_device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Accel("tcg", TCG_ARGS, f"cannot open {kvm_device}: {exc.strerror}")
    os.close(fd)
    return Accel("kvm", KVM_ARGS, f"{kvm_device} is usable and the CPU has {'/'.join(sorted(flags))}")


def choose_accel(wanted: str | None = None) -> Accel:
    """The accelerator for this machine: ``wanted`` (or ``$CHAOSRUN_LAB_ACCEL``) if set, else detected.

    Raises:
        LabError: an unknown accelerator name.
    """
    wanted = (wanted or os.environ.get(ACCEL_ENV) or "auto").strip().lower()
    if wanted == "tcg":
        return Accel("tcg", TCG_ARGS, "asked for")
    if wanted == "kvm":
        return Accel("kvm", KVM_ARGS, "asked for")
    if wanted != "auto":
        raise LabError(f"unknown accelerator {wanted!r} (${ACCEL_ENV} or --accel): kvm, tcg or auto")
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    return detect_accel(cpuinfo)
