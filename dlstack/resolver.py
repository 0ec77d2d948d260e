"""The resolver: from any subset of {GPU, Ubuntu release, driver, kernel modules, CUDA, framework
specs} to one complete, consistent stack, or an error that names every violated rule.

How it works: the inputs are checked and turned into candidate lists (a framework spec such as
``torch==2.9.*`` becomes its matching releases and CUDA variants, newest first; an omitted input
becomes every value the data knows, newest first). A backtracking search walks these lists in order
of preference (frameworks, then Ubuntu release, CUDA, driver branch, kernel-module flavour) and checks
each rule as soon as the values it reads are chosen, so the first complete candidate is the newest
stack that fits. When none fits, a second search finds the candidate that breaks the fewest rules;
the error lists each rule it breaks with what would satisfy it, and, for each input the caller gave,
whether dropping that input alone gives a stack (and which).

The GPU may be a model, a family of models sharing a compute capability (``A100``), a compute
capability, or the host's PCI device ids; an id gpus.yml does not know is judged by the Ubuntu driver
packages that list it (``nvidia_pci_ids.yml``), which may leave several compute capabilities: every
rule is then checked for each of them.

Public API: :func:`resolve`, :class:`Stack`, :class:`ResolutionError`, :func:`find_gpu`,
:func:`gpu_from_smi`, :func:`gpu_family`, :func:`pci_device_ids`, :func:`pci_gpu`, :func:`pci_gpus`,
:func:`pci_problems`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os as _os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from dlstack.matrix import (
    CC,
    KERNEL_MODULES,
    TORCH_COMPANIONS,
    UBUNTU_FLAVOURS,
    CudaRelease,
    DriverBranch,
    DriverRules,
    DriverVersion,
    FrameworkRelease,
    Gpu,
    Matrix,
    PackageKey,
    PciIds,
    UbuntuRelease,
    Variant,
    cc_str,
    driver_package,
    load_matrix,
    load_pci_ids,
    parse_cc,
    parse_driver_version,
    parse_major_minor,
)

DRIVER_SOURCES = ("ubuntu", "nvidia")
# Ubuntu's package lines: "server" (nvidia-driver-NNN-server, datacenter-qualified) or "desktop".
DRIVER_LINES = ("server", "desktop")
# The ubuntu.yml flavour a (line, kernel modules) pair needs.
UBUNTU_FLAVOUR = {
    ("server", "proprietary"): "server",
    ("server", "open"): "server-open",
    ("desktop", "proprietary"): "proprietary",
    ("desktop", "open"): "open",
}
FRAMEWORK_ALIASES = {
    "torch": "torch",
    "pytorch": "torch",
    "tensorflow": "tensorflow",
    "tensorflow-gpu": "tensorflow",
    "jax": "jax",
    "jaxlib": "jax",
}
FRAMEWORK_ORDER = ("torch", "tensorflow", "jax")


# What a GPU may be given as, for the messages that refuse one (resolve()'s gpu=, the CLI's --gpu).
GPU_FORMS = "a GPU model ('H100 SXM'), a family ('A100'), an nvidia-smi name or an lspci -nn line"


class ResolutionError(ValueError):
    """No stack satisfies the constraints, or an input is malformed. The message says why and what fits."""


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class FrameworkChoice:
    name: str
    version: str
    variant: str
    cuda: str
    index: str  # "pypi" or "pytorch"
    index_url: str | None
    requirement: str
    # torch: {"torchvision": "0.29.1", "torchaudio": None}: the releases built for this torch
    companions: Mapping[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "variant": self.variant,
            "cuda": self.cuda,
            "index": self.index,
            "index_url": self.index_url,
            "requirement": self.requirement,
        }
        if self.name == "torch":
            out["companions"] = dict(self.companions)
        return out


@dataclass(frozen=True)
class PciGpu:
    """What the data says about one NVIDIA PCI device id (see :func:`pci_gpu`)."""

    pci_id: str  # four hex digits, e.g. "1b81"
    gpu: Gpu | None  # the gpus.yml model that lists the id, if any
    architectures: tuple[str, ...]  # the model's, or those the driver packages listing it allow (oldest first)
    compute_capabilities: tuple[CC, ...]  # ascending; one when the model is known
    packages: frozenset[PackageKey]  # the Ubuntu driver packages whose Modaliases list it

    @property
    def label(self) -> str:
        if self.gpu:
            return f"PCI device 10de:{self.pci_id} ({self.gpu.name})"
        return (
            f"PCI device 10de:{self.pci_id} (a {_either(self.architectures)} GPU, "
            f"compute capability {_cc_span(self.compute_capabilities)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pci_id": self.pci_id,
            "name": self.gpu.name if self.gpu else None,
            "architectures": list(self.architectures),
            "compute_capabilities": [cc_str(cc) for cc in self.compute_capabilities],
            "branches": sorted({str(branch) for _, branch, _ in self.packages}),
        }


@dataclass(frozen=True)
class GpuTarget:
    """The GPU(s) a stack must run on: a model, a family of models, a compute capability or PCI devices.

    ``ccs`` holds every compute capability the GPU(s) may have; each rule must hold for all of them.
    """

    label: str  # for messages: "Tesla P100 PCIe (pascal, compute capability 6.0)"
    ccs: tuple[CC, ...]  # ascending, never empty
    archs: tuple[str, ...]  # oldest first
    gpu: Gpu | None = None  # the exact model, when known
    family: str | None = None  # the family name given ("A100") when it is not one model
    variants: tuple[Gpu, ...] = ()
    devices: tuple[PciGpu, ...] = ()  # the host's PCI devices, when given
    notes: tuple[str, ...] = ()  # warnings the stack carries

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.gpu.name if self.gpu else None,
            "compute_capability": cc_str(self.ccs[0]) if len(self.ccs) == 1 else None,
            "architecture": self.archs[0] if len(self.archs) == 1 else None,
        }
        if self.family:
            out["family"] = self.family
            out["variants"] = [g.name for g in self.variants]
        if self.devices:
            out["pci_ids"] = [d.pci_id for d in self.devices]
            out["compute_capabilities"] = [cc_str(cc) for cc in self.ccs]
            out["architectures"] = list(self.archs)
        return out


@dataclass(frozen=True)
class Stack:
    target: GpuTarget | None
    os: str
    python: str
    driver_branch: str
    driver_min_version: str
    kernel_modules: str
    packages_available_in_ubuntu: bool
    cuda: str
    cudnn: str
    nccl: str
    frameworks: tuple[FrameworkChoice, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def gpu(self) -> Gpu | None:
        return self.target.gpu if self.target else None

    @property
    def compute_capability(self) -> str | None:
        return self.target.to_dict()["compute_capability"] if self.target else None

    @property
    def architecture(self) -> str | None:
        return self.target.to_dict()["architecture"] if self.target else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; the keys are the contract the preflight play and the roles read."""
        return {
            "gpu": self.target.to_dict() if self.target else None,
            "os": self.os,
            "driver": {
                "branch": self.driver_branch,
                "min_version": self.driver_min_version,
                "kernel_modules": self.kernel_modules,
                "packages_available_in_ubuntu": self.packages_available_in_ubuntu,
            },
            "cuda": self.cuda,
            "cudnn": self.cudnn,
            "nccl": self.nccl,
            "python": self.python,
            "frameworks": {f.name: f.to_dict() for f in self.frameworks},
            "warnings": list(self.warnings),
        }


def _either(items: Sequence[str]) -> str:
    """``["maxwell", "pascal", "volta"]`` -> ``"maxwell, pascal or volta"``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _both(items: Sequence[str]) -> str:
    """``["Maxwell", "Pascal", "Volta"]`` -> ``"Maxwell, Pascal and Volta"``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _cc_span(ccs: Sequence[CC]) -> str:
    return cc_str(ccs[0]) if len(ccs) == 1 else f"{cc_str(ccs[0])} to {cc_str(ccs[-1])}"


# ----------------------------------------------------------------------------- GPU names


def _norm(text: str) -> str:
    text = re.sub(r"[®™()]", " ", text.lower())
    text = re.sub(r"\b(nvidia|corporation|tesla|geforce|generation)\b", " ", text)
    return re.sub(r"[\s_-]+", " ", text).strip()


def _gpu_index(matrix: Matrix) -> tuple[dict[str, Gpu], dict[str, Gpu], dict[str, Gpu]]:
    exact: dict[str, Gpu] = {}
    normal: dict[str, Gpu] = {}
    pci: dict[str, Gpu] = {}
    for gpu in matrix.gpus:
        for label in (gpu.name, *gpu.aliases):
            exact[label.lower()] = gpu
            normal.setdefault(_norm(label), gpu)
        for device in gpu.pci_ids:
            pci[device.removeprefix("0x")] = gpu
    return exact, normal, pci


