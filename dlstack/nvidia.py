"""NVIDIA driver decisions for the ``nvidia_driver`` and ``cuda_toolkit`` roles (pure functions).

Package names, kernel-module choices and host parsing (lspci, mokutil, dpkg versions) live here so
that the roles stay declarative and the logic is unit-tested. The Ansible adapter is
``plugins/filter/dlstack_nvidia.py``. Version facts are read from ``dlstack/data`` (drivers.yml,
gpus.yml, ubuntu.yml); nothing here types a version number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dlstack.data import load

SOURCES = ("ubuntu", "nvidia")
FLAVOURS = ("server", "desktop")
KERNEL_MODULES = ("open", "proprietary", "auto")

# "6.8.0-45-generic" -> "generic"; "6.8.0-1015-aws" -> "aws"; "6.17.0-5-generic-64k" -> "generic-64k"
_KERNEL_RELEASE = re.compile(r"^\d+\.\d+\.\d+-\d+-(?P<flavour>[a-z][a-z0-9-]*)$")
_BRANCH = re.compile(r"^\d{3}$")
# Packages that belong to one driver branch: the branch is a whole dash-separated token.
_NVIDIA_PREFIXES = (
    "nvidia-",
    "libnvidia-",
    "linux-modules-nvidia-",
    "linux-objects-nvidia-",
    "linux-signatures-nvidia-",
    "xserver-xorg-video-nvidia-",
)
_BRANCH_TOKEN = re.compile(r"(?:^|-)(?P<branch>\d{3})(?=-|$)")
# Tokens that are not branches: kernel ABIs ("6.8.0-151", "5.15.0-214") and dotted versions
# ("580.178.04" in nvidia-firmware-580-server-580.178.04, "24.04" in ...-generic-hwe-24.04).
_NOT_A_BRANCH = re.compile(r"\d+\.\d+(?:\.\d+)?-\d+|\d+(?:\.\d+)+")
# Canonical's precompiled kernel-module packages: they follow the kernel, not the driver, so they
# are never held (a held one pins the host to one kernel ABI).
_MODULE_PREFIXES = ("linux-modules-nvidia-", "linux-objects-nvidia-", "linux-signatures-nvidia-")
# Kernel meta packages ("linux-image-generic", "linux-image-virtual-hwe-24.04", "linux-image-aws"):
# no ABI in the name, and not the unsigned/extra/headers variants.
_KERNEL_IMAGE_META = re.compile(r"^linux-image-(?P<meta>[a-z][a-z0-9.+-]*)$")
_KERNEL_ABI = re.compile(r"\d+\.\d+\.\d+-\d+")
_DEB_UPSTREAM = re.compile(r"^(?:\d+:)?(?P<upstream>\d{3}(?:\.\d+){1,2})(?:-.*)?$")
_PCI_LINE = re.compile(r'^(?P<slot>\S+)\s+"(?P<cls>[^"]*)"\s+"(?P<vendor>[^"]*)"\s+"(?P<device>[^"]*)"')


class NvidiaError(ValueError):
    """A setting has a value the roles cannot use; the message names it and what is accepted."""


# ----------------------------------------------------------------------------- validation


def check_branch(branch: Any) -> str:
    """``"580"`` or ``580`` -> ``"580"``; anything else raises naming ``nvidia_driver_branch``."""
    text = str(branch).strip()
    if not _BRANCH.match(text):
        raise NvidiaError(
            f"nvidia_driver_branch = {branch!r} is not a driver branch: give three digits such as the "
            f"branches listed in dlstack/data/drivers.yml ({', '.join(sorted(known_branches()))}), "
            "or run the preflight play, which sets dlstack_stack"
        )
    return text


def _check_choice(name: str, value: str, accepted: Sequence[str]) -> str:
    if value not in accepted:
        raise NvidiaError(f"{name} = {value!r} is not accepted: use one of {', '.join(accepted)}")
    return value


def known_branches() -> list[str]:
    return [str(b) for b in load("drivers")["branches"]]


# ----------------------------------------------------------------------------- GPUs and modules


def parse_lspci(text: str) -> list[dict[str, str]]:
    """Parse ``lspci -Dnmm -d 10de:`` (machine-readable, numeric) into slot/class/vendor/device dicts."""
    devices = []
    for line in text.splitlines():
        match = _PCI_LINE.match(line.strip())
        if match:
            devices.append({k: match.group(k).lower() for k in ("slot", "cls", "vendor", "device")})
    return devices


def nvswitch_present(lspci_text: str) -> bool:
    """True when an NVIDIA bridge device (an NVSwitch, PCI class 0680) is listed.

    Works on ``lspci -Dnmm -d 10de:`` (class ``0680``) and on the human-readable ``lspci``
    (``Bridge: NVIDIA Corporation ...`` or a name containing ``NVSwitch``).
    """
    for device in parse_lspci(lspci_text):
        if device["vendor"] == "10de" and device["cls"].startswith("0680"):
            return True
    return any(
        "nvswitch" in line.lower() or ("bridge" in line.lower() and "nvidia" in line.lower())
        for line in lspci_text.splitlines()
        if not _PCI_LINE.match(line.strip())
    )


def gpus_from_lspci(lspci_text: str) -> list[dict[str, str]]:
    """The known GPUs (name, compute capability, architecture) behind NVIDIA display/3D devices."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for gpu in load("gpus")["gpus"]:
        for pci_id in gpu.get("pci_ids") or []:
            by_id[str(pci_id).lower().removeprefix("0x")] = gpu
    found = []
    for device in parse_lspci(lspci_text):
        if device["vendor"] != "10de" or not device["cls"].startswith("03"):
            continue
        gpu = by_id.get(device["device"])
        found.append(
            {
                "slot": device["slot"],
                "pci_id": device["device"],
                "name": str(gpu["name"]) if gpu else "unknown",
                "compute_capability": str(gpu["compute_capability"]) if gpu else "",
                "architecture": str(gpu["architecture"]) if gpu else "",
            }
        )
    return found


