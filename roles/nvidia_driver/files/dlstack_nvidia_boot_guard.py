#!/usr/bin/python3
"""dlstack NVIDIA boot guard: never let the boot loader start a kernel the NVIDIA driver cannot run on.

Installed by the ``nvidia_driver`` role as ``/usr/local/sbin/dlstack-nvidia-boot-guard`` (managed by
dlstack: edits are overwritten). It answers one question after every change to kernels or driver
packages: which installed kernel has an NVIDIA module that matches the installed driver? When the
newest kernel (the one GRUB starts by default) has none (Canonical's precompiled modules can lag a
kernel update, a DKMS build can fail, the driver can have moved to a point release the old
modules were not built for), GRUB is told to keep starting the newest kernel that has one, and a
message says so. When the newest kernel is fine again, the override goes away.

It runs:
  * from /etc/kernel/postinst.d and postrm.d (``--hook KERNEL``), before zz-update-grub, which then
    writes grub.cfg with our choice;
  * from apt's ``DPkg::Post-Invoke`` after every dpkg run (``--apply``): also runs update-grub when
    the choice changed (module packages are configured after the kernel they belong to);
  * from the role (``--apply --json``) and by hand (``--check``: change nothing, print the state).

Standard library only; it never fails a package operation (errors are printed, exit 0), except
``--check``/``--apply`` called by hand or by the role, which exit 1 on an internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cmp_to_key
from pathlib import Path

CONFIG = Path("/etc/dlstack/nvidia-boot-guard.json")
STATE = Path("/var/lib/dlstack/nvidia-boot-guard.json")
GRUB_DROPIN = Path("/etc/default/grub.d/99-dlstack-nvidia.cfg")
GRUB_CFG = Path("/boot/grub/grub.cfg")
BOOT = Path("/boot")
MODULES = Path("/lib/modules")
MODULE_SUFFIXES = (".ko", ".ko.zst", ".ko.xz", ".ko.gz")
_UPSTREAM = re.compile(r"^(?:\d+:)?(?P<upstream>\d+(?:\.\d+)+)(?:-.*)?$")
_ADVANCED_ID = re.compile(r"""submenu\s.*?\s'(?P<id>gnulinux-advanced-(?P<uuid>[^']+))'""")

Runner = Callable[[Sequence[str]], tuple[int, str]]


def run(argv: Sequence[str]) -> tuple[int, str]:
    """Run a command; (exit code, stdout). A missing program is exit 127."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, proc.stdout


# ------------------------------------------------------------------------------ Debian versions


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's comparison of one upstream or revision part (verrevcmp)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """``dpkg --compare-versions`` as a cmp function (GRUB orders kernels this way)."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def newest_first(kernels: Sequence[str]) -> list[str]:
    """Kernel releases, the one GRUB's first entry starts first."""
    return sorted(kernels, key=cmp_to_key(compare_versions), reverse=True)


# ------------------------------------------------------------------------------ the host


@dataclass
class Kernel:
    """One installed kernel and its NVIDIA module."""

    release: str
    module: str = ""
    module_version: str = ""
    usable: bool = False


@dataclass
class State:
    """What the guard saw and decided; written to STATE as JSON."""

    driver_version: str
    running_kernel: str
    newest_kernel: str
    boot_kernel: str
    override: bool
    kernels: list[Kernel] = field(default_factory=list)
    message: str = ""
    boot_loader: str = "grub"

    @property
    def kernels_without_module(self) -> list[str]:
        return [k.release for k in self.kernels if not k.usable]


