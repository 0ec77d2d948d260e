#!/usr/bin/python
"""Create or assemble one Linux software RAID (md) array from whole disks, never erasing one.

Runs on the target host (standard library plus Ansible's module_utils). Disks are inspected with
``blkid -p`` (util-linux), ``/sys`` and ``/proc/mounts``, so check mode works before mdadm is
installed (the preflight runs it that way); only creating or assembling needs mdadm.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: dlstack_md_array
short_description: Create or assemble a software RAID (md) array from blank disks, refusing disks in use
description:
  - Creates the array O(name) at RAID level O(level) from O(devices) when every device is blank (no
    filesystem, partition table or RAID signature, not mounted, not held by another device), then records it
    in C(/etc/mdadm/mdadm.conf) so that it is assembled at boot.
  - When the devices already carry this array (a previous run), assembles it if it is not running and
    otherwise changes nothing.
  - Refuses, and changes nothing, when a device is missing, carries any other signature (it may hold
    someone's data), or when a running array of this name has another level or other members. It never
    erases, reshapes or re-creates an array.
  - Supports check mode, also on a host without mdadm (the preflight runs it so).
options:
  name:
    description: The array's name; it appears as C(/dev/md/NAME).
    type: str
    required: true
  level:
    description: RAID level, 0 (striping, no redundancy) or 1 (mirror).
    type: int
    choices: [0, 1]
    required: true
  devices:
    description: Whole disks (stable names such as C(/dev/disk/by-id/...) are best), at least two.
    type: list
    elements: str
    required: true
  conf:
    description: The mdadm configuration file the array is recorded in.
    type: path
    default: /etc/mdadm/mdadm.conf
  label:
    description: The variable the settings came from, for messages (e.g. C(storage_volumes[0])).
    type: str
    default: ""
author: dlstack
"""

RETURN = r"""
device:
  description: The array's device path.
  type: str
  returned: always
action:
  description: What was (or in check mode would be) done, C(none), C(create) or C(assemble).
  type: str
  returned: always
uuid:
  description: The array's UUID (unknown before it is created in check mode).
  type: str
  returned: always
conf_changed:
  description: Whether the mdadm configuration file was (or would be) changed; the initramfs needs an update then.
  type: bool
  returned: always
"""

RAID_MEMBER = "linux_raid_member"


@dataclass(frozen=True)
class Disk:
    """What the host says about one device path."""

    path: str
    kernel_name: str = ""  # e.g. vdb, nvme1n1 (empty when the path does not exist)
    is_block: bool = False
    signature: Mapping[str, str] = field(default_factory=dict)  # blkid -p -o export
    mounted: bool = False
    holders: tuple[str, ...] = ()  # devices built on it (a running md array, LVM, dm-crypt)

    @property
    def array_name(self) -> str:
        """The md array name this disk is a member of (homehost prefix dropped), or ''."""
        if self.signature.get("TYPE") != RAID_MEMBER:
            return ""
        return self.signature.get("LABEL", "").rpartition(":")[2]


@dataclass(frozen=True)
class Running:
    """A running array found under /dev/md/NAME."""

    kernel_name: str
    level: int | None
    members: frozenset[str]


@dataclass(frozen=True)
class Plan:
    action: str  # none, create, assemble
    problems: tuple[str, ...] = ()


def _describe(signature: Mapping[str, str]) -> str:
    keys = ("TYPE", "PTTYPE", "LABEL", "UUID")
    return ", ".join(f"{k}={signature[k]}" for k in keys if signature.get(k)) or "a signature"


def _wipe_advice(disk: Disk) -> str:
    return (
        f"dlstack never erases a disk. If nothing on {disk.path} is needed, erase it yourself "
        f"(`wipefs -a {disk.path}` as root) and run again; otherwise list another disk"
    )


