#!/usr/bin/python
"""Install the NVIDIA driver with Canonical's signed, precompiled kernel modules.

Runs on the target host (standard library plus Ansible's module_utils). The package names come
from the controller (``dlstack.nvidia.package_plan``); this module only talks to apt.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: dlstack_nvidia_kernel_modules
short_description: Install the NVIDIA driver with Canonical's precompiled, signed kernel modules
description:
  - Installs O(driver) with the module meta O(modules_meta) (it pulls the modules of the kernel the
    host's kernel meta installs, and those of every later kernel) and the module package of the
    running kernel when the archive lists one, in one apt transaction.
  - Canonical's module packages can lag a kernel update; an index can even list one the archive does
    not serve yet (404). When apt cannot fetch a package, the module drops what needs it and installs
    the modules of the newest kernel ABI of the running kernel's line (same version and flavour)
    that the archive serves (its kernel image comes with it), so that the host has one kernel with a
    working module. The
    dlstack-nvidia-boot-guard (installed by the role) then keeps GRUB on that kernel.
  - When the running kernel's module package was built for another version of the driver (a release
    kernel's, for the release pocket's driver), apt cannot install both; the module then installs the
    driver with the meta alone, which brings the newest kernel and its modules.
  - When the newest kernel whose modules the archive serves has modules built for an older point release
    of the driver than the newest one (the archive published a driver update and the new kernels'
    modules, but serves only the old kernels' yet), the driver is installed at the version those modules
    were built for (their C(nvidia-kernel-common) dependency says which); a later run or the upgrade
    playbook moves it on once the archive serves the rest.
  - Never installs a DKMS package. Supports check mode (reports what is missing).
options:
  driver:
    description: Driver packages (userspace, C(nvidia-headless-no-dkms-*), C(nvidia-utils-*)).
    type: list
    elements: str
    required: true
  modules_meta:
    description: The module meta that follows the kernel meta, e.g. C(linux-modules-nvidia-580-server-open-generic).
    type: str
    required: true
  modules_prefix:
    description: Prefix of per-kernel module packages; the package of one kernel is the prefix plus C(uname -r).
    type: str
    required: true
  kernel:
    description: The running kernel release (C(uname -r)).
    type: str
    required: true
  meta_required:
    description: The driver cannot be installed without the meta (the desktop C(nvidia-driver-*) depends on
      C(nvidia-dkms-*), which only the meta provides); no fallback then.
    type: bool
    default: false
  attempts:
    description: How many apt runs to try before giving up.
    type: int
    default: 6
  upgrade:
    description: Also move installed packages to the archive's newest version (a point release inside the
      branch; the caller releases the holds first). Without it, installed packages are left as they are.
    type: bool
    default: false
author: dlstack
"""

EXAMPLES = r"""
- name: Install the driver with precompiled modules
  dlstack_nvidia_kernel_modules:
    driver: [nvidia-headless-no-dkms-580-server-open, nvidia-utils-580-server]
    modules_meta: linux-modules-nvidia-580-server-open-generic
    modules_prefix: linux-modules-nvidia-580-server-open-
    kernel: "{{ ansible_facts['kernel'] }}"
"""

RETURN = r"""
installed:
  description: Packages this run asked apt to install (empty when nothing was missing).
  type: list
  returned: always
unavailable:
  description: Packages the index lists but apt could not fetch (C(404 Not Found) and the like).
  type: list
  returned: always
meta_installed:
  description: Whether the module meta is installed (modules follow kernel updates only then).
  type: bool
  returned: always
module_kernels:
  description: Kernel releases that have a module package installed, newest first.
  type: list
  returned: always
messages:
  description: What was decided and why, in words for the run's output.
  type: list
  returned: always
"""

Runner = Callable[[Sequence[str]], tuple[int, str]]
_FETCH_FAILED = re.compile(r"(?:Failed to fetch|Err:\d+)\s+\S*/(?P<name>[^/_\s]+)_[^/\s]+\.deb")
_KERNEL = re.compile(r"^(?P<abi>\d+\.\d+\.\d+-\d+)-(?P<flavour>[a-z][a-z0-9-]*)$")
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
APT_OPTIONS = ["-o", "DPkg::Lock::Timeout=600", "-o", "Dpkg::Options::=--force-confold"]


def run(argv: Sequence[str]) -> tuple[int, str]:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **APT_ENV},
    )
    return proc.returncode, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------ pure helpers


def unavailable_packages(apt_output: str) -> set[str]:
    """Package names of the .deb files apt could not fetch (``Failed to fetch .../name_ver_arch.deb 404``)."""
    return {m.group("name") for m in _FETCH_FAILED.finditer(apt_output)}


def _abi_key(abi: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.split(r"[.-]", abi))