def _cc(text: str) -> tuple[int, int]:
    major, minor = str(text).split(".")
    return int(major), int(minor)


def kernel_modules(setting: str, branch: Any, gpus: Iterable[Mapping[str, str]] = ()) -> str:
    """Resolve ``nvidia_driver_kernel_modules`` (open|proprietary|auto) for a branch and the GPUs.

    ``auto`` follows NVIDIA's rules in drivers.yml: open from ``open_default_from_branch`` on when
    every known GPU supports them, proprietary otherwise. An explicit choice the hardware or branch
    cannot run raises (the preflight play reports the same through the resolver).
    """
    _check_choice("nvidia_driver_kernel_modules", setting, KERNEL_MODULES)
    name = check_branch(branch)
    data = load("drivers")
    rules = data["rules"]
    branch_info = data["branches"].get(name, {})
    offered = set(branch_info.get("kernel_modules") or ["proprietary", "open"])
    ccs = [_cc(g["compute_capability"]) for g in gpus if g.get("compute_capability")]
    open_min = _cc(rules["open_min_compute_capability"])
    open_required = _cc(rules["open_required_from_compute_capability"])
    if setting == "auto":
        if any(cc >= open_required for cc in ccs):
            choice = "open"
        elif any(cc < open_min for cc in ccs):
            choice = "proprietary"
        else:
            choice = "open" if int(name) >= int(rules["open_default_from_branch"]) else "proprietary"
        return choice if choice in offered else sorted(offered)[-1]
    if setting not in offered:
        raise NvidiaError(
            f"nvidia_driver_kernel_modules = {setting!r} is not offered by branch {name} "
            f"(drivers.yml lists {', '.join(sorted(offered))})"
        )
    if setting == "open" and any(cc < open_min for cc in ccs):
        raise NvidiaError(
            f"nvidia_driver_kernel_modules = 'open' needs compute capability {rules['open_min_compute_capability']}"
            " (Turing) or newer on every GPU; this host has older GPUs: use 'proprietary'"
        )
    if setting == "proprietary" and any(cc >= open_required for cc in ccs):
        raise NvidiaError(
            "nvidia_driver_kernel_modules = 'proprietary' cannot drive compute capability "
            f"{rules['open_required_from_compute_capability']} (Blackwell) or newer: use 'open'"
        )
    return setting