def _running_problems(where: str, name: str, level: int, disks: Sequence[Disk], running: Running) -> list[str]:
    problems = []
    if running.level is not None and running.level != level:
        problems.append(
            f"{where}: /dev/md/{name} is running as RAID {running.level}, the setting asks for level {level}; "
            "dlstack does not reshape arrays. Set level back to "
            f"{running.level}, or give the new array another name and other disks"
        )
    wanted = {d.kernel_name for d in disks}
    if wanted != set(running.members):
        problems.append(
            f"{where}: /dev/md/{name} runs on {', '.join(sorted(running.members)) or 'no disks'}, the setting "
            f"lists {', '.join(sorted(wanted))}; dlstack does not add, remove or replace members "
            f"(a failed mirror disk is replaced with `mdadm /dev/md/{name} --add DISK` by hand)"
        )
    return problems


def plan(where: str, name: str, level: int, disks: Sequence[Disk], running: Running | None) -> Plan:
    """What to do with the array ``name`` on these disks: pure, so that every case is unit-tested."""
    problems = [
        f"{where}: {d.path} does not exist or is not a block device (devices: whole disks such as /dev/nvme1n1)"
        for d in disks
        if not d.is_block
    ]
    if len(disks) < 2:
        problems.append(f"{where}: RAID {level} needs at least two devices, the setting lists {len(disks)}")
    names = [d.kernel_name for d in disks if d.kernel_name]
    if len(set(names)) != len(names):
        problems.append(f"{where}: a disk is listed twice ({', '.join(d.path for d in disks)})")
    if problems:
        return Plan("none", tuple(problems))
    if running is not None:
        return Plan("none", tuple(_running_problems(where, name, level, disks, running)))
    ours = [d for d in disks if d.array_name == name]
    uuids = {d.signature.get("UUID", "") for d in ours}
    for disk in disks:
        if disk in ours:
            continue
        if disk.signature:
            problems.append(f"{where}: {disk.path} is not blank ({_describe(disk.signature)}). {_wipe_advice(disk)}")
        elif disk.mounted or disk.holders:
            problems.append(
                f"{where}: {disk.path} is in use ("
                + ("mounted" if disk.mounted else "held by " + ", ".join(disk.holders))
                + ")"
            )
    if problems:
        return Plan("none", tuple(problems))
    if ours and (len(ours) != len(disks) or len(uuids) != 1):
        return Plan(
            "none",
            (
                f"{where}: only {', '.join(d.path for d in ours)} carry the array {name} (the others are blank or "
                "from another array): dlstack does not complete a degraded array. Assemble it by hand "
                f"(`mdadm --assemble /dev/md/{name} --run DISKS`) and add the new disk with `mdadm --add`",
            ),
        )
    return Plan("assemble" if ours else "create")


# ----------------------------------------------------------------------------- reading the host


def _kernel_name(path: str) -> str:
    real = os.path.realpath(path)
    return Path(real).name if real.startswith("/dev/") else ""


def _mounted_sources() -> set[str]:
    try:
        lines = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return set()
    return {os.path.realpath(line.split()[0]) for line in lines if line.startswith("/dev/")}


def _holders(kernel_name: str) -> tuple[str, ...]:
    sys_dir = Path("/sys/class/block") / kernel_name
    held = sorted(p.name for p in (sys_dir / "holders").glob("*")) if (sys_dir / "holders").is_dir() else []
    # partitions count too: a disk with a partition in use is in use
    parts = sorted(p.name for p in sys_dir.glob(f"{kernel_name}*") if (p / "partition").exists())
    return tuple(held + parts)


def parse_export(text: str) -> dict[str, str]:
    """``KEY=value`` lines (blkid -o export, mdadm --export) as a dict."""
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, _, value in pairs}


Runner = Callable[[Sequence[str]], tuple[int, str, str]]


def inspect_disk(path: str, run: Runner, mounted: set[str]) -> Disk:
    real = os.path.realpath(path)
    if not (Path(real).exists() and Path(real).is_block_device()):
        return Disk(path)
    rc, out, _ = run(["blkid", "-p", "-o", "export", real])
    signature = parse_export(out) if rc == 0 else {}
    signature = {k: v for k, v in signature.items() if k in {"TYPE", "PTTYPE", "LABEL", "UUID", "UUID_SUB"}}
    name = _kernel_name(real)
    return Disk(path, name, True, signature, real in mounted, _holders(name))