def module_abis(names: Iterable[str], prefix: str, flavour: str, series: str = "") -> list[str]:
    """Kernel releases of ``flavour`` that ``prefix + release`` packages exist for, newest first.

    ``series`` (``6.8.0``) keeps only that kernel line: an HWE kernel (7.0.0-44-generic) has the
    same flavour as the GA kernel a host runs (6.8.0-151-generic), but is not its update.
    """
    found = []
    for name in names:
        match = _KERNEL.match(name[len(prefix) :]) if name.startswith(prefix) else None
        line = f"{series}-" if series else ""
        if match and match.group("flavour") == flavour and match.group("abi").startswith(line):
            found.append(match.group("abi"))
    return [f"{abi}-{flavour}" for abi in sorted(set(found), key=_abi_key, reverse=True)]


def kernel_series(kernel: str) -> str:
    """``6.8.0-151-generic`` -> ``6.8.0``."""
    match = _KERNEL.match(kernel)
    return match.group("abi").split("-")[0] if match else ""


def kernel_flavour(kernel: str) -> str:
    match = _KERNEL.match(kernel)
    return match.group("flavour") if match else ""


@dataclass
class Plan:
    """The packages one apt run installs and the reasons for what was left out."""

    wanted: list[str]
    messages: list[str] = field(default_factory=list)
    possible: bool = True


# The start of the refusal when no kernel has servable, consistent precompiled modules (tests look for it).
NO_PRECOMPILED = "No precompiled NVIDIA modules can be installed now: no"
# The start of the refusal when the driver's own packages are listed but not served (the role's apt path
# says the same: roles/nvidia_driver/vars/main.yml __nvidia_driver_not_served).
NOT_SERVED = "Not installable today: the archive lists but does not serve"

_UNSATISFIABLE = ("unmet dependencies", "unable to satisfy dependencies", "not going to be installed")


def blocks_the_driver(apt_output: str, package: str) -> bool:
    """Whether apt refused the set because of ``package`` (its modules are built for another driver version).

    apt 2 prints "The following packages have unmet dependencies: ... but it is not going to be installed",
    apt 3 "Unable to satisfy dependencies. Reached two conflicting assignments"; either names the package.
    """
    text = apt_output.lower()
    return package in apt_output and any(marker in text for marker in _UNSATISFIABLE)


_KERNEL_COMMON = re.compile(r"nvidia-kernel-common-[\w.+-]+ \((?P<op>>=|<=|=) (?P<version>[^)\s]+)\)")


def upstream_version(version: str) -> str:
    """``595.91.07-0ubuntu0.24.04.1`` -> ``595.91.07`` (epoch and Debian revision dropped)."""
    return version.split(":")[-1].split("-")[0]


def module_driver_version(show_output: str) -> str | None:
    """The driver version a module package was built for, from ``apt-cache show``: its
    ``nvidia-kernel-common-NNN (>= X)`` dependency, else the upstream part of ``(<= X-1)``."""
    bounds: dict[str, str] = {}
    for line in show_output.splitlines():
        if line.startswith(("Depends:", "Pre-Depends:")):
            for match in _KERNEL_COMMON.finditer(line):
                bounds.setdefault(match.group("op"), upstream_version(match.group("version")))
        if line.strip() == "" and bounds:
            break  # the first (newest) version's stanza only
    return bounds.get(">=") or bounds.get("=") or bounds.get("<=")


def madison_versions(madison_output: str) -> list[str]:
    """Versions from ``apt-cache madison``: `` pkg | 595.91.07-0ubuntu0.24.04.1 | http://... Packages``."""
    versions = []
    for line in madison_output.splitlines():
        columns = [column.strip() for column in line.split("|")]
        if len(columns) >= 3 and columns[1] and columns[1] not in versions:
            versions.append(columns[1])
    return versions


def first_plan(driver: Sequence[str], meta: str, running: str, listed: set[str]) -> Plan:
    """Driver + meta + the running kernel's modules, each when the index lists it."""
    plan = Plan(list(driver))
    for package in (meta, running):
        if package in listed:
            plan.wanted.append(package)
        else:
            plan.messages.append(f"{package} is not in the package index")
    return plan