# ----------------------------------------------------------------------------- packages


def kernel_flavour(kernel_release: str) -> str:
    """``uname -r`` -> the kernel flavour Canonical's module packages are named after."""
    match = _KERNEL_RELEASE.match(kernel_release.strip())
    if not match:
        raise NvidiaError(
            f"kernel release {kernel_release!r} is not an Ubuntu kernel (VERSION-ABI-FLAVOUR, e.g. 6.8.0-45-generic)"
        )
    return match.group("flavour")


def _lrm_meta(image_meta: str) -> str:
    """A kernel meta suffix -> the suffix of Canonical's module metas (virtual kernels are generic)."""
    return "generic" + image_meta[len("virtual") :] if image_meta.startswith("virtual") else image_meta


def _meta_follows(meta: str, flavour: str) -> bool:
    """Whether kernel meta ``meta`` (already mapped) installs kernels of ``flavour``."""
    if meta == flavour:
        return True
    rest = meta[len(flavour) + 1 :] if meta.startswith(flavour + "-") else ""
    return rest.startswith(("hwe-", "lts-", "edge"))


def kernel_meta(installed: Iterable[str], kernel_release: str) -> str:
    """The kernel meta the host follows, as Canonical's module metas name it.

    ``linux-modules-nvidia-<driver>-<meta>`` depends on the modules for the kernel ABI that
    ``linux-image-<meta>`` currently installs, so the modules follow kernel updates. The meta is
    read from the installed ``linux-image-<meta>`` packages whose kernels have the running
    kernel's flavour: ``generic``, ``generic-hwe-24.04``, ``aws``... ``virtual`` kernels are
    generic kernels (``linux-image-virtual-hwe-24.04`` -> ``generic-hwe-24.04``). An HWE meta wins
    over the GA one; with none installed, the flavour itself.
    """
    flavour = kernel_flavour(kernel_release)
    metas = set()
    for package in installed:
        match = _KERNEL_IMAGE_META.match(package)
        if not match or _KERNEL_ABI.search(package) or match.group("meta").startswith(("unsigned", "extra")):
            continue
        meta = _lrm_meta(match.group("meta"))
        if _meta_follows(meta, flavour):
            metas.add(meta)
    if not metas:
        return flavour
    return sorted(metas, key=lambda m: (m != flavour, not m.endswith("edge"), m), reverse=True)[0]


def _suffix(branch: str, *, server_line: bool, open_modules: bool) -> str:
    return f"{branch}{'-server' if server_line else ''}{'-open' if open_modules else ''}"