_INDEX_CACHE: dict[int, tuple[dict[str, Gpu], dict[str, Gpu], dict[str, Gpu]]] = {}


def _index(matrix: Matrix) -> tuple[dict[str, Gpu], dict[str, Gpu], dict[str, Gpu]]:
    key = id(matrix)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = _gpu_index(matrix)
    return _INDEX_CACHE[key]


def find_gpu(text: str, matrix: Matrix | None = None) -> Gpu | None:
    """A known GPU from its model name, an alias, an ``nvidia-smi`` name or an ``lspci -nn`` line."""
    matrix = matrix or load_matrix()
    exact, normal, pci = _index(matrix)
    raw = str(text).strip()
    if not raw:
        return None
    if raw.lower() in exact:
        return exact[raw.lower()]
    device = re.search(r"\[10de:([0-9a-f]{4})\]", raw.lower())
    if device and device.group(1) in pci:
        return pci[device.group(1)]
    bracket = re.findall(r"\[([^\]]+)\]", raw)
    for candidate in [*bracket, raw]:
        norm = _norm(candidate)
        if norm in normal:
            return normal[norm]
    if device:
        # an lspci line whose device id gpus.yml lacks: the id decides (the driver packages know it), not a
        # name it contains ("GeForce GTX 1050 Ti Mobile" is not the desktop GTX 1050 Ti)
        return None
    # the longest known name contained in the text ("NVIDIA GeForce RTX 4090 D" -> GeForce RTX 4090)
    norm = _norm(raw)
    contained = [(len(k), g) for k, g in normal.items() if k and re.search(rf"(^| ){re.escape(k)}( |$)", norm)]
    if contained:
        return max(contained, key=lambda item: item[0])[1]
    return None


def gpu_from_smi(text: str) -> str | None:
    """Map an ``nvidia-smi --query-gpu=name`` string or an ``lspci`` description to a model name."""
    gpu = find_gpu(text)
    return gpu.name if gpu else None


def _closest_gpus(text: str, matrix: Matrix) -> list[str]:
    exact, _, _ = _index(matrix)
    matches = difflib.get_close_matches(str(text).lower(), list(exact), n=6, cutoff=0.4)
    names: list[str] = []
    for match in matches:
        if exact[match].name not in names:
            names.append(exact[match].name)
    return names[:3]


def gpu_family(text: str, matrix: Matrix | None = None) -> tuple[Gpu, ...]:
    """The known models whose name or an alias starts with ``text`` as whole words, in gpus.yml order.

    ``"A100"`` -> the four A100 models; ``"Tesla P100"`` -> both P100s; ``()`` when none matches.
    """
    matrix = matrix or load_matrix()
    _, normal, _ = _index(matrix)
    words = _norm(str(text)).split()
    if not words:
        return ()
    names = {gpu.name for key, gpu in normal.items() if key.split()[: len(words)] == words}
    return tuple(gpu for gpu in matrix.gpus if gpu.name in names)


# ----------------------------------------------------------------------------- PCI device ids

NVIDIA_VENDOR = "10de"
_DISPLAY_CLASS = "03"  # PCI class 03xx: display controllers (VGA 0300, 3D 0302); not audio, USB or NVSwitch
_LSPCI_NN = re.compile(r"\[(?P<cls>[0-9a-f]{4})\]:.*\[(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\]")
_LSPCI_N = re.compile(r"^\S+\s+(?P<cls>[0-9a-f]{4}):\s+(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\b")
_PCI_ID = re.compile(r"(?:0x)?(?:(?P<vendor>[0-9a-f]{4}):)?(?P<device>[0-9a-f]{4})")


def pci_device_ids(devices: str | Iterable[str]) -> tuple[str, ...]:
    """The NVIDIA GPU device ids (``"1b81"``) in ``lspci -nn`` (or ``lspci -n``) output or a list of ids.

    Accepts the output as one text or its lines, and ids as ``1b81``, ``0x1b81`` or ``10de:1b81``.
    Other vendors and NVIDIA functions that are no display controller (audio, USB, NVSwitch) are
    skipped; duplicates (eight identical GPUs) are listed once. Raises ``ValueError`` naming an entry
    that is none of these.
    """
    lines = devices.splitlines() if isinstance(devices, str) else [str(d) for d in devices]
    found: dict[str, None] = {}
    for raw in lines:
        line = raw.strip().lower()
        if not line:
            continue
        listed = _LSPCI_NN.search(line) or _LSPCI_N.match(line)
        bare = None if listed else _PCI_ID.fullmatch(line)
        if listed is None and bare is None:
            raise ValueError(
                f"pci_ids: {raw!r} is neither an `lspci -nn` line nor an NVIDIA device id such as "
                "'1b81', '0x1b81' or '10de:1b81'"
            )
        match = listed or bare
        if (match["vendor"] or NVIDIA_VENDOR) == NVIDIA_VENDOR and (
            listed is None or listed["cls"].startswith(_DISPLAY_CLASS)
        ):
            found[match["device"]] = None
    return tuple(found)


def _arch_ccs(archs: Iterable[str], matrix: Matrix) -> tuple[CC, ...]:
    """Every compute capability the data knows within ``archs``: each one's first, and each model's."""
    archs = set(archs)
    ccs = {matrix.architectures[a] for a in archs} | {
        g.compute_capability for g in matrix.gpus if g.architecture in archs
    }
    return tuple(sorted(ccs))


def _module_evidence(packages: frozenset[PackageKey], matrix: Matrix, pci: PciIds) -> set[str]:
    """Architectures the open kernel modules' lists allow: listed by an -open package means Turing or newer;
    listed by a package whose -open twin (same release, branch and line) does not list it means older."""
    newer = {a for a, cc in matrix.architectures.items() if cc >= matrix.driver_rules.open_min_cc}
    if any(UBUNTU_FLAVOURS[flavour] == "open" for _, _, flavour in packages):
        return newer
    for release, branch, flavour in packages:
        twin = "server-open" if flavour.startswith("server") else "open"
        if (release, branch, twin) in pci.packages:
            return set(matrix.architectures) - newer
    return set(matrix.architectures)


def _dropped_evidence(packages: frozenset[PackageKey], matrix: Matrix, pci: PciIds) -> list[set[str]]:
    """Per newer branch (newest first) whose packages do not list the device: the architectures it leaves."""
    listing = {branch for _, branch, _ in packages}
    out = []
    for branch in sorted({b for _, b, _ in pci.packages} - listing, reverse=True):
        known = matrix.driver_branch(branch)
        if known is not None and branch > min(listing):
            out.append(set(matrix.architectures) - known.architectures)
    return out


def _archs_from_packages(packages: frozenset[PackageKey], matrix: Matrix, pci: PciIds) -> tuple[str, ...]:
    """The architectures a device may have, judged only from which driver packages list it.

    A branch that lists it supports its architecture (drivers.yml); the open-module lists and newer
    branches that no longer list it narrow that down, each only where it leaves some architecture
    (a package may list or omit a single device against its branch's rule).
    """
    archs = set(matrix.architectures)
    for branch in {b for _, b, _ in packages}:
        known = matrix.driver_branch(branch)
        if known is not None:
            archs &= known.architectures
    for allowed in [_module_evidence(packages, matrix, pci), *_dropped_evidence(packages, matrix, pci)]:
        if archs & allowed:
            archs &= allowed
    return tuple(a for a in matrix.architectures if a in archs)


def pci_gpu(device: str, matrix: Matrix | None = None) -> PciGpu | None:
    """What the data knows about one NVIDIA device id (``1b81``, ``10de:1b81`` or an ``lspci -nn`` line).

    The gpus.yml model when it lists the id (its compute capability); otherwise, when an Ubuntu driver
    package lists it, the architectures and compute capabilities those packages allow; ``None`` when
    no data knows it.
    """
    matrix = matrix or load_matrix()
    ids = pci_device_ids([device])
    if not ids:
        raise ValueError(f"pci_ids: {device!r} is not an NVIDIA ({NVIDIA_VENDOR}) display device")
    pci = load_pci_ids()
    packages = pci.by_device.get(int(ids[0], 16), frozenset())
    gpu = _index(matrix)[2].get(ids[0])
    if gpu is not None:
        return PciGpu(ids[0], gpu, (gpu.architecture,), (gpu.compute_capability,), packages)
    if not packages:
        return None
    archs = _archs_from_packages(packages, matrix, pci)
    return PciGpu(ids[0], None, archs, _arch_ccs(archs, matrix), packages)