def fallback_plan(
    driver: Sequence[str],
    *,
    candidates: Sequence[str],
    prefix: str,
    unavailable: set[str],
    installed_module_kernels: Sequence[str],
    installed_versions: dict[str, str] | None = None,
    pins_for: Callable[[str], list[str] | None] | None = None,
) -> Plan:
    """The driver alone, at the versions installed, when a kernel already has its modules (so apt neither
    upgrades nor removes anything); else the modules of the newest kernel the archive serves them for, with
    the driver at the version they were built for (``pins_for``: None when the archive no longer offers it)."""
    plan = Plan(list(driver))
    if installed_module_kernels:
        installed = installed_versions or {}
        plan.wanted = [f"{package}={installed[package]}" if installed.get(package) else package for package in driver]
        plan.messages.append(
            f"kernel {installed_module_kernels[0]} already has its NVIDIA module package; "
            "the boot guard keeps GRUB on a kernel that has one"
        )
        return plan
    for kernel in candidates:
        module = prefix + kernel
        if module in unavailable:
            continue
        pins = pins_for(module) if pins_for else list(driver)
        if pins is None:
            plan.messages.append(f"{module} is built for a driver version the archive no longer offers")
            continue
        plan.wanted = [*pins, module]
        plan.messages.append(
            f"installing the modules of kernel {kernel} (the newest the archive serves; its kernel "
            "image comes with them): the host boots it until the newer kernel's modules are published"
        )
        if pins != list(driver):
            plan.messages.append(
                f"{module} is built for an older point release of the driver than the newest: installing the "
                f"driver at that version ({', '.join(pins)}); a later run or playbooks/upgrade.yml moves it on "
                "once the archive serves the newer kernels' modules"
            )
        return plan
    plan.possible = False
    return plan


# ------------------------------------------------------------------------------ apt


def listed_packages(prefix: str, runner: Runner) -> set[str]:
    """Package names in the index that start with ``prefix``."""
    code, out = runner(["apt-cache", "pkgnames", prefix])
    return set(out.split()) if code == 0 else set()


def installed_versions(runner: Runner) -> dict[str, str]:
    """Installed packages and their versions."""
    code, out = runner(["dpkg-query", "-W", "-f=${db:Status-Status} ${Package} ${Version}\n"])
    if code != 0:
        return {}
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "installed":
            found[parts[1]] = parts[2] if len(parts) > 2 else ""
    return found


def installed_packages(runner: Runner) -> set[str]:
    return set(installed_versions(runner))


_SIMULATED = re.compile(r"^(?P<upgraded>\d+) upgraded, (?P<new>\d+) newly installed", re.MULTILINE)


def simulated_changes(packages: Sequence[str], runner: Runner) -> int:
    """How many packages ``apt-get install`` would upgrade or install (a simulation, for check mode)."""
    code, out = runner(["apt-get", "install", "-s", "--no-install-recommends", *packages])
    match = _SIMULATED.search(out) if code == 0 else None
    return int(match.group("upgraded")) + int(match.group("new")) if match else 0


def driver_pins(driver: Sequence[str], version: str, runner: Runner) -> list[str] | None:
    """``package=<archive version>`` for each driver package at upstream ``version``; None when one has none."""
    pins = []
    for package in driver:
        code, out = runner(["apt-cache", "madison", package])
        match = next((v for v in madison_versions(out) if upstream_version(v) == version), None) if code == 0 else None
        if match is None:
            return None
        pins.append(f"{package}={match}")
    return pins


def driver_pins_for(driver: Sequence[str], runner: Runner) -> Callable[[str], list[str] | None]:
    """For a module package: the driver packages at the version it was built for (``pkg=version``), the
    driver unpinned when that cannot be read, None when the archive does not offer that version."""

    def pins(module: str) -> list[str] | None:
        code, out = runner(["apt-cache", "show", module])
        version = module_driver_version(out) if code == 0 else None
        if version is None:
            return list(driver)
        return driver_pins(driver, version, runner)

    return pins