def package_plan(
    branch: Any,
    *,
    source: str = "ubuntu",
    flavour: str = "server",
    modules: str = "open",
    server_line: bool = True,
    userspace_only: bool = False,
    kernel_release: str = "",
    kernel_meta: str = "",
) -> dict[str, Any]:
    """The packages for one driver install.

    Returns ``driver`` (userspace and meta packages; never a DKMS package on the precompiled
    path), ``modules_meta`` (Canonical's signed module meta for the kernel line the host follows:
    it provides ``nvidia-dkms-*`` and pulls the modules of each new kernel), ``modules_prefix``
    (``modules_prefix + uname -r`` is the module package of one kernel), ``modules_running``
    (that package for the running kernel), ``dkms`` (the DKMS path: DKMS package, headers of the
    running kernel and the headers meta so that new kernels get headers), ``pinning`` (NVIDIA's
    branch-pinning package, NVIDIA source only), ``fabricmanager`` and ``probe`` (the package
    whose version is the driver's). ``kernel_meta`` is :func:`kernel_meta`'s answer (default: the
    running kernel's flavour).
    """
    name = check_branch(branch)
    _check_choice("nvidia_driver_source", source, SOURCES)
    _check_choice("nvidia_driver_flavour", flavour, FLAVOURS)
    _check_choice("nvidia_driver_kernel_modules", modules, ("open", "proprietary"))
    open_modules = modules == "open"
    plan: dict[str, Any] = {
        "branch": name,
        "driver": [],
        "modules_meta": "",
        "modules_prefix": "",
        "modules_running": "",
        "dkms": [],
        "pinning": "",
        "fabricmanager": "",
        "probe": "",
    }
    if source == "ubuntu":
        srv = "-server" if server_line else ""
        plan["probe"] = f"libnvidia-compute-{name}{srv}"
        full = _suffix(name, server_line=server_line, open_modules=open_modules)
        if userspace_only:
            # No modules in this mode: the -open variant would only add the open module sources.
            plan["driver"] = [
                f"nvidia-headless-no-dkms-{name}{srv}",
                f"nvidia-utils-{name}{srv}",
                f"libnvidia-compute-{name}{srv}",
            ]
        elif flavour == "server":
            # nvidia-headless-<full> depends on nvidia-dkms-<full>: DKMS would build its own module
            # into updates/dkms, which depmod prefers over the Canonical-signed one. no-dkms + the
            # module packages (or + nvidia-dkms on the DKMS path) is what ubuntu-drivers installs.
            plan["driver"] = [f"nvidia-headless-no-dkms-{full}", f"nvidia-utils-{name}{srv}"]
        else:
            # Depends on nvidia-dkms-<full>, which the module meta provides (same apt transaction).
            plan["driver"] = [f"nvidia-driver-{full}"]
        if not userspace_only and kernel_release:
            meta = kernel_meta or kernel_flavour(kernel_release)
            plan["modules_prefix"] = f"linux-modules-nvidia-{full}-"
            plan["modules_meta"] = f"linux-modules-nvidia-{full}-{meta}"
            plan["modules_running"] = f"linux-modules-nvidia-{full}-{kernel_release}"
            plan["dkms"] = [f"nvidia-dkms-{full}", f"linux-headers-{kernel_release}", f"linux-headers-{meta}"]
        plan["fabricmanager"] = f"nvidia-fabricmanager-{name}"
        return plan
    # NVIDIA's CUDA repository: from 590 on the packages carry no branch in their names and the
    # branch is chosen by installing nvidia-driver-pinning-<branch> first (it exists for 580 too).
    plan["pinning"] = f"nvidia-driver-pinning-{name}"
    versioned = int(name) < 590
    tag = f"-{name}" if versioned else ""
    plan["probe"] = f"libnvidia-compute{tag}"
    if userspace_only:
        plan["driver"] = [f"libnvidia-compute{tag}", f"nvidia-utils{tag}"]
    elif flavour == "server":
        dkms = f"nvidia-dkms{tag}{'-open' if open_modules else ''}"
        plan["driver"] = [f"libnvidia-compute{tag}", f"nvidia-utils{tag}", dkms]
    else:
        plan["driver"] = ["nvidia-open" if open_modules else "cuda-drivers"]
    if not userspace_only and kernel_release:
        meta = kernel_meta or kernel_flavour(kernel_release)
        plan["dkms"] = [f"linux-headers-{kernel_release}", f"linux-headers-{meta}"]
    if not userspace_only:
        # NVIDIA's repository ships the daemon in its own package (Ubuntu's in nvidia-compute-utils,
        # which nvidia-headless-no-dkms depends on): named so that its unit is always there.
        plan["driver"].append("nvidia-persistenced")
    # Fabric Manager lost the branch in its name already with 580 in NVIDIA's repository.
    plan["fabricmanager"] = "nvidia-fabricmanager" if int(name) >= 580 else f"nvidia-fabricmanager-{name}"
    return plan


def fabricmanager_spec(package: str, driver_deb_version: str) -> str:
    """``nvidia-fabricmanager-580=580.178.04-*``: Fabric Manager at the driver's upstream version.

    Fabric Manager is its own source package with its own Debian revision (Ubuntu's
    ``fabric-manager-580``; NVIDIA's repository uses ``-1`` where its driver has
    ``-0ubuntu1``), so only the upstream version is pinned.
    """
    upstream = upstream_version(driver_deb_version)
    if not upstream:
        raise NvidiaError(
            f"the installed driver version {driver_deb_version!r} is not a driver version: "
            "Fabric Manager cannot be matched to it"
        )
    return f"{package}={upstream}-*"