def pci_gpus(devices: str | Iterable[str], matrix: Matrix | None = None) -> dict[str, PciGpu | None]:
    """:func:`pci_gpu` for each NVIDIA GPU in ``lspci -nn`` output or a list of ids, by id (``None``: unknown)."""
    return {pci_id: pci_gpu(pci_id, matrix) for pci_id in pci_device_ids(devices)}


def _flavours(kernel_modules: str | None, line: str | None) -> tuple[str, ...]:
    """The ubuntu.yml flavours that match a kernel-module choice and a package line (None: any)."""
    return tuple(
        flavour
        for (line_, modules), flavour in UBUNTU_FLAVOUR.items()
        if (kernel_modules is None or modules == kernel_modules) and (line is None or line_ == line)
    )


def _packages_text(keys: Iterable[PackageKey]) -> str:
    return ", ".join(sorted({driver_package(branch, flavour) for _, branch, flavour in keys}))


def _unlisted(device: PciGpu, release: str, branch: int, flavours: Sequence[str], pci: PciIds) -> str | None:
    """Why ``branch`` does not drive ``device`` on ``release`` by its packages' Modaliases; None when it does
    (or when the release packages the branch in none of ``flavours``: then no package data applies)."""
    keys = [(release, branch, f) for f in flavours if (release, branch, f) in pci.packages]
    if not keys or any(key in device.packages for key in keys):
        return None
    fits = [k for k in device.packages if k[0] == release and k[2] in flavours]
    elsewhere = [k for k in device.packages if k[0] == release and k[2] not in flavours]
    if fits:
        fix = f"packages that do: {_packages_text(fits)} (branch {_either(sorted({str(k[1]) for k in fits}))})"
    elif elsewhere:
        fix = f"only {_packages_text(elsewhere)} do: use that kernel-module flavour or package line"
    else:
        fix = f"no driver package of Ubuntu {release} lists it"
    return (
        f"driver branch {branch} as Ubuntu {release} packages it ({_packages_text(keys)}) does not support "
        f"{device.label}: their Modaliases do not list it (nvidia_pci_ids.yml, read {pci.snapshot}); {fix}"
    )


def _has_packages(branch: int, flavours: Sequence[str]) -> bool:
    pci = load_pci_ids()
    return any((release, branch, f) in pci.packages for release in pci.releases_of(branch) for f in flavours)


def _package_problem(device: PciGpu, branch: int, release: str, flavours: Sequence[str]) -> str | None:
    """Why Ubuntu's packages of ``branch`` in ``flavours`` do not list ``device``: on ``release``, or, where
    that release does not package the branch so, on the newest release that does; None when they list it."""
    pci = load_pci_ids()
    for where in (release, *reversed(pci.releases_of(branch))):
        if any((where, branch, f) in pci.packages for f in flavours):
            return _unlisted(device, where, branch, flavours, pci)
    return None


def _unknown_device(pci_id: str, pci: PciIds) -> str:
    return (
        f"PCI device 10de:{pci_id} is an NVIDIA GPU that no data knows (not in gpus.yml, not listed by the "
        f"Ubuntu driver packages read {pci.snapshot}): set dlstack_gpu to its model name as nvidia-smi "
        "prints it (e.g. 'NVIDIA GeForce RTX 3090'), or dlstack_compute_capability to its compute "
        "capability (e.g. '8.6'); on the command line: --gpu or --compute-capability"
    )


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _FrameworkSpec:
    name: str
    text: str
    candidates: tuple[tuple[FrameworkRelease, Variant], ...]


@dataclass(frozen=True)
class _Inputs:
    target: GpuTarget | None
    os: tuple[UbuntuRelease, ...]
    os_given: bool
    cuda: tuple[CudaRelease, ...]
    cuda_given: bool
    drivers: tuple[DriverBranch, ...]
    driver_given: bool
    driver_version: DriverVersion | None
    kernel_modules: str | None
    frameworks: tuple[_FrameworkSpec, ...]
    driver_source: str
    driver_line: str | None = None
    allow_compat: bool = True  # accept CUDA minor-version compatibility (tried only when no native fit)


def _arch_of(cc: CC, matrix: Matrix) -> str:
    best = None
    for name, first in matrix.architectures.items():
        if first <= cc and (best is None or first > matrix.architectures[best]):
            best = name
    return best or "unknown"


def _parse_os(value: str, matrix: Matrix) -> UbuntuRelease:
    text = str(value).strip().lower()
    for release in matrix.ubuntu.values():
        if text == release.codename:
            return release
    match = re.fullmatch(r"(?:ubuntu[\s:-]?)?(\d{2}\.\d{2})", text)
    if match and match.group(1) in matrix.ubuntu:
        return matrix.ubuntu[match.group(1)]
    known = ", ".join(f"ubuntu{v} ({r.codename})" for v, r in matrix.ubuntu.items())
    raise ValueError(f"os={value!r} is not a supported Ubuntu release; accepted: {known}")


def _branch_and_version(value: str | int) -> tuple[int, DriverVersion | None]:
    text = str(value).strip()
    if re.fullmatch(r"\d{3}", text):
        return int(text), None
    try:
        version = parse_driver_version(text)
    except ValueError:
        raise ValueError(
            f"driver={value!r} is neither a branch (e.g. '580') nor a driver version (e.g. '580.65.06')"
        ) from None
    return version.branch, version


def _parse_driver(value: str | int, matrix: Matrix) -> tuple[DriverBranch, DriverVersion | None]:
    branch, version = _branch_and_version(value)
    found = matrix.driver_branch(branch)
    if found is None:
        known = ", ".join(d.name for d in reversed(matrix.drivers))
        raise ValueError(f"driver={value!r}: branch {branch} is not one dlstack knows; known branches: {known}")
    return found, version


def _parse_cuda(value: str, matrix: Matrix) -> CudaRelease:
    text = str(value).strip().lower().removeprefix("cuda").strip()
    match = re.fullmatch(r"cu(\d{2})(\d)", text)
    if match:
        text = f"{match.group(1)}.{match.group(2)}"
    parts = text.split(".")
    if len(parts) == 3 and parts[2].isdigit():
        text = ".".join(parts[:2])
    try:
        version = parse_major_minor(text)
    except ValueError:
        raise ValueError(f"cuda={value!r} is not a CUDA version such as '12.8' or '13.0'") from None
    found = matrix.cuda_release(version)
    if found is None:
        known = ", ".join(c.name for c in reversed(matrix.cuda))
        raise ValueError(f"cuda={value!r}: CUDA {text} is not a release dlstack knows; known: {known}")
    return found


def _parse_companion(spec: str, requirement: Requirement, matrix: Matrix) -> _FrameworkSpec:
    """``torchvision`` / ``torchaudio>=2.9``: a torch that has a matching release of it (pytorch.yml
    companions); the torch spec it becomes is merged with any torch spec given beside it."""
    name = requirement.name.lower()
    releases = [
        r
        for r in matrix.frameworks["torch"]
        if r.companions.get(name) is not None and requirement.specifier.contains(r.companions[name], prereleases=True)  # type: ignore[arg-type]
    ]
    if not releases:
        paired = ", ".join(
            f"{r.companions[name]} (torch {r.version})"
            for r in matrix.frameworks["torch"][:6]
            if r.companions.get(name)
        )
        raise ValueError(f"framework {spec!r}: no torch dlstack knows has a {name} that matches; newest: {paired}")
    return _FrameworkSpec("torch", str(spec).strip(), tuple((r, v) for r in releases for v in r.variants))


def _is_companion(*texts: str) -> bool:
    """Whether one of two torch specs came from torchvision/torchaudio (those combine with a torch spec)."""
    return any(re.match(rf"\s*({'|'.join(TORCH_COMPANIONS)})\b", text, re.IGNORECASE) for text in texts)


def _merge_specs(first: _FrameworkSpec, second: _FrameworkSpec) -> _FrameworkSpec | None:
    """torch given with torchvision/torchaudio: the candidates both allow (None when there are none)."""
    allowed = set(second.candidates)
    both = tuple(pair for pair in first.candidates if pair in allowed)
    return _FrameworkSpec(first.name, f"{first.text}, {second.text}", both) if both else None