def running_array(name: str) -> Running | None:
    link = Path("/dev/md") / name
    if not link.exists():
        return None
    kernel_name = Path(os.path.realpath(link)).name
    md = Path("/sys/block") / kernel_name / "md"
    level_text = (md / "level").read_text(encoding="utf-8").strip() if (md / "level").exists() else ""
    level = int(level_text[4:]) if level_text.startswith("raid") and level_text[4:].isdigit() else None
    members = frozenset(Path(os.path.realpath(p / "block")).name for p in md.glob("dev-*"))
    return Running(kernel_name, level, members)


def hex_uuid(uuid: str) -> str:
    """An md UUID in one spelling: blkid writes 8-4-4-4-12, mdadm 8:8:8:8."""
    return "".join(c for c in uuid.lower() if c in "0123456789abcdef")


def conf_has(conf: str, uuid: str) -> bool:
    """Whether an ARRAY line of the configuration names this UUID."""
    try:
        text = Path(conf).read_text(encoding="utf-8")
    except OSError:
        return False
    wanted = hex_uuid(uuid)
    for line in text.splitlines():
        words = line.split()
        if (
            wanted
            and words
            and words[0] == "ARRAY"
            and any(w.startswith("UUID=") and hex_uuid(w[5:]) == wanted for w in words)
        ):
            return True
    return False


# ----------------------------------------------------------------------------- the module


def _run_with(module: AnsibleModule) -> Runner:
    def run(argv: Sequence[str]) -> tuple[int, str, str]:
        return module.run_command(list(argv))

    return run


def _must(module: AnsibleModule, argv: Sequence[str], what: str) -> str:
    rc, out, err = module.run_command(list(argv))
    if rc != 0:
        module.fail_json(msg=f"{what} failed ({' '.join(argv)}, exit {rc}): {(err or out).strip()[-800:]}")
    return out


def _record(module: AnsibleModule, device: str, conf: str) -> tuple[str, bool]:
    """The array's UUID, and whether its ARRAY line had to be added to the configuration."""
    detail = parse_export(_must(module, ["mdadm", "--detail", "--export", device], "Reading the array"))
    uuid = detail.get("MD_UUID", "")
    if conf_has(conf, uuid):
        return uuid, False
    line = _must(module, ["mdadm", "--detail", "--brief", device], "Reading the array").strip()
    Path(conf).parent.mkdir(parents=True, exist_ok=True)
    with Path(conf).open("a", encoding="utf-8") as handle:
        handle.write(f"# added by dlstack (storage_volumes)\n{line}\n")
    return uuid, True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "level": {"type": "int", "required": True, "choices": [0, 1]},
            "devices": {"type": "list", "elements": "str", "required": True},
            "conf": {"type": "path", "default": "/etc/mdadm/mdadm.conf"},
            "label": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    name, level, conf = module.params["name"], module.params["level"], module.params["conf"]
    where = module.params["label"] or f"array {name}"
    device = f"/dev/md/{name}"
    mounted = _mounted_sources()
    disks = [inspect_disk(path, _run_with(module), mounted) for path in module.params["devices"]]
    running = running_array(name)
    decided = plan(where, name, level, disks, running)
    if decided.problems:
        module.fail_json(msg=" | ".join(decided.problems), action="none", device=device)
    if module.check_mode:
        uuid = next((d.signature.get("UUID", "") for d in disks if d.array_name == name), "")
        changed = decided.action != "none" or not conf_has(conf, uuid)
        module.exit_json(changed=changed, action=decided.action, device=device, uuid=uuid, conf_changed=changed)
    members = [os.path.realpath(p) for p in module.params["devices"]]
    if decided.action == "create":
        _must(
            module,
            ["mdadm", "--create", device, f"--name={name}", f"--level={level}", f"--raid-devices={len(members)}",
             "--metadata=1.2", "--run", *members],
            f"Creating {device}",
        )  # fmt: skip
    elif decided.action == "assemble":
        _must(module, ["mdadm", "--assemble", device, "--run", *members], f"Assembling {device}")
    if decided.action != "none":
        module.run_command(["udevadm", "settle"])
    uuid, conf_changed = _record(module, device, conf)
    module.exit_json(
        changed=decided.action != "none" or conf_changed,
        action=decided.action,
        device=device,
        uuid=uuid,
        conf_changed=conf_changed,
    )


if __name__ == "__main__":
    main()
