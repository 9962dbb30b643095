"""Lab: what the VM image is made of, as data. The image's cache key is a hash of all of it.

The image is Debian 12 (bookworm) from Debian's own packages (``mmdebstrap``), turned into
an exam machine by one customisation script that runs on the root folder before it becomes
an ext4 image. Nothing here is specific to one lab: each VM's own secrets (its SSH host key,
the lab's client key, its host name) reach it at boot through qemu's ``fw_cfg`` and the
``chaosrun-lab-keys`` unit below, so one base image serves every lab and stays pristine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["FW_CFG_PREFIX", "RECIPE", "Recipe", "recipe_id"]

#: Bumped whenever the way an image is built changes in a way the fields below do not show
#: (the mke2fs options, where the kernel is taken from, ...): a new version is a new image.
RECIPE_VERSION = 1

#: qemu ``-fw_cfg name=...`` prefix; the guest reads ``/sys/firmware/qemu_fw_cfg/by_name/<prefix>/<item>/raw``.
FW_CFG_PREFIX = "opt/chaosrun"

SUITE = "bookworm"
VARIANT = "minbase"
IMAGE_SIZE = "2G"
USER = "candidate"

#: What a real exam machine has: systemd, SSH, a web server, a name server, a firewall, cron,
#: syslog, sudo, and the everyday tools a candidate (and the chaos modules: nft, ip, tc, df, mount, openssl,
#: lsattr) reach for.
PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",
    "kmod",
    "openssh-server",
    "openssh-client",
    "nginx",
    "dnsmasq",
    "nftables",
    "cron",
    "rsyslog",
    "logrotate",
    "sudo",
    "curl",
    "ca-certificates",
    "openssl",
    "e2fsprogs",
    "fdisk",
    "iproute2",
    "iputils-ping",
    "procps",
    "psmisc",
    "lsof",
    "less",
    "nano",
    "vim-tiny",
    "netcat-openbsd",
    "acl",
    "zstd",
)

#: Installs what the monitor handed this VM through fw_cfg. Runs at every boot, before sshd:
#: the host key is the one pinned in the lab's known_hosts, the client key the lab's own.
KEYS_SCRIPT = f"""#!/bin/sh
# chaosrun lab: install this VM's SSH host key, the lab's client key and the VM's host name,
# handed over by the monitor through qemu's fw_cfg (-fw_cfg name={FW_CFG_PREFIX}/...).
# Few processes: each one costs ~50 ms under emulation.
set -eu
src=/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_PREFIX}
[ -d "$src" ] || modprobe qemu_fw_cfg
if [ ! -r "$src/host_key/raw" ]; then
    echo "chaosrun-lab-keys: no host key in fw_cfg ($src); was this VM started by chaosrun lab?" >&2
    exit 1
fi
umask 077
cat "$src/host_key/raw" > /etc/ssh/ssh_host_ed25519_key
umask 022
cat "$src/host_key.pub/raw" > /etc/ssh/ssh_host_ed25519_key.pub
read -r key < "$src/authorized_keys/raw" || [ -n "$key" ]
add_key() {{  # add_key HOME USER: keep the keys already there, add the lab's once
    [ -d "$1/.ssh" ] || install -d -m 0700 -o "$2" -g "$2" "$1/.ssh"
    file="$1/.ssh/authorized_keys"
    if [ -f "$file" ]; then
        while IFS= read -r line; do [ "$line" = "$key" ] && return 0; done < "$file"
    fi
    printf '%s\\n' "$key" >> "$file"
    chown "$2:$2" "$file"
    chmod 0600 "$file"
}}
add_key /root root
add_key /home/{USER} {USER}
if [ -r "$src/hostname/raw" ]; then
    read -r name < "$src/hostname/raw" || [ -n "$name" ]
    printf '%s' "$name" > /proc/sys/kernel/hostname
    # the files only for a new name (the first boot, a VM restored from the saved one): what
    # an exam did to /etc/hosts or /etc/hostname must still be there after a reboot
    old=; read -r old < /etc/hostname || true
    if [ "$old" != "$name" ]; then
        printf '%s\\n' "$name" > /etc/hostname
        printf '127.0.0.1 localhost\\n127.0.1.1 %s\\n::1 localhost ip6-localhost ip6-loopback\\n' "$name" > /etc/hosts
    fi
fi
"""

KEYS_UNIT = """[Unit]
Description=chaosrun lab: SSH host key and authorized keys from qemu fw_cfg
After=systemd-modules-load.service
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/chaosrun-lab-keys