def _branch_of(package: str) -> str:
    """The driver branch a package name carries, or ``""``.

    ``linux-modules-nvidia-580-server-open-6.8.0-151-generic`` -> ``580``;
    ``linux-signatures-nvidia-6.8.0-151-generic`` -> ``""`` (kernel ABI 151 is no branch).
    """
    if not package.startswith(_NVIDIA_PREFIXES) or package.startswith("nvidia-driver-pinning-"):
        return ""
    match = _BRANCH_TOKEN.search(_NOT_A_BRANCH.sub("x", package))
    return match.group("branch") if match else ""


def is_module_package(package: str) -> bool:
    """True for Canonical's precompiled kernel-module packages (they follow the kernel)."""
    return package.startswith(_MODULE_PREFIXES)


def branch_packages(installed: Iterable[str], branch: Any) -> list[str]:
    """Installed NVIDIA packages whose name carries ``branch`` (``nvidia-utils-580-server``, ...)."""
    name = check_branch(branch)
    return sorted(p for p in installed if _branch_of(p) == name)


def held_packages(installed: Iterable[str], branch: Any) -> list[str]:
    """The installed packages of ``branch`` to hold: the driver, not the kernel modules.

    Precompiled module packages (``linux-modules-nvidia-580-server-open-6.8.0-151-generic`` and
    the flavour meta ``linux-modules-nvidia-580-server-open-generic``) must follow kernel updates;
    the driver they need stays put because its own packages are held.
    """
    return [p for p in branch_packages(installed, branch) if not is_module_package(p)]


def other_branch_packages(installed: Iterable[str], branch: Any) -> list[str]:
    """Installed NVIDIA packages of any *other* branch: what a deliberate branch change removes.

    Includes NVIDIA's pinning packages for other branches (``nvidia-driver-pinning-570``).
    """
    name = check_branch(branch)
    found = {p for p in installed if _branch_of(p) not in ("", name)}
    found |= {p for p in installed if p.startswith("nvidia-driver-pinning-") and p.rsplit("-", 1)[-1] != name}
    return sorted(found)


# NVIDIA's repository names its packages without the branch from 590 on (and some already with 580).
_UNVERSIONED_DRIVER = re.compile(
    r"^(?:libnvidia-(?:cfg1|common|compute|decode|encode|extra|fbc1|gl|gpucomp|nscq)|nvidia-(?:dkms|dkms-open|driver|driver-open|"
    r"open|utils|persistenced|fabricmanager|fabricmanager-dev|firmware|kernel-common|kernel-source|kernel-source-open|"
    r"modprobe|settings|imex|headless|headless-open)|cuda-drivers(?:-fabricmanager)?|xserver-xorg-video-nvidia)(?::\w+)?$"
)


def driver_packages(installed: Iterable[str]) -> list[str]:
    """Every installed package of the NVIDIA driver, of any branch and either source: what removal removes.

    The branch's packages, Canonical's kernel-module packages, NVIDIA's pinning packages and its
    unversioned names. Not the container toolkit (libnvidia-container*, nvidia-container-toolkit*)
    nor CUDA (cuda-*), which other roles own.
    """

    def ours(package: str) -> bool:
        if "container" in package:
            return False
        pinning = package.startswith("nvidia-driver-pinning-")
        return bool(_branch_of(package) or is_module_package(package) or pinning or _UNVERSIONED_DRIVER.match(package))

    return sorted({p for p in installed if ours(p)})


def upstream_version(deb_version: str) -> str:
    """``"580.178.04-0ubuntu0.24.04.1"`` -> ``"580.178.04"``; ``""`` when it is no driver version."""
    match = _DEB_UPSTREAM.match(str(deb_version).strip())
    return match.group("upstream") if match else ""


# ----------------------------------------------------------------------------- Secure Boot


