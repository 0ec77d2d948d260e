"""Decisions made from a host's gathered facts (pure functions, used by filter plugins)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

DATA_FILESYSTEMS = frozenset({"ext4", "xfs", "btrfs", "zfs", "f2fs"})
_PARTITION = re.compile(r"^(?P<disk>nvme\d+n\d+|mmcblk\d+|[a-z]+?)(?:p?\d+)?$")
DEFAULT_DATA_DIR = "/data"
# Mount points that never hold user data: system trees, and the single files Docker bind-mounts
# into containers (/etc/hostname, /etc/hosts, /etc/resolv.conf).
SYSTEM_PREFIXES = ("/etc", "/boot", "/proc", "/sys", "/dev", "/run", "/snap", "/usr", "/var", "/tmp")  # noqa: S108 - a path to skip, not a file we create


def is_system_mount(mount: str) -> bool:
    """True for mount points in system trees (``/boot/efi``, ``/etc/hostname``, ...)."""
    return any(mount == p or mount.startswith(f"{p}/") for p in SYSTEM_PREFIXES)


def disk_of(device: str) -> str:
    """The whole-disk name of a partition device: ``/dev/nvme0n1p2`` -> ``nvme0n1``, ``/dev/sda1`` -> ``sda``."""
    name = device.rsplit("/", 1)[-1]
    match = _PARTITION.match(name)
    return match.group("disk") if match else name


def disk_rank(disk: str, devices: Mapping[str, Mapping[str, Any]]) -> int:
    """Lower is faster: 0 NVMe, 1 other solid state, 2 rotational or unknown."""
    if disk.startswith("nvme"):
        return 0
    return 1 if str(devices.get(disk, {}).get("rotational", "1")) == "0" else 2


def fastest_mount(mounts: Sequence[Mapping[str, Any]], devices: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The mount point on the fastest local disk with the most free space, or None.

    ``mounts`` and ``devices`` are ``ansible_facts['mounts']`` and ``ansible_facts['devices']``.
    Pseudo and network filesystems are ignored, so a container (overlay root) yields None.
    """
    candidates = [
        (disk_rank(disk_of(m["device"]), devices), -int(m.get("size_available", 0)), m["mount"])
        for m in mounts
        if m.get("fstype") in DATA_FILESYSTEMS
        and str(m.get("device", "")).startswith("/dev/")
        and not is_system_mount(str(m.get("mount", "")))
    ]
    return min(candidates)[2] if candidates else None


def data_dir(setting: str, mounts: Sequence[Mapping[str, Any]], devices: Mapping[str, Mapping[str, Any]]) -> str:
    """Resolve ``common_data_dir``: a path is kept; ``auto`` picks a directory on the fastest disk."""
    if setting != "auto":
        return setting
    mount = fastest_mount(mounts, devices)
    if mount is None or mount == "/":
        return DEFAULT_DATA_DIR
    return f"{mount.rstrip('/')}/dlstack"