def installed_kernels(boot: Path = BOOT) -> list[str]:
    """Kernel releases with an image in /boot (``vmlinuz-<release>``)."""
    return [p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*") if p.is_file()]


def find_module(release: str, modules: Path = MODULES) -> Path | None:
    """The nvidia.ko modprobe would load for ``release``: updates/ (DKMS) wins over kernel/."""
    root = modules / release
    if not root.is_dir():
        return None
    found = [p for p in root.rglob("nvidia.ko*") if p.name.endswith(MODULE_SUFFIXES)]
    if not found:
        return None
    return sorted(found, key=lambda p: (not str(p.relative_to(root)).startswith("updates"), str(p)))[0]


def upstream(version: str) -> str:
    match = _UPSTREAM.match(version.strip())
    return match.group("upstream") if match else ""


def driver_version(probe_package: str, runner: Runner = run) -> str:
    """The installed driver's upstream version, from dpkg (``580.178.04``); ``""`` if not installed."""
    code, out = runner(["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", probe_package])
    status, _, version = out.partition(" ")
    return upstream(version) if code == 0 and status == "installed" else ""


def module_version(path: Path, runner: Runner = run) -> str:
    code, out = runner(["modinfo", "-F", "version", str(path)])
    return out.strip() if code == 0 else ""


def survey(releases: Sequence[str], driver: str, runner: Runner = run, modules: Path = MODULES) -> list[Kernel]:
    """Each kernel (newest first) with its module and whether it matches the driver."""
    kernels = []
    for release in newest_first(releases):
        path = find_module(release, modules)
        version = module_version(path, runner) if path else ""
        kernels.append(Kernel(release, str(path or ""), version, bool(driver) and version == driver))
    return kernels


# ------------------------------------------------------------------------------ the decision


def decide(kernels: Sequence[Kernel], driver: str, running: str) -> State:
    """Which kernel to boot. ``kernels`` is newest first."""
    if not kernels:
        return State(driver, running, "", "", False, [], "no kernel image in /boot")
    newest = kernels[0]
    state = State(driver, running, newest.release, newest.release, False, list(kernels))
    if not driver:
        state.message = "no NVIDIA driver installed: nothing to guard"
        return state
    if newest.usable:
        state.message = f"kernel {newest.release} has NVIDIA module {driver}: it boots by default"
        return state
    why = (
        f"its NVIDIA module is version {newest.module_version}, the driver is {driver}"
        if newest.module
        else "it has no NVIDIA module"
    )
    fallback = next((k for k in kernels if k.usable), None)
    if fallback is None:
        state.message = (
            f"no installed kernel has an NVIDIA module matching driver {driver} (newest {newest.release}: {why}); "
            "the boot default is left alone. Rerun the nvidia_driver role, or install the module package for "
            f"kernel {newest.release}."
        )
        return state
    state.boot_kernel = fallback.release
    state.override = True
    state.message = (
        f"kernel {newest.release} is the newest, but {why}: GRUB keeps starting {fallback.release}, whose "
        f"module matches driver {driver}. Once {newest.release} gets its module (rerun the nvidia_driver role, "
        "which installs it when the archive has it), it becomes the default again."
    )
    return state


# ------------------------------------------------------------------------------ GRUB


def grub_default(grub_cfg: str, release: str) -> str:
    """``GRUB_DEFAULT`` for ``release``: ``<submenu id>><entry id>``, as update-grub names them."""
    match = _ADVANCED_ID.search(grub_cfg)
    if not match:
        raise ValueError("no 'Advanced options' submenu in grub.cfg (not an Ubuntu GRUB configuration)")
    return f"{match.group('id')}>gnulinux-{release}-advanced-{match.group('uuid')}"


def dropin_text(state: State, grub_cfg: str) -> str:
    """The GRUB drop-in for ``state``; ``""`` when no override is needed."""
    if not state.override:
        return ""
    return (
        "# Managed by dlstack (dlstack-nvidia-boot-guard): "
        f"kernel {state.newest_kernel} has no NVIDIA module matching driver {state.driver_version},\n"
        f"# so GRUB keeps starting {state.boot_kernel}. Removed automatically once it has one.\n"
        f'GRUB_DEFAULT="{grub_default(grub_cfg, state.boot_kernel)}"\n'
    )


def write_dropin(text: str, path: Path = GRUB_DROPIN) -> bool:
    """Write or remove the drop-in; True when it changed."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old == text:
        return False
    if text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)
    return True


def running_kernel() -> str:
    return os.uname().release


def read_config(path: Path = CONFIG) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data.get("probe_package"):
        raise ValueError(f"{path}: 'probe_package' missing")
    return data


def evaluate(config: dict[str, str], runner: Runner = run) -> State:
    driver = driver_version(config["probe_package"], runner)
    return decide(survey(installed_kernels(), driver, runner), driver, running_kernel())


def apply(state: State, *, update_grub: bool, runner: Runner = run) -> bool:
    """Make GRUB follow ``state``; True when the drop-in changed."""
    if not GRUB_CFG.exists():
        state.boot_loader = "not grub"
        if state.override:
            state.message += (
                f" This host does not boot with GRUB ({GRUB_CFG} missing): start {state.boot_kernel} by hand."
            )
        return False
    changed = write_dropin(dropin_text(state, GRUB_CFG.read_text(encoding="utf-8", errors="replace")))
    if changed and update_grub:
        code, out = runner(["update-grub"])
        if code != 0:
            state.message += f" update-grub failed ({code}): {out.strip()[-200:]}"
    return changed


def save(state: State, path: Path = STATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(state) | {"kernels_without_module": state.kernels_without_module}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--hook", metavar="KERNEL", help="called from /etc/kernel/*.d (before zz-update-grub)")
    mode.add_argument("--apply", action="store_true", help="decide, write the GRUB drop-in, run update-grub")
    mode.add_argument("--check", action="store_true", help="decide and print; change nothing")
    parser.add_argument("--json", action="store_true", help="print the state as JSON")
    parser.add_argument("--quiet", action="store_true", help="print only when the newest kernel is not booted")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    changed = False
    try:
        state = evaluate(read_config())
        if not args.check:
            changed = apply(state, update_grub=bool(args.apply))
            save(state)
    except (OSError, ValueError) as exc:
        print(f"dlstack-nvidia-boot-guard: {exc}", file=sys.stderr)
        return 1 if (args.check or (args.apply and not args.quiet)) else 0
    if args.json:
        extra = {"kernels_without_module": state.kernels_without_module, "changed": changed}
        print(json.dumps(asdict(state) | extra, indent=2))
    elif state.override or not args.quiet:
        print(f"dlstack-nvidia-boot-guard: {state.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