def apt_install(packages: Sequence[str], runner: Runner) -> tuple[int, str]:
    return runner(["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_OPTIONS, *packages])


# ------------------------------------------------------------------------------ the module


@dataclass
class Result:
    changed: bool = False
    installed: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    failed: str = ""


def installed_module_kernels(installed: set[str], prefix: str) -> list[str]:
    flavours = {kernel_flavour(n[len(prefix) :]) for n in installed if n.startswith(prefix)}
    kernels: list[str] = []
    for flavour in sorted(f for f in flavours if f):
        kernels += module_abis(installed, prefix, flavour)
    return sorted(kernels, key=lambda k: _abi_key(k.rsplit("-", 1)[0]), reverse=True)


def converge(params: dict, runner: Runner, check_mode: bool) -> Result:
    prefix, meta, kernel = params["modules_prefix"], params["modules_meta"], params["kernel"]
    listed = listed_packages(prefix, runner)
    before = installed_versions(runner)
    installed = set(before)
    plan = first_plan(params["driver"], meta, prefix + kernel, listed)
    result = Result(messages=list(plan.messages))
    missing = [p for p in plan.wanted if p not in installed]
    if not missing and not params.get("upgrade"):
        return result
    if check_mode:
        result.changed = bool(missing) or simulated_changes(plan.wanted, runner) > 0
        result.installed = missing
        return result
    unavailable: set[str] = set()
    for _ in range(params["attempts"]):
        code, out = apt_install(plan.wanted, runner)
        if code == 0:
            result.installed = [p.split("=")[0] for p in plan.wanted if p.split("=")[0] not in installed]
            result.changed = installed_versions(runner) != before
            result.unavailable = sorted(unavailable)
            return result
        failed = unavailable_packages(out)
        running = prefix + kernel
        userspace = sorted(name for name in failed if not name.startswith(prefix))
        if userspace:
            # the driver itself (or what it depends on) cannot be fetched: no kernel's modules help
            result.failed = (
                f"{NOT_SERVED} {', '.join(userspace)} (the mirror answers 404: it is mid-sync, or the upload was "
                "withdrawn); nothing was installed. Rerun later, point common_apt_mirror at another mirror, or "
                "choose another branch (dlstack_driver_branch)."
            )
            return result
        if not failed and running in plan.wanted and meta in plan.wanted and blocks_the_driver(out, running):
            # e.g. a release kernel whose module package was built for the release pocket's driver: the
            # meta brings the modules of the newest kernel instead, and the host boots that kernel
            plan = Plan([p for p in plan.wanted if p != running])
            result.messages.append(
                f"{running} (the running kernel's modules) is built for another version of the driver than "
                f"the one being installed; installing the driver with {meta}, which brings the newest "
                "kernel and its modules: the host runs NVIDIA's module after booting that kernel"
            )
            continue
        held = not failed and meta in plan.wanted and "held packages were changed" in out.lower()
        if held:
            # the meta's newest kernel modules need a newer driver than the held one: not now (the upgrade
            # playbook moves the driver); the modules a kernel already has stay as they are
            failed = {meta}
            result.messages.append(
                f"{meta} needs a newer driver than the one installed and held; it is left out until "
                "playbooks/upgrade.yml moves the driver"
            )
        if not failed or failed <= unavailable:
            result.failed = f"apt-get install {' '.join(plan.wanted)} failed:\n{out.strip()[-2000:]}"
            return result
        unavailable |= failed
        if not held:
            result.messages.append(f"the archive lists but does not serve: {', '.join(sorted(failed))}")
        if params["meta_required"]:
            result.failed = (
                f"{meta} cannot be installed now ({', '.join(sorted(failed))} cannot be fetched), and the desktop "
                "driver package depends on it. Rerun when the archive serves it, set nvidia_driver_flavour to "
                "'server', or build the modules with DKMS (nvidia_driver_prefer_precompiled: false; under Secure "
                "Boot the Machine Owner Key must then be enrolled)."
            )
            return result
        plan = fallback_plan(
            params["driver"],
            candidates=module_abis(listed, prefix, kernel_flavour(kernel), kernel_series(kernel)),
            prefix=prefix,
            unavailable=unavailable,
            installed_module_kernels=installed_module_kernels(installed, prefix),
            installed_versions=before,
            pins_for=driver_pins_for(params["driver"], runner),
        )
        if not held:
            result.messages.append(
                f"{meta} is left out until the archive serves it: without it, new kernels do not bring their "
                "NVIDIA modules (the next run of this role retries)"
            )
        result.messages += plan.messages
        if not plan.possible:
            result.failed = (
                f"{NO_PRECOMPILED} {kernel_flavour(kernel)} kernel of the {kernel_series(kernel)} line has "
                f"{prefix}* module packages that the archive serves for a driver version it offers (cannot fetch: "
                f"{', '.join(sorted(unavailable))}{'; ' if plan.messages else ''}{'; '.join(plan.messages)}); "
                "nothing was installed. Rerun when the archive serves them, or build the modules with DKMS "
                "(nvidia_driver_prefer_precompiled: false; under Secure Boot the Machine Owner Key must then be "
                "enrolled)."
            )
            return result
    result.failed = f"gave up after {params['attempts']} apt runs; cannot fetch: {', '.join(sorted(unavailable))}"
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "driver": {"type": "list", "elements": "str", "required": True},
            "modules_meta": {"type": "str", "required": True},
            "modules_prefix": {"type": "str", "required": True},
            "kernel": {"type": "str", "required": True},
            "meta_required": {"type": "bool", "default": False},
            "attempts": {"type": "int", "default": 6},
            "upgrade": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    result = converge(module.params, run, module.check_mode)
    installed = installed_packages(run)
    report = {
        "changed": result.changed,
        "installed": result.installed,
        "unavailable": result.unavailable,
        "meta_installed": module.params["modules_meta"] in installed,
        "module_kernels": installed_module_kernels(installed, module.params["modules_prefix"]),
        "messages": result.messages,
    }
    if result.failed:
        module.fail_json(msg=result.failed, **report)
    module.exit_json(**report)


if __name__ == "__main__":
    main()