def secure_boot_state(mokutil_output: str = "", efivar_hex: str = "") -> str:
    """``enabled``, ``disabled`` or ``unsupported`` (no UEFI / cannot tell).

    ``mokutil_output`` is ``mokutil --sb-state``; ``efivar_hex`` the hex dump (``od -An -tx1``) of
    ``/sys/firmware/efi/efivars/SecureBoot-8be4df61-...``: 4 attribute bytes then the value byte.
    """
    text = mokutil_output.lower()
    if "secureboot enabled" in text:
        return "enabled"
    if "secureboot disabled" in text:
        return "disabled"
    octets = efivar_hex.split()
    if len(octets) >= 5:
        return "enabled" if octets[4] == "01" else "disabled"
    return "unsupported"


def signatures_enforced(sig_enforce: str = "", lockdown: str = "", secure_boot: str = "") -> bool:
    """Whether the kernel refuses modules it cannot verify.

    ``sig_enforce`` is ``/sys/module/module/parameters/sig_enforce`` (``Y`` with
    ``module.sig_enforce=1`` or a kernel built to enforce), ``lockdown`` is
    ``/sys/kernel/security/lockdown`` (``none [integrity] confidentiality``: Ubuntu locks down under
    Secure Boot), ``secure_boot`` is :func:`secure_boot_state`'s answer.
    """
    selected = re.search(r"\[(\w+)\]", lockdown or "")
    return (
        sig_enforce.strip().upper() == "Y" or bool(selected and selected.group(1) != "none") or secure_boot == "enabled"
    )


# ----------------------------------------------------------------------------- the Ubuntu archive


def ubuntu_driver(release: str, branch: Any) -> dict[str, Any]:
    """What ubuntu.yml records for a branch on a release: ``{version, flavours}`` or ``{}``."""
    name = check_branch(branch)
    info = load("ubuntu")["releases"].get(str(release), {})
    return dict((info.get("drivers") or {}).get(name) or {})


def release_branches(release: str) -> list[str]:
    """The driver branches ubuntu.yml records for an Ubuntu release (``"24.04"``)."""
    info = load("ubuntu")["releases"].get(str(release), {})
    return sorted(str(b) for b in (info.get("drivers") or {}))


# ----------------------------------------------------------------------------- CUDA, cuDNN, NCCL

_CUDA_VERSION = re.compile(r"^(?P<major>\d{1,2})\.(?P<minor>\d{1,2})(?:\.\d+)?$")


def stack_version(value: Any) -> str:
    """A version from a ``dlstack_stack`` entry: a string, or a mapping with ``version``; ``""`` if none."""
    if isinstance(value, Mapping):
        value = value.get("version", "")
    return "" if value is None else str(value)


def cuda_major_minor(version: Any) -> tuple[str, str]:
    """``"12.8"`` or ``"12.8.1"`` -> ``("12", "8")``; raises naming ``cuda_toolkit_versions``."""
    match = _CUDA_VERSION.match(str(version).strip())
    if not match:
        raise NvidiaError(
            f"cuda_toolkit_versions entry {version!r} is not a CUDA version: use MAJOR.MINOR such as the "
            f"releases in dlstack/data/cuda.yml ({', '.join(load('cuda')['releases'])})"
        )
    return match.group("major"), match.group("minor")


def cuda_toolkit_plan(
    version: Any, source: str = "nvidia", release: str = "", template: str = "cuda-toolkit-{major}-{minor}"
) -> dict[str, str]:
    """Package, install prefix and alternative priority for one CUDA toolkit.

    ``nvidia``: NVIDIA's ``cuda-toolkit-X-Y`` under ``/usr/local/cuda-X.Y``. ``ubuntu``: the
    archive's ``nvidia-cuda-toolkit``, which installs into ``/usr`` and only exists in the one
    version ubuntu.yml records for the release (any other version raises).
    """
    _check_choice("cuda_toolkit_source", source, SOURCES)
    major, minor = cuda_major_minor(version)
    name = f"{major}.{minor}"
    if source == "ubuntu":
        packaged = str(load("ubuntu")["releases"].get(str(release), {}).get("nvidia_cuda_toolkit") or "")
        if not packaged or cuda_major_minor(packaged) != (major, minor):
            raise NvidiaError(
                f"cuda_toolkit_versions entry {name!r} is not what Ubuntu {release} packages as nvidia-cuda-toolkit "
                f"({packaged or 'none'}): use cuda_toolkit_source 'nvidia' for other versions"
            )
        return {"version": name, "package": "nvidia-cuda-toolkit", "prefix": "/usr", "priority": "0"}
    return {
        "version": name,
        "package": template.format(major=major, minor=minor),
        "prefix": f"/usr/local/cuda-{name}",
        "priority": str(int(major) * 100 + int(minor)),
    }