[Install]
WantedBy=multi-user.target
RequiredBy=ssh.service
"""

SSHD_CONFIG = """# chaosrun lab: the one host key is this VM's own, installed at boot by chaosrun-lab-keys;
# logins with the lab's key only.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""

NETWORK = """# chaosrun lab: qemu's user-mode network hands out 10.0.2.15 by DHCP.
[Match]
Name=eth0

[Network]
DHCP=ipv4
"""

#: Units that slow a boot (timers that wake up at once on a fresh machine, a getty for a
#: screen nobody sees) or never apply to a throwaway VM.
MASKED = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    "getty@tty1.service",
)

#: The modules the initrd holds (``MODULES=list``): the virtio disk and ext4. Everything
#: else loads from the root filesystem once it is mounted.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")

#: Run by mmdebstrap's --customize-hook with the root folder as $1 (host side, chroot for the
#: commands that need the guest's own tools). Files written here are the same in every VM.
CUSTOMIZE = f"""#!/bin/sh
set -eu
root="$1"
echo "chaosrun lab: customising $root"
printf 'lab\\n' > "$root/etc/hostname"
printf '127.0.0.1 localhost\\n127.0.1.1 lab\\n::1 localhost ip6-localhost ip6-loopback\\n' > "$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\\n' > "$root/etc/fstab"
# the guest reaches nothing outside (qemu restrict=on): no name server to wait for
printf '# chaosrun lab: no name server (qemu restrict=on: the guest reaches nothing outside)\\n' \\
    > "$root/etc/resolv.conf"
# an empty machine-id: each VM makes its own at first boot (and it is not a "first boot")
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# dnsmasq answers for the names in /etc/hosts (port 53, forwarded to the monitor) and asks
# no one else: no upstream server, whatever resolv.conf says
printf '# chaosrun lab: answer from /etc/hosts only; forward nothing\nno-resolv\nno-poll\n' \
    > "$root/etc/dnsmasq.d/chaosrun-lab.conf"

mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/10-eth0.network" <<'CHAOSRUN_EOF'
{NETWORK}CHAOSRUN_EOF
chroot "$root" systemctl enable systemd-networkd.service

chroot "$root" useradd --create-home --shell /bin/bash --groups sudo {USER}
# a password of its own, as an exam machine's user has (sshd takes keys only): exams that
# lock, expire or unlock an account need one to be there
printf '%s:%s\\n' {USER} {USER} | chroot "$root" chpasswd
printf '{USER} ALL=(ALL) NOPASSWD: ALL\\n' > "$root/etc/sudoers.d/{USER}"
chmod 0440 "$root/etc/sudoers.d/{USER}"

rm -f "$root"/etc/ssh/ssh_host_*
cat > "$root/etc/ssh/sshd_config.d/chaosrun-lab.conf" <<'CHAOSRUN_EOF'
{SSHD_CONFIG}CHAOSRUN_EOF
cat > "$root/usr/local/sbin/chaosrun-lab-keys" <<'CHAOSRUN_EOF'
{KEYS_SCRIPT}CHAOSRUN_EOF
chmod 0755 "$root/usr/local/sbin/chaosrun-lab-keys"
cat > "$root/etc/systemd/system/chaosrun-lab-keys.service" <<'CHAOSRUN_EOF'
{KEYS_UNIT}CHAOSRUN_EOF
printf 'qemu_fw_cfg\\n' > "$root/etc/modules-load.d/chaosrun-lab.conf"
chroot "$root" systemctl enable chaosrun-lab-keys.service
chroot "$root" systemctl mask {" ".join(MASKED)}

# a small initrd boots faster under emulation: only what mounts the virtio root disk
printf 'MODULES=list\n' > "$root/etc/initramfs-tools/conf.d/chaosrun-lab.conf"
printf '%s\n' {" ".join(INITRD_MODULES)} >> "$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all
echo "chaosrun lab: customised"
"""


@dataclass(frozen=True)
class Recipe:
    """Everything an image is built from; two equal recipes give the same image."""

    suite: str = SUITE
    variant: str = VARIANT
    size: str = IMAGE_SIZE
    packages: tuple[str, ...] = PACKAGES
    customize: str = CUSTOMIZE
    version: int = RECIPE_VERSION

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "suite": self.suite,
            "variant": self.variant,
            "size": self.size,
            "packages": sorted(self.packages),
            "customize": self.customize,
        }


RECIPE = Recipe()


def recipe_id(recipe: Recipe = RECIPE) -> str:
    """The image's name in the cache: the first 16 hex digits of the recipe's SHA-256.

    The package list is hashed sorted (its order does not change the image); everything else
    as written, so a changed customisation script is a new image.
    """
    blob = json.dumps(recipe.as_json(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