def _parse_framework(spec: str, matrix: Matrix) -> _FrameworkSpec:
    text = str(spec).strip()
    local = re.search(r"\+(cu\d{3}|cpu)\b", text)
    try:
        requirement = Requirement(re.sub(r"\+(cu\d{3}|cpu)\b", "", text))
    except InvalidRequirement as exc:
        raise ValueError(f"framework {spec!r} is not a pip requirement such as 'torch==2.9.*': {exc}") from None
    if requirement.name.lower() in TORCH_COMPANIONS:
        return _parse_companion(spec, requirement, matrix)
    name = FRAMEWORK_ALIASES.get(requirement.name.lower())
    if name is None:
        raise ValueError(
            f"framework {spec!r}: {requirement.name!r} is not one dlstack resolves; accepted: torch, tensorflow, jax "
            f"and, as constraints on torch, {' and '.join(TORCH_COMPANIONS)}"
        )
    if local and local.group(1) == "cpu":
        raise ValueError(f"framework {spec!r}: CPU-only builds need no GPU stack; drop the +cpu suffix")
    releases = [r for r in matrix.frameworks[name] if requirement.specifier.contains(r.version, prereleases=True)]
    if not releases:
        known = ", ".join(dict.fromkeys(str(r.version) for r in reversed(matrix.frameworks[name])))
        raise ValueError(f"framework {spec!r} matches no {name} release dlstack knows; known: {known}")
    # jax[cuda13] / jax[cuda12]: the extra names the variant (torch's is the local version, +cu126)
    extras = {e for e in requirement.extras if name == "jax" and re.fullmatch(r"cuda\d+", e)}
    candidates = tuple(
        (r, v)
        for r in releases
        for v in r.variants
        if (not local or v.name == local.group(1)) and (not extras or v.name in extras)
    )
    if not candidates:
        variants = sorted({v.name for r in releases for v in r.variants})
        wanted = local.group(1) if local else "/".join(sorted(extras))
        raise ValueError(f"framework {spec!r}: no {wanted} wheels for it; variants: {', '.join(variants)}")
    return _FrameworkSpec(name, text, candidates)


def _exact_target(gpu: Gpu, devices: tuple[PciGpu, ...] = ()) -> GpuTarget:
    label = f"{gpu.name} ({gpu.architecture}, compute capability {gpu.cc})"
    return GpuTarget(label, (gpu.compute_capability,), (gpu.architecture,), gpu=gpu, devices=devices)


def _cc_target(cc: CC, matrix: Matrix) -> GpuTarget:
    arch = _arch_of(cc, matrix)
    return GpuTarget(f"a {arch} GPU (compute capability {cc_str(cc)})", (cc,), (arch,))


def _family_target(text: str, variants: tuple[Gpu, ...]) -> GpuTarget:
    first = variants[0]
    names = ", ".join(g.name for g in variants)
    note = (
        f"gpu={text!r} names a family, not one model: {names} share compute capability {first.cc} "
        f"({first.architecture}), so this stack fits each; GPU verification compares against one model's "
        "datasheet peaks: set gpu to the exact model"
    )
    label = f"{text.strip()} ({first.architecture}, compute capability {first.cc})"
    return GpuTarget(
        label, (first.compute_capability,), (first.architecture,), family=text.strip(), variants=variants, notes=(note,)
    )


def _devices_target(devices: tuple[PciGpu, ...], matrix: Matrix) -> GpuTarget:
    models = {d.gpu.name for d in devices if d.gpu}
    if len(models) == 1 and all(d.gpu for d in devices):
        return _exact_target(devices[0].gpu, devices)  # type: ignore[arg-type]
    ccs = tuple(sorted({cc for d in devices for cc in d.compute_capabilities}))
    archs = tuple(a for a in matrix.architectures if any(a in d.architectures for d in devices))
    notes = tuple(
        f"PCI device 10de:{d.pci_id} is not in gpus.yml; the Ubuntu driver packages that list it make it a "
        f"{_either(d.architectures)} GPU, so this stack fits compute capability {_cc_span(d.compute_capabilities)}: "
        "set dlstack_gpu or dlstack_compute_capability for an exact match"
        for d in devices
        if d.gpu is None
    )
    return GpuTarget(" and ".join(d.label for d in devices), ccs, archs, devices=devices, notes=notes)


def _named_target(text: str, matrix: Matrix, errors: list[str]) -> GpuTarget | None:
    """A model, an ``nvidia-smi`` name, an ``lspci -nn`` line or a family name; None (and an error) otherwise."""
    if not text.strip():
        errors.append(f"gpu={text!r} is empty: give {GPU_FORMS}, or leave gpu out to resolve without a GPU")
        return None
    found = find_gpu(text, matrix)
    if found is not None:
        return _exact_target(found)
    if ids := pci_device_ids([text]) if _LSPCI_NN.search(text.lower()) else ():
        device = pci_gpu(ids[0], matrix)
        if device is None:
            errors.append(_unknown_device(ids[0], load_pci_ids()))
            return None
        return _devices_target((device,), matrix)
    variants = gpu_family(text, matrix)
    if len({(g.compute_capability, g.architecture) for g in variants}) == 1:
        return _exact_target(variants[0]) if len(variants) == 1 else _family_target(text, variants)
    if variants:
        by_cc: dict[str, list[str]] = {}
        for g in variants:
            by_cc.setdefault(f"{g.cc} ({g.architecture})", []).append(g.name)
        groups = "; ".join(f"compute capability {cc}: {', '.join(names)}" for cc, names in by_cc.items())
        errors.append(f"gpu={text!r} names models the resolver treats differently; give one of them: {groups}")
        return None
    close = _closest_gpus(text, matrix)
    hint = f"; closest known: {', '.join(close)}" if close else ""
    errors.append(f"gpu={text!r} is not a GPU model dlstack knows{hint} (or give compute_capability)")
    return None


def _override_target(
    gpu: str | None, compute_capability: str | None, matrix: Matrix, errors: list[str]
) -> GpuTarget | None:
    """The GPU the settings name (``gpu`` / ``compute_capability``), checked against each other."""
    target = _named_target(str(gpu), matrix, errors) if gpu is not None else None
    cc = None
    if compute_capability is not None:
        try:
            cc = parse_cc(str(compute_capability))
        except ValueError as exc:
            errors.append(f"compute_capability: {exc}")
    if target and cc and cc not in target.ccs:
        name = target.gpu.name if target.gpu else target.family or target.label
        errors.append(
            f"gpu={name!r} has compute capability {_cc_span(target.ccs)}, not {cc_str(cc)} as compute_capability says"
        )
    return target or (_cc_target(cc, matrix) if cc else None)


def _mismatch(device: PciGpu, target: GpuTarget) -> str | None:
    """A gpus.yml model on the host that the settings contradict (a wrong dlstack_gpu, or a second GPU)."""
    if device.gpu is None or device.gpu.compute_capability in target.ccs:
        return None
    given = target.gpu.name if target.gpu else target.family or f"compute capability {_cc_span(target.ccs)}"
    return (
        f"the host has {device.label}, compute capability {device.gpu.cc}, but the settings say {given}: "
        "fix dlstack_gpu / dlstack_compute_capability, or remove them to use the detected GPU"
    )


def _gpu_inputs(
    gpu: str | None,
    compute_capability: str | None,
    pci_ids: str | Iterable[str],
    matrix: Matrix,
    errors: list[str],
) -> GpuTarget | None:
    """The GPU target: the settings when given (checked against the host's PCI devices), else the devices."""
    target = _override_target(gpu, compute_capability, matrix, errors)
    try:
        ids = pci_device_ids(pci_ids) if pci_ids else ()
    except ValueError as exc:
        errors.append(str(exc))
        ids = ()
    if not ids:
        return target
    found = [(pci_id, pci_gpu(pci_id, matrix)) for pci_id in ids]
    devices = tuple(d for _, d in found if d is not None)
    if target is not None:
        errors.extend(m for d in devices if (m := _mismatch(d, target)))
        return replace(target, devices=devices)
    errors.extend(_unknown_device(pci_id, load_pci_ids()) for pci_id, d in found if d is None)
    return _devices_target(devices, matrix) if devices and len(devices) == len(found) else None