def cuda_source(setting: str, versions: Sequence[Any], release: str) -> str:
    """Resolve ``cuda_toolkit_source`` ``auto``: ubuntu when the only version asked is the archive's."""
    if setting != "auto":
        return _check_choice("cuda_toolkit_source", setting, ("auto", *SOURCES))
    packaged = str(load("ubuntu")["releases"].get(str(release), {}).get("nvidia_cuda_toolkit") or "")
    if packaged and len(versions) == 1 and cuda_major_minor(versions[0]) == cuda_major_minor(packaged):
        return "ubuntu"
    return "nvidia"


def cudnn_packages(version: Any, cuda_version: Any, source: str = "nvidia") -> list[str]:
    """apt specs for cuDNN (runtime and headers) built for the CUDA major of ``cuda_version``.

    cuDNN 9 ships ``libcudnn9-cuda-<major>`` / ``libcudnn9-dev-cuda-<major>``; cuDNN 8 ships
    ``libcudnn8`` / ``libcudnn8-dev`` with a ``+cudaX.Y`` version suffix. Ubuntu's archive has
    only ``nvidia-cudnn``, an installer that downloads from NVIDIA at install time: not supported.
    """
    text = stack_version(version)
    if source == "ubuntu":
        raise NvidiaError(
            "cuda_toolkit_cudnn_source = 'ubuntu' is not supported: Ubuntu's nvidia-cudnn package downloads cuDNN "
            "from NVIDIA while it installs (it fails offline and is not pinned); use 'nvidia' or set "
            "cuda_toolkit_cudnn_version to '' to skip cuDNN"
        )
    if not re.match(r"^\d+\.\d+\.\d+(\.\d+)?$", text):
        raise NvidiaError(f"cuda_toolkit_cudnn_version = {version!r} is not a cuDNN version such as 9.10.2.21")
    major = text.split(".")[0]
    cuda_major, _ = cuda_major_minor(cuda_version)
    # The resolver gives three parts (9.10.2); packages carry four (9.10.2.21-1): match any build.
    glob = f"{text}-*" if text.count(".") == 3 else f"{text}.*"
    if int(major) >= 9:
        return [f"libcudnn{major}-cuda-{cuda_major}={glob}", f"libcudnn{major}-dev-cuda-{cuda_major}={glob}"]
    return [f"libcudnn{major}={glob}+cuda{cuda_major}.*", f"libcudnn{major}-dev={glob}+cuda{cuda_major}.*"]


def nccl_packages(version: Any, cuda_version: Any, source: str = "nvidia") -> list[str]:
    """apt specs for NCCL: NVIDIA's repo versions carry ``+cudaX.Y``; Ubuntu's do not."""
    text = stack_version(version)
    if not re.match(r"^\d+\.\d+\.\d+$", text):
        raise NvidiaError(f"cuda_toolkit_nccl_version = {version!r} is not an NCCL version such as 2.27.5")
    if source == "ubuntu":
        return [f"libnccl2={text}-*", f"libnccl-dev={text}-*"]
    cuda_major, _ = cuda_major_minor(cuda_version)
    return [f"libnccl2={text}-*+cuda{cuda_major}.*", f"libnccl-dev={text}-*+cuda{cuda_major}.*"]


def ubuntu_nccl(release: str) -> str:
    """The libnccl2 version ubuntu.yml records for a release (``""`` when the archive has none)."""
    return str(load("ubuntu")["releases"].get(str(release), {}).get("libnccl2") or "")


def dpkg_installed(text: str) -> dict[str, str]:
    """``dpkg-query -W -f='${db:Status-Status}\\t${Package}\\t${Version}\\n'`` -> installed name: version."""
    found = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0] == "installed":
            found[parts[1]] = parts[2] if len(parts) > 2 else ""
    return found