def _inputs(
    matrix: Matrix,
    gpu: str | None,
    compute_capability: str | None,
    os: str | None,
    driver: str | int | None,
    kernel_modules: str | None,
    cuda: str | None,
    frameworks: Iterable[str],
    driver_source: str,
    driver_line: str | None = None,
    pci_ids: str | Iterable[str] = (),
) -> _Inputs:
    errors: list[str] = []
    target = _gpu_inputs(gpu, compute_capability, pci_ids, matrix, errors)

    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ValueError as exc:
            errors.append(str(exc))
            return None

    os_release = attempt(lambda: _parse_os(os, matrix)) if os not in (None, "") else None
    driver_pair = attempt(lambda: _parse_driver(driver, matrix)) if driver not in (None, "") else None
    cuda_release = attempt(lambda: _parse_cuda(cuda, matrix)) if cuda not in (None, "") else None
    modules = None
    if kernel_modules not in (None, ""):
        modules = str(kernel_modules).strip().lower()
        if modules not in KERNEL_MODULES:
            errors.append(f"kernel_modules={kernel_modules!r} is not accepted; use open or proprietary")
            modules = None
    if driver_source not in DRIVER_SOURCES:
        errors.append(f"driver_source={driver_source!r} is not accepted; use {' or '.join(DRIVER_SOURCES)}")
    if driver_line not in (None, "", *DRIVER_LINES):
        errors.append(f"driver_line={driver_line!r} is not accepted; use {' or '.join(DRIVER_LINES)}")
    if isinstance(frameworks, str):
        frameworks = [frameworks]
    specs: list[_FrameworkSpec] = []
    for spec in frameworks or ():
        parsed = attempt(lambda spec=spec: _parse_framework(spec, matrix))
        if parsed is None:
            continue
        twin = next((s for s in specs if s.name == parsed.name), None)
        if twin is not None and parsed.name == "torch" and _is_companion(twin.text, parsed.text):
            merged = _merge_specs(twin, parsed)
            if merged is None:
                errors.append(f"framework {twin.text!r} and {spec!r}: no torch release satisfies both")
                continue
            specs[specs.index(twin)] = merged
            continue
        if twin is not None:
            errors.append(f"framework {spec!r}: {parsed.name} is given twice; combine the specifiers in one spec")
            continue
        specs.append(parsed)
    if errors:
        raise ResolutionError("invalid input:\n" + "\n".join(f"  - {e}" for e in errors))
    specs.sort(key=lambda s: FRAMEWORK_ORDER.index(s.name))
    ubuntu = tuple(sorted(matrix.ubuntu.values(), key=lambda r: r.version, reverse=True))
    return _Inputs(
        target=target,
        os=(os_release,) if os_release else ubuntu,
        os_given=os_release is not None,
        cuda=(cuda_release,) if cuda_release else matrix.cuda,
        cuda_given=cuda_release is not None,
        drivers=(driver_pair[0],) if driver_pair else matrix.drivers,
        driver_given=driver_pair is not None,
        driver_version=driver_pair[1] if driver_pair else None,
        kernel_modules=modules,
        frameworks=tuple(specs),
        driver_source=driver_source,
        driver_line=driver_line or None,
    )


# ----------------------------------------------------------------------------- rules


@dataclass
class _State:
    """One candidate stack being built by the search."""

    fw: dict[str, tuple[FrameworkRelease, Variant]] = field(default_factory=dict)
    os: UbuntuRelease | None = None
    cuda: CudaRelease | None = None
    driver: DriverBranch | None = None
    km: str | None = None


def _gpu_label(inp: _Inputs) -> str:
    return inp.target.label if inp.target else "the GPU"


def _fw_label(release: FrameworkRelease, variant: Variant) -> str:
    if release.framework == "torch":
        return f"torch {release.version}+{variant.name}"
    if release.framework == "jax":
        return f"jax[{variant.name}] {release.version} (CUDA {variant.cuda_name})"
    return f"tensorflow {release.version} (CUDA {variant.cuda_name})"


def _variant_runs_on(variant: Variant, cc: CC, matrix: Matrix) -> bool:
    if variant.has_sass_for(cc):
        return True
    if variant.ptx is None or variant.ptx > cc:
        return False
    cuda = matrix.cuda_release(variant.cuda)
    return cuda is not None and cuda.supports_cc(cc)


def _driver_cuda_gap(
    driver: DriverBranch, version: DriverVersion | None, cuda: CudaRelease, matrix: Matrix, allow_compat: bool = True
) -> str | None:
    """None when the driver runs CUDA ``cuda`` natively or through minor-version compatibility."""
    installed = max(driver.first_version, version) if version else driver.first_version
    if driver.max_cuda >= cuda.version and (
        driver.branch != cuda.toolkit_driver.branch or installed >= cuda.toolkit_driver
    ):
        return None
    floor = matrix.minor_compat[cuda.major]
    if allow_compat and installed >= floor and driver.max_cuda[0] == cuda.major:
        return None  # minor-version compatibility (a warning says so)
    need = [d.name for d in reversed(matrix.drivers) if d.max_cuda >= cuda.version]
    return (
        f"CUDA {cuda.name} needs driver >= {cuda.toolkit_driver} (branch {need[0] if need else '?'} or newer); "
        f"driver {version or 'branch ' + driver.name} runs CUDA <= {driver.max_cuda[0]}.{driver.max_cuda[1]}"
    )


def _runs_on_all(variant: Variant, ccs: Sequence[CC], matrix: Matrix) -> bool:
    return all(_variant_runs_on(variant, cc, matrix) for cc in ccs)


def _variants_for(release: FrameworkRelease, ccs: Sequence[CC], matrix: Matrix) -> list[str]:
    return [v.name for v in release.variants if _runs_on_all(v, ccs, matrix)]


def _rule_fw_gpu(name: str, inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if inp.target is None:
        return None
    ccs = inp.target.ccs
    release, variant = s.fw[name]
    if _runs_on_all(variant, ccs, m):
        return None
    archs = ", ".join(f"sm_{a[0]}{a[1]}" for a in variant.archs)
    ok = _variants_for(release, ccs, m)
    if ok:
        fix = f"use {release.framework} {release.version} with {' or '.join(ok)} wheels"
    else:
        newer = [r for r in m.frameworks[name] if _variants_for(r, ccs, m)]
        fix = (
            f"use {name} {newer[0].version} ({', '.join(_variants_for(newer[0], ccs, m))}) or older"
            if newer
            else f"no {name} release dlstack knows runs on it"
        )
    return f"{_fw_label(release, variant)} has no kernels for {_gpu_label(inp)} (it carries {archs}): {fix}"


def _rule_fw_python(name: str, inp: _Inputs, s: _State, m: Matrix) -> str | None:
    release, _ = s.fw[name]
    if release.python.contains(s.os.python, prereleases=True):
        return None
    oses = [f"ubuntu{r.version}" for r in m.ubuntu.values() if release.python.contains(r.python, prereleases=True)]
    fits = [str(r.version) for r in m.frameworks[name] if r.python.contains(s.os.python, prereleases=True)]
    fix = []
    if oses:
        fix.append(f"use {' or '.join(oses)}")
    if fits:
        fix.append(f"use {name} {fits[0]}" + (" or older" if len(fits) > 1 else ""))
    return (
        f"{name} {release.version} supports Python {release.python}, but Ubuntu {s.os.version} ships Python "
        f"{s.os.python}: {' or '.join(fix) or 'no combination fits'}"
    )


def _cuda_runs_on(cuda: CudaRelease, target: GpuTarget) -> bool:
    return all(cuda.supports_cc(cc) for cc in target.ccs)


def _rule_cuda_gpu(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if inp.target is None or _cuda_runs_on(s.cuda, inp.target):
        return None
    fits = [c.name for c in reversed(m.cuda) if _cuda_runs_on(c, inp.target)]
    return (
        f"CUDA {s.cuda.name} supports compute capability {cc_str(s.cuda.min_cc)} to {cc_str(s.cuda.max_cc)}, "
        f"not {_gpu_label(inp)}: use CUDA {', '.join(fits) if fits else '(none known)'}"
    )


def _primary(s: _State) -> tuple[FrameworkRelease, Variant] | None:
    return next((s.fw[name] for name in FRAMEWORK_ORDER if name in s.fw), None)


def _rule_cuda_framework(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    primary = _primary(s)
    if primary is None or primary[1].cuda == s.cuda.version:
        return None
    release, variant = primary
    have = ", ".join(f"{v.name} (CUDA {v.cuda_name})" for v in release.variants)
    return (
        f"cuda={s.cuda.name} but {_fw_label(release, variant)} uses CUDA {variant.cuda_name}; "
        f"{release.framework} {release.version} wheels exist for {have}: pick one of those CUDA versions"
    )


def _rule_cuda_os(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if s.fw or s.os.version in s.cuda.ubuntu:
        return None
    fits = [c.name for c in reversed(m.cuda) if s.os.version in c.ubuntu]
    oses = ", ".join(sorted(s.cuda.ubuntu))
    return (
        f"NVIDIA publishes CUDA {s.cuda.name} for Ubuntu {oses}, not {s.os.version}: "
        f"use CUDA {', '.join(fits) if fits else '(none)'} on Ubuntu {s.os.version}"
    )


def _rule_driver_gpu(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if inp.target is None or s.driver.architectures.issuperset(inp.target.archs):
        return None
    fits = [d.name for d in reversed(m.drivers) if d.architectures.issuperset(inp.target.archs)]
    span = f"{fits[0]} to {fits[-1]}" if len(fits) > 1 else ", ".join(fits) or "none"
    return f"driver branch {s.driver.name} does not support {_gpu_label(inp)}: use a branch from {span}"


def _rule_driver_cuda(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if any(v.cuda == s.cuda.version for _, v in s.fw.values()):
        return None  # the framework rule below says it, naming the framework
    gap = _driver_cuda_gap(s.driver, inp.driver_version, s.cuda, m, inp.allow_compat)
    return gap and f"{gap}: use a newer driver branch or an older CUDA"


def _rule_driver_fw(name: str, inp: _Inputs, s: _State, m: Matrix) -> str | None:
    release, variant = s.fw[name]
    cuda = m.cuda_release(variant.cuda)
    gap = _driver_cuda_gap(s.driver, inp.driver_version, cuda, m, inp.allow_compat)
    if gap is None:
        return None
    older = [
        v.name
        for v in release.variants
        if _driver_cuda_gap(s.driver, inp.driver_version, m.cuda_release(v.cuda), m) is None  # type: ignore[arg-type]
    ]
    alt = f" or {release.framework} {release.version} with {' or '.join(older)} wheels" if older else ""
    return f"{_fw_label(release, variant)} wheels use CUDA {variant.cuda_name}: {gap}: use a newer driver branch{alt}"


def _rule_driver_ubuntu(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if inp.driver_source != "ubuntu" or s.driver.branch in s.os.drivers:
        return None
    packaged = ", ".join(str(b) for b in sorted(s.os.drivers) if m.driver_branch(b))
    return (
        f"Ubuntu {s.os.version} does not package driver branch {s.driver.name} (it packages {packaged}): "
        f"use one of those, or driver_source='nvidia' for NVIDIA's repository"
    )


def _rule_km_gpu(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    rules = m.driver_rules
    if inp.target is None:
        return None
    if s.km == "open" and inp.target.ccs[0] < rules.open_min_cc:
        return (
            f"open kernel modules need compute capability {cc_str(rules.open_min_cc)} (Turing) or newer; "
            f"{_gpu_label(inp)} needs kernel_modules=proprietary"
        )
    if s.km == "proprietary" and _open_required(inp.target, rules):
        return f"{_gpu_label(inp)} runs only with the open kernel modules: use kernel_modules=open"
    return None


def _rule_km_driver(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if s.km not in s.driver.kernel_modules:
        fits = [d.name for d in reversed(m.drivers) if s.km in d.kernel_modules]
        return f"driver branch {s.driver.name} has no {s.km} kernel modules: use branch {fits[0]} or newer"
    if inp.driver_source == "ubuntu" and s.os is not None and s.driver.branch in s.os.drivers:
        packaged = s.os.drivers[s.driver.branch]
        if s.km not in packaged.kernel_modules:
            return (
                f"Ubuntu {s.os.version} packages driver {s.driver.name} only as "
                f"{', '.join(sorted(packaged.flavours))}, "
                f"not with {s.km} kernel modules: use another branch or driver_source='nvidia'"
            )
        if inp.driver_line is not None and UBUNTU_FLAVOUR[(inp.driver_line, s.km)] not in packaged.flavours:
            return (
                f"Ubuntu {s.os.version} packages driver {s.driver.name} only as "
                f"{', '.join(sorted(packaged.flavours))}, not in the {inp.driver_line} line with {s.km} kernel "
                f"modules ({UBUNTU_FLAVOUR[(inp.driver_line, s.km)]}): use another branch or the other line"
            )
    return None


def _rule_driver_pci(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    """Ubuntu's packages of the branch, in the chosen flavour, list each of the host's PCI devices (the
    branch's support list is NVIDIA's, so this holds for NVIDIA's repository too)."""
    target = inp.target
    if target is None or not target.devices or not s.driver.architectures.issuperset(target.archs):
        return None  # no devices, or the architecture rule already says it
    if _rule_km_gpu(inp, s, m):
        return None  # the kernel-module rule already says it
    flavours = _flavours(s.km, inp.driver_line)
    return next(
        (msg for d in target.devices if (msg := _package_problem(d, s.driver.branch, s.os.version, flavours))),
        None,
    )


Rule = Callable[[_Inputs, _State, Matrix], "str | None"]


def _rules_at(level: str, inp: _Inputs) -> list[Rule]:
    """The rules whose inputs are complete once ``level`` is chosen."""
    if level.startswith("fw:"):
        name = level[3:]
        return [lambda i, s, m, n=name: _rule_fw_gpu(n, i, s, m)]
    if level == "os":
        return [lambda i, s, m, n=f.name: _rule_fw_python(n, i, s, m) for f in inp.frameworks]
    if level == "cuda":
        return [_rule_cuda_gpu, _rule_cuda_framework, _rule_cuda_os]
    if level == "driver":
        fw_rules: list[Rule] = [lambda i, s, m, n=f.name: _rule_driver_fw(n, i, s, m) for f in inp.frameworks]
        return [_rule_driver_gpu, _rule_driver_cuda, *fw_rules, _rule_driver_ubuntu]
    return [_rule_km_gpu, _rule_km_driver, _rule_driver_pci]


# ----------------------------------------------------------------------------- search


def _open_required(target: GpuTarget, rules: DriverRules) -> bool:
    """Blackwell and newer (by compute capability), and platforms such as Grace Hopper (by model)."""
    models = ([target.gpu] if target.gpu else []) + list(target.variants)
    return target.ccs[-1] >= rules.open_required_from_cc or any(g.open_modules_only for g in models)


def _default_km(inp: _Inputs, driver: DriverBranch, m: Matrix) -> list[str]:
    rules = m.driver_rules
    if inp.kernel_modules:
        return [inp.kernel_modules]
    if inp.target is not None and _open_required(inp.target, rules):
        return ["open", "proprietary"]
    if inp.target is not None and inp.target.ccs[0] < rules.open_min_cc:
        return ["proprietary", "open"]
    if driver.branch >= rules.open_default_from_branch:
        return ["open", "proprietary"]
    return ["proprietary", "open"]


class _Search:
    def __init__(self, inp: _Inputs, matrix: Matrix, max_violations: int) -> None:
        self.inp = inp
        self.m = matrix
        self.levels = [f"fw:{f.name}" for f in inp.frameworks] + ["os", "cuda", "driver", "km"]
        self.rules = {level: _rules_at(level, inp) for level in self.levels}
        self.limit = max_violations  # a candidate breaking more rules than this is pruned
        self.best: tuple[_State, list[str]] | None = None

    def _choices(self, level: str, s: _State) -> Sequence[Any]:
        inp = self.inp
        if level.startswith("fw:"):
            return next(f.candidates for f in inp.frameworks if f.name == level[3:])
        if level == "os":
            return inp.os
        if level == "cuda":
            primary = _primary(s)
            if inp.cuda_given or primary is None:
                return inp.cuda
            return (self.m.cuda_release(primary[1].cuda),)
        if level == "driver":
            return inp.drivers
        return _default_km(inp, s.driver, self.m)

    @staticmethod
    def _assign(level: str, s: _State, value: Any) -> None:
        if level.startswith("fw:"):
            s.fw[level[3:]] = value
        else:
            setattr(s, level, value)

    def run(self) -> tuple[_State, list[str]] | None:
        self._walk(0, _State(), [])
        return self.best

    def _walk(self, depth: int, s: _State, broken: list[str]) -> bool:
        """Depth-first in preference order; True stops the search (a stack breaking no rule)."""
        if depth == len(self.levels):
            if self.best is None or len(broken) < len(self.best[1]):
                self.best = (_State(dict(s.fw), s.os, s.cuda, s.driver, s.km), list(broken))
                self.limit = len(broken) - 1
            return not broken
        level = self.levels[depth]
        for value in self._choices(level, s):
            self._assign(level, s, value)
            found = [msg for rule in self.rules[level] if (msg := rule(self.inp, s, self.m))]
            if len(broken) + len(found) <= self.limit and self._walk(depth + 1, s, broken + found):
                return True
        if level.startswith("fw:"):
            s.fw.pop(level[3:], None)
        return False


# ----------------------------------------------------------------------------- building the stack


def _warnings(inp: _Inputs, s: _State, m: Matrix) -> list[str]:
    out = []
    if inp.target is None:
        out.append("no GPU given: the stack is not checked against a GPU architecture (pass gpu or compute_capability)")
    else:
        out.extend(inp.target.notes)
        out.extend(_legacy_warnings(inp.target, m))
    cudas = {s.cuda.version: s.cuda}
    for _, variant in s.fw.values():
        cudas.setdefault(variant.cuda, m.cuda_release(variant.cuda))  # type: ignore[arg-type]
    for cuda in cudas.values():
        if s.driver.max_cuda < cuda.version:
            out.append(
                f"driver branch {s.driver.name} runs CUDA {cuda.name} through minor-version compatibility only "
                f"(no PTX JIT of newer PTX); driver >= {cuda.toolkit_driver} runs it natively"
            )
    if s.fw and s.os.version not in s.cuda.ubuntu:
        out.append(
            f"NVIDIA publishes no CUDA {s.cuda.name} toolkit for Ubuntu {s.os.version}; the framework wheels "
            f"bring their own CUDA {s.cuda.name} runtime, so install no host toolkit"
        )
    for release, variant in s.fw.values():
        if variant.index == "pytorch":
            out.append(
                f"torch {release.version}+{variant.name} is on the PyTorch index only "
                f"(pip install --index-url https://download.pytorch.org/whl/{variant.name}); PyPI's default is "
                f"{next(v.name for v in release.variants if v.index == 'pypi')}"
            )
    if "torch" in s.fw and "tensorflow" in s.fw:
        tf_release = s.fw["tensorflow"][0]
        out.append(
            f"tensorflow {tf_release.version} brings its own CUDA {s.fw['tensorflow'][1].cuda_name} and cuDNN "
            f"{_short(tf_release.cudnn)} wheels; install it in a separate environment from torch"
        )
    if inp.driver_source == "nvidia" and s.driver.branch in s.os.drivers:
        out.append(f"Ubuntu {s.os.version} also packages driver branch {s.driver.name}")
    out.extend(_jax_warnings(inp, s))
    out.extend(_lifecycle_warnings(s.driver, m, today()))
    return out


def _jax_warnings(inp: _Inputs, s: _State) -> list[str]:
    """JAX's NVIDIA wheels are floors, not pins; and cuDNN 9.11+ (what pip takes) dropped Maxwell to Volta."""
    if "jax" not in s.fw:
        return []
    release, variant = s.fw["jax"]
    out = [
        f"jax[{variant.name}] {release.version} requires cuDNN >= {release.cudnn} and NCCL >= {release.nccl} "
        "(lower bounds, not pins): pip installs the newest matching NVIDIA wheels"
    ]
    if inp.target is not None and inp.target.ccs[0] < (7, 5):
        out.append(
            f"cuDNN 9.11 and newer support Turing (7.5) and newer only: for {_gpu_label(inp)} pin "
            f"nvidia-cudnn-cu{variant.cuda[0]}==9.10.2.21 beside jax[{variant.name}] (9.10.2 is the last for "
            "Maxwell, Pascal and Volta)"
        )
    if len(s.fw) > 1:
        out.append(f"jax {release.version} brings its own CUDA and cuDNN wheels; install it in a separate environment")
    return out


def _lifecycle_warnings(driver: DriverBranch, m: Matrix, on: dt.date) -> list[str]:
    """A branch past NVIDIA's end of life, or a short-lived new-feature branch: say so, with the alternatives."""
    life = driver.lifecycle
    if life is None:
        return []
    supported = ", ".join(
        f"{d.name} ({d.lifecycle.kind} until {d.lifecycle.end_text()})"
        for d in m.drivers
        if d.preferred(on) and d.lifecycle is not None
    )
    if life.ended(on):
        return [
            f"driver branch {driver.name} is past NVIDIA's end of life ({life.end_text()}; {life.source}): it gets "
            f"no more security fixes. Supported branches: {supported or 'none known'}; move with playbooks/upgrade.yml"
        ]
    if life.kind == "new-feature":
        return [
            f"driver branch {driver.name} is a new-feature branch: short-lived, with no end-of-life date of its own "
            f"({life.source}). Long-term support and production branches: {supported or 'none known'}"
        ]
    return []


def _legacy_warnings(target: GpuTarget, m: Matrix) -> list[str]:
    """For architectures the newest driver branch dropped: the last branch and CUDA that support them."""
    limits: dict[str, list[str]] = {}
    for arch in target.archs:
        if arch in m.drivers[0].architectures:
            continue
        branches = [d.name for d in m.drivers if arch in d.architectures]
        ccs = [cc for cc in target.ccs if _arch_of(cc, m) == arch] or [m.architectures[arch]]
        cudas = [c.name for c in m.cuda if all(c.supports_cc(cc) for cc in ccs)]
        limit = f"driver branches up to {branches[0] if branches else '(none)'}"
        limit += f" and CUDA up to {cudas[0] if cudas else '(none)'}"
        limits.setdefault(limit, []).append(arch.capitalize())
    return [f"{_both(archs)} GPUs are supported by {limit} only" for limit, archs in limits.items()]


def _short(version: str) -> str:
    return ".".join(version.split(".")[:3])


def _cudnn_nccl(inp: _Inputs, s: _State, m: Matrix) -> tuple[str, str]:
    primary = _primary(s)
    if primary is not None:
        return _short(primary[0].cudnn), primary[0].nccl
    major = s.cuda.major
    cudnn = next(
        (
            c.version
            for c in m.cudnn
            if major in c.cuda_majors and (inp.target is None or inp.target.ccs[0] >= c.cuda_majors[major])
        ),
        "",
    )
    nccl = next((n.version for n in m.nccl if major in n.cuda_majors), "")
    return cudnn, nccl


def _min_driver(inp: _Inputs, s: _State, m: Matrix) -> DriverVersion:
    floor = s.driver.first_version
    if inp.driver_version:
        floor = max(floor, inp.driver_version)
    needed = [s.cuda] + [m.cuda_release(v.cuda) for _, v in s.fw.values()]
    for cuda in needed:
        if cuda is not None and cuda.toolkit_driver.branch == s.driver.branch:
            floor = max(floor, cuda.toolkit_driver)
    return floor


def _stack(inp: _Inputs, s: _State, m: Matrix) -> Stack:
    cudnn, nccl = _cudnn_nccl(inp, s, m)
    choices = []
    for name in FRAMEWORK_ORDER:
        if name not in s.fw:
            continue
        release, variant = s.fw[name]
        companions: dict[str, str | None] = {}
        if name == "torch":
            url = None if variant.index == "pypi" else f"https://download.pytorch.org/whl/{variant.name}"
            requirement = f"torch=={release.version}"
            companions = {key: (None if value is None else str(value)) for key, value in release.companions.items()}
        elif name == "jax":
            url, requirement = None, f"jax[{variant.name}]=={release.version}"
        else:
            url, requirement = None, f"tensorflow[and-cuda]=={release.version}"
        choices.append(
            FrameworkChoice(
                name, str(release.version), variant.name, variant.cuda_name, variant.index, url, requirement, companions
            )
        )
    packaged = s.os.drivers.get(s.driver.branch)
    return Stack(
        target=inp.target,
        os=s.os.version,
        python=s.os.python,
        driver_branch=s.driver.name,
        driver_min_version=str(_min_driver(inp, s, m)),
        kernel_modules=s.km,
        packages_available_in_ubuntu=bool(packaged and s.km in packaged.kernel_modules),
        cuda=s.cuda.name,
        cudnn=cudnn,
        nccl=nccl,
        frameworks=tuple(choices),
        warnings=tuple(_warnings(inp, s, m)),
    )


# ----------------------------------------------------------------------------- explaining failure


def _given(inp: _Inputs) -> list[tuple[str, str]]:
    """The inputs the caller fixed, as (key, label) pairs."""
    out = []
    if inp.os_given:
        out.append(("os", f"os=ubuntu{inp.os[0].version}"))
    if inp.driver_given:
        out.append(("driver", f"driver={inp.driver_version or inp.drivers[0].name}"))
    if inp.kernel_modules:
        out.append(("kernel_modules", f"kernel_modules={inp.kernel_modules}"))
    if inp.cuda_given:
        out.append(("cuda", f"cuda={inp.cuda[0].name}"))
    out.extend((f"fw:{spec.name}", f"framework {spec.text!r}") for spec in inp.frameworks)
    return out


def _without(inp: _Inputs, key: str, m: Matrix) -> _Inputs:
    ubuntu = tuple(sorted(m.ubuntu.values(), key=lambda r: r.version, reverse=True))
    if key == "os":
        return _replace(inp, os=ubuntu, os_given=False)
    if key == "driver":
        return _replace(inp, drivers=m.drivers, driver_given=False, driver_version=None)
    if key == "kernel_modules":
        return _replace(inp, kernel_modules=None)
    if key == "cuda":
        return _replace(inp, cuda=m.cuda, cuda_given=False)
    name = key[3:]
    spec = next(f for f in inp.frameworks if f.name == name)
    everything = tuple((r, v) for r in m.frameworks[name] for v in r.variants)
    relaxed = _FrameworkSpec(spec.name, spec.text, everything)
    return _replace(inp, frameworks=tuple(relaxed if f.name == name else f for f in inp.frameworks))


def _replace(inp: _Inputs, **changes: Any) -> _Inputs:
    values = {k: getattr(inp, k) for k in inp.__dataclass_fields__}
    values.update(changes)
    return _Inputs(**values)


def _describe(key: str, stack: Stack) -> str:
    if key == "os":
        return f"ubuntu{stack.os}"
    if key == "driver":
        return f"driver branch {stack.driver_branch}"
    if key == "kernel_modules":
        return f"kernel_modules={stack.kernel_modules}"
    if key == "cuda":
        return f"cuda={stack.cuda}"
    choice = next(f for f in stack.frameworks if f.name == key[3:])
    return f"{choice.name}=={choice.version} ({choice.variant})"


def _explain(inp: _Inputs, m: Matrix) -> str:
    nearest = _Search(inp, m, max_violations=10_000).run()
    lines = ["no stack satisfies all constraints:"]
    if nearest:
        lines.extend(f"  - {msg}" for msg in dict.fromkeys(nearest[1]))
    fixes = []
    for key, label in _given(inp):
        # the same preference as resolve(): a supported long-term support or production branch first
        for attempt in _preference_passes(_without(inp, key, m), today()):
            found = _Search(attempt, m, max_violations=0).run()
            if found:
                fixes.append(f"  - without {label}: {_describe(key, _stack(attempt, found[0], m))} fits")
                break
    if fixes:
        lines.append("what would satisfy it (changing one input, keeping the others):")
        lines.extend(fixes)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry point


def resolve(
    *,
    gpu: str | None = None,
    compute_capability: str | None = None,
    os: str | None = None,
    driver: str | int | None = None,
    kernel_modules: str | None = None,
    cuda: str | None = None,
    frameworks: Iterable[str] = (),
    driver_source: str = "ubuntu",
    driver_line: str | None = None,
    pci_ids: str | Iterable[str] = (),
) -> Stack:
    """Return the newest complete stack that satisfies every given constraint and every rule in the data.

    ``gpu`` is a model, an ``nvidia-smi`` name, an ``lspci -nn`` line or a family name (``A100``) whose
    models share a compute capability. ``pci_ids`` are the host's NVIDIA devices (``lspci -nn`` output or
    ids such as ``1b81``): without ``gpu`` / ``compute_capability`` they are the GPU; with them, each
    device is checked against them. Either way Ubuntu's packages of the chosen branch must list each one.

    Raises :class:`ResolutionError` (a ``ValueError``) naming each malformed input, or each violated
    rule with what would satisfy it.
    """
    matrix = load_matrix()
    inp = _inputs(
        matrix,
        gpu,
        compute_capability,
        os,
        driver,
        kernel_modules,
        cuda,
        frameworks,
        driver_source,
        driver_line,
        pci_ids,
    )
    # Without frameworks, a CUDA toolkit the driver runs natively beats a newer one that needs minor-version
    # compatibility; with frameworks, the newest framework wins (their wheels rely on it). Within each, a
    # supported long-term support or production branch is tried before the others.
    compat = (True,) if inp.frameworks else (False, True)
    passes = _preference_passes(inp, today())
    for allow_compat in compat:
        for attempt in passes:
            found = _Search(_replace(attempt, allow_compat=allow_compat), matrix, max_violations=0).run()
            if found is not None:
                return _stack(attempt, found[0], matrix)
    raise ResolutionError(_explain(inp, matrix))


# The resolver's date for NVIDIA's driver lifecycle (ISO date; default: today). The tests fix it, so that
# their expectations do not move when a branch reaches its end of life.
TODAY_ENV = "DLSTACK_TODAY"


def today() -> dt.date:
    """$DLSTACK_TODAY (YYYY-MM-DD) when set, else the system date."""
    raw = _os.environ.get(TODAY_ENV, "").strip()
    if not raw:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ResolutionError(f"{TODAY_ENV}={raw!r} is not a date; expected YYYY-MM-DD") from None


def _preference_passes(inp: _Inputs, on: dt.date) -> list[_Inputs]:
    """Unless a branch is given: first only supported long-term support and production branches, then all."""
    if inp.driver_given:
        return [inp]
    preferred = tuple(d for d in inp.drivers if d.preferred(on))
    if not preferred or len(preferred) == len(inp.drivers):
        return [inp]
    return [_replace(inp, drivers=preferred), inp]


def _branch_problem(device: PciGpu, branch: int, release: str, flavours: Sequence[str], matrix: Matrix) -> str | None:
    """Whether ``branch`` drives ``device``: by its Ubuntu packages' Modaliases, else by drivers.yml."""
    if _has_packages(branch, flavours):
        return _package_problem(device, branch, release, flavours)
    known = matrix.driver_branch(branch)
    if known is None or known.architectures.issuperset(device.architectures):
        return None
    fits = [d.name for d in reversed(matrix.drivers) if d.architectures.issuperset(device.architectures)]
    return f"driver branch {branch} does not support {device.label}: use a branch from {fits[0]} to {fits[-1]}"


def pci_problems(
    devices: str | Iterable[str],
    *,
    branch: str | int,
    os: str,
    gpu: str | None = None,
    compute_capability: str | None = None,
    kernel_modules: str | None = None,
    driver_line: str | None = None,
) -> list[str]:
    """The problems, in plain words, of running driver ``branch`` on Ubuntu ``os`` with these NVIDIA devices.

    ``devices``: ``lspci -nn`` output (text or lines) or device ids. ``gpu`` / ``compute_capability`` are
    the optional settings ``dlstack_gpu`` / ``dlstack_compute_capability``. A problem is a device the
    branch does not support (by its Ubuntu packages' Modaliases, in the given kernel-module flavour and
    package line; for a branch Ubuntu does not package, by drivers.yml), a device no data knows while no
    setting says what it is, or a known device the settings contradict. ``[]`` when all is well.
    Raises :class:`ResolutionError` naming each malformed input.
    """
    matrix = load_matrix()
    errors: list[str] = []
    override = _override_target(gpu, compute_capability, matrix, errors)
    release = branch_no = None
    try:
        ids = pci_device_ids(devices)
        release = _parse_os(os, matrix)
        branch_no = _branch_and_version(branch)[0]
    except ValueError as exc:
        errors.append(str(exc))
    if kernel_modules is not None and kernel_modules not in KERNEL_MODULES:
        errors.append(f"kernel_modules={kernel_modules!r} is not accepted; use open or proprietary")
    if driver_line is not None and driver_line not in DRIVER_LINES:
        errors.append(f"driver_line={driver_line!r} is not accepted; use {' or '.join(DRIVER_LINES)}")
    if errors or release is None or branch_no is None:
        raise ResolutionError("invalid input:\n" + "\n".join(f"  - {e}" for e in errors))
    flavours = _flavours(kernel_modules, driver_line)
    problems = []
    for pci_id in ids:
        device = pci_gpu(pci_id, matrix)
        if device is None:
            if override is None:
                problems.append(_unknown_device(pci_id, load_pci_ids()))
            continue
        problems.extend(m for m in (override and _mismatch(device, override),) if m)
        problems.extend(p for p in (_branch_problem(device, branch_no, release.version, flavours, matrix),) if p)
    return problems


# Keyword names of resolve(), as mappings (the Ansible filter, the stack lock) give them.
RESOLVE_KEYS = (
    "gpu",
    "compute_capability",
    "os",
    "driver",
    "kernel_modules",
    "cuda",
    "frameworks",
    "driver_source",
    "driver_line",
    "pci_ids",
)
_STRING_KEYS = ("gpu", "compute_capability", "os", "driver", "kernel_modules", "cuda", "driver_source", "driver_line")


def _is_set(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != ()


def constraint_kwargs(constraints: Mapping[str, Any]) -> dict[str, Any]:
    """resolve()'s keyword arguments from a mapping: null or empty values dropped, types normalised.

    Raises :class:`ResolutionError` naming unknown keys or a value of the wrong shape.
    """
    unknown = sorted(set(constraints) - set(RESOLVE_KEYS))
    if unknown:
        raise ResolutionError(f"dlstack_resolve: unknown keys {unknown}; accepted: {', '.join(RESOLVE_KEYS)}")
    kwargs = {key: value for key, value in constraints.items() if _is_set(value)}
    for key in ("frameworks", "pci_ids"):
        if key in kwargs:
            value = kwargs[key]
            if isinstance(value, str):
                value = value.splitlines() if key == "pci_ids" else [value]
            if not isinstance(value, (list, tuple)):
                raise ResolutionError(f"{key} = {value!r}: expected a list")
            kwargs[key] = tuple(str(item) for item in value)
    for key in _STRING_KEYS:
        if key in kwargs:
            kwargs[key] = str(kwargs[key])
    return kwargs


def resolve_mapping(constraints: Mapping[str, Any]) -> Stack:
    """resolve() with its inputs in a mapping (see constraint_kwargs)."""
    return resolve(**constraint_kwargs(constraints))
