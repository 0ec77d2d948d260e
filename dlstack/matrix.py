"""The version matrix: the YAML facts under ``dlstack/data/`` loaded into typed, frozen records.

:func:`load_matrix` reads ``gpus``, ``cuda``, ``drivers``, ``cudnn``, ``nccl``, ``pytorch``,
``tensorflow`` and ``ubuntu`` once, checks their structure and cross-references (a PyTorch variant
names a CUDA release that ``cuda.yml`` knows, and so on) and raises :class:`MatrixError` naming
the file, the path inside it, the bad value and what is expected. :func:`load_pci_ids` reads the
generated ``nvidia_pci_ids.yml`` (the PCI devices each Ubuntu driver package lists) on first use. The resolver
(:mod:`dlstack.resolver`) works only on these records, so adding a CUDA release, a driver branch or
a framework release is a data change.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from dlstack.data import load

# A compute capability as (major, minor): comparable, hashable, cheap.
CC = tuple[int, int]

KERNEL_MODULES = ("open", "proprietary")
UBUNTU_FLAVOURS = {"proprietary": "proprietary", "server": "proprietary", "open": "open", "server-open": "open"}


def flavour_suffix(flavour: str) -> str:
    """The package-name suffix of a flavour: the flavour names are the suffixes (``proprietary`` has none).

    ``"server-open"`` -> ``"-server-open"``; ``"proprietary"`` -> ``""``.
    """
    if flavour not in UBUNTU_FLAVOURS:
        raise ValueError(f"flavour {flavour!r} is not one of {', '.join(UBUNTU_FLAVOURS)}")
    return "" if flavour == "proprietary" else f"-{flavour}"


def driver_package(branch: int | str, flavour: str) -> str:
    """Ubuntu's driver package of a branch and flavour.

    ``(580, "server-open")`` -> ``nvidia-driver-580-server-open``; ``(580, "proprietary")`` -> ``nvidia-driver-580``.
    """
    return f"nvidia-driver-{branch}{flavour_suffix(flavour)}"


_CC_RE = re.compile(r"^(\d{1,2})\.(\d)$")
_MAJOR_MINOR_RE = re.compile(r"^(\d{1,2})\.(\d{1,2})$")
_DRIVER_RE = re.compile(r"^(\d{3})(\.\d{1,3}){1,2}$")
_PCI_RANGE_RE = re.compile(r"^([0-9a-f]{4})(?:-([0-9a-f]{4}))?$")


class MatrixError(ValueError):
    """A data file is malformed or inconsistent."""


# ----------------------------------------------------------------------------- parsing helpers


def parse_cc(text: str) -> CC:
    """``"8.6"`` -> ``(8, 6)``; raises ``ValueError`` naming what is accepted."""
    match = _CC_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"compute capability {text!r} is not of the form MAJOR.MINOR (e.g. '8.6', '12.0')")
    return int(match.group(1)), int(match.group(2))


def cc_str(cc: CC) -> str:
    return f"{cc[0]}.{cc[1]}"


def parse_major_minor(text: str) -> tuple[int, int]:
    """``"12.6"`` -> ``(12, 6)`` (CUDA and Ubuntu versions)."""
    match = _MAJOR_MINOR_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"version {text!r} is not of the form MAJOR.MINOR (e.g. '12.6')")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True, order=True)
class DriverVersion:
    """A driver version such as ``580.65.06``: ordered numerically, printed as written (``06`` stays)."""

    key: tuple[int, ...]
    text: str = field(compare=False)

    def __str__(self) -> str:
        return self.text

    @property
    def branch(self) -> int:
        return self.key[0]


def parse_driver_version(text: str) -> DriverVersion:
    """A full driver version such as ``"580.65.06"`` (three-digit branch, then one or two parts)."""
    value = str(text).strip()
    if not _DRIVER_RE.match(value):
        raise ValueError(f"driver version {text!r} is not of the form BRANCH.MINOR[.PATCH] (e.g. '580.65.06')")
    return DriverVersion(tuple(int(p) for p in value.split(".")), value)


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: CC
    architecture: str
    line: str
    aliases: tuple[str, ...]
    pci_ids: tuple[str, ...]
    peaks: Mapping[str, float]
    source: str
    open_modules_only: bool = False  # a platform NVIDIA supports only with the open kernel modules (GH200)
    # the fraction of each peak a healthy card of this model measures (published measurements)
    healthy: Mapping[str, float] = field(default_factory=dict)

    @property
    def cc(self) -> str:
        return cc_str(self.compute_capability)


@dataclass(frozen=True)
class CudaRelease:
    version: tuple[int, int]
    toolkit_driver: DriverVersion
    min_cc: CC
    max_cc: CC
    ubuntu: frozenset[str]
    source: str

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def major(self) -> int:
        return self.version[0]

    def supports_cc(self, cc: CC) -> bool:
        return self.min_cc <= cc <= self.max_cc


@dataclass(frozen=True)
class DriverBranch:
    branch: int
    first_version: DriverVersion
    max_cuda: tuple[int, int]
    architectures: frozenset[str]
    kernel_modules: frozenset[str]
    source: str
    lifecycle: Lifecycle | None = None

    @property
    def name(self) -> str:
        return str(self.branch)

    def preferred(self, today: dt.date) -> bool:
        """A long-term support or production branch still supported on ``today`` (the resolver's first pick)."""
        return (
            self.lifecycle is not None
            and self.lifecycle.kind in PREFERRED_BRANCH_TYPES
            and not self.lifecycle.ended(today)
        )


# NVIDIA's data-center branch types: long-term support (3 years), production (1 year), new feature (short-lived,
# no end-of-life date of its own).
BRANCH_TYPES = ("lts", "production", "new-feature")
PREFERRED_BRANCH_TYPES = ("lts", "production")


@dataclass(frozen=True)
class Lifecycle:
    """A driver branch's place in NVIDIA's data-center driver lifecycle."""

    kind: str  # one of BRANCH_TYPES, or "" where NVIDIA's pages read do not say
    end_of_life: tuple[int, int] | None  # (year, month): supported through that month; None: no date published
    ended_before: bool  # end of life already announced as past, without a month ("ended")
    source: str

    def ended(self, today: dt.date) -> bool:
        if self.ended_before:
            return True
        return self.end_of_life is not None and self.end_of_life < (today.year, today.month)

    def end_text(self) -> str:
        if self.end_of_life is None:
            return "ended" if self.ended_before else "no date published"
        return f"{self.end_of_life[0]}-{self.end_of_life[1]:02d}"


@dataclass(frozen=True)
class DriverRules:
    open_min_cc: CC
    open_required_from_cc: CC
    open_default_from_branch: int
    source: str


@dataclass(frozen=True)
class CudnnRelease:
    version: str
    cuda_majors: Mapping[int, CC]  # CUDA major -> oldest compute capability of that build
    source: str


@dataclass(frozen=True)
class NcclRelease:
    version: str
    cuda_majors: frozenset[int]
    source: str


@dataclass(frozen=True)
class Variant:
    """One CUDA build of a framework release (``cu126``; TensorFlow has one, ``and-cuda``; JAX ``cuda13``)."""

    name: str
    cuda: tuple[int, int]
    archs: tuple[CC, ...]
    ptx: CC | None
    index: str  # "pypi" or "pytorch"

    @property
    def cuda_name(self) -> str:
        return f"{self.cuda[0]}.{self.cuda[1]}"

    def has_sass_for(self, cc: CC) -> bool:
        """Compiled code runs on ``cc`` when built for it or an older minor of the same major."""
        return any(arch[0] == cc[0] and arch[1] <= cc[1] for arch in self.archs)


@dataclass(frozen=True)
class FrameworkRelease:
    framework: str  # "torch", "tensorflow" or "jax" (jax: one record per CUDA variant; cudnn/nccl are floors)
    version: Version
    python: SpecifierSet
    cudnn: str
    nccl: str
    variants: tuple[Variant, ...]  # preference order: PyPI's default first, then newest CUDA first
    source: str
    # torch only: (name, release) of torchvision and torchaudio built for this one (None: none published)
    companion_pairs: tuple[tuple[str, Version | None], ...] = ()

    @property
    def companions(self) -> dict[str, Version | None]:
        return dict(self.companion_pairs)


@dataclass(frozen=True)
class UbuntuDriver:
    version: str  # the desktop line: nvidia-driver-NNN[-open]
    flavours: frozenset[str]  # proprietary, open, server, server-open
    server_version: str = ""  # the -server line where it differs; "" means the same as version

    @property
    def kernel_modules(self) -> frozenset[str]:
        return frozenset(UBUNTU_FLAVOURS[f] for f in self.flavours)

    def version_for(self, flavour: str) -> str:
        """The packaged version of one flavour (``server`` and ``server-open`` use the -server line)."""
        if flavour not in UBUNTU_FLAVOURS:
            raise ValueError(f"flavour {flavour!r} is not one of {', '.join(UBUNTU_FLAVOURS)}")
        return (self.server_version or self.version) if flavour.startswith("server") else self.version


@dataclass(frozen=True)
class UbuntuRelease:
    version: str
    codename: str
    python: str
    drivers: Mapping[int, UbuntuDriver]
    nvidia_cuda_toolkit: str | None
    libnccl2: str | None
    source: str


@dataclass(frozen=True)
class Matrix:
    architectures: Mapping[str, CC]
    gpus: tuple[Gpu, ...]
    cuda: tuple[CudaRelease, ...]  # newest first
    minor_compat: Mapping[int, DriverVersion]
    drivers: tuple[DriverBranch, ...]  # newest first
    driver_rules: DriverRules
    cudnn: tuple[CudnnRelease, ...]  # newest first
    nccl: tuple[NcclRelease, ...]  # newest first
    frameworks: Mapping[str, tuple[FrameworkRelease, ...]]  # newest first
    ubuntu: Mapping[str, UbuntuRelease]

    def cuda_release(self, version: tuple[int, int]) -> CudaRelease | None:
        return next((c for c in self.cuda if c.version == version), None)

    def driver_branch(self, branch: int) -> DriverBranch | None:
        return next((d for d in self.drivers if d.branch == branch), None)

    def cudnn_release(self, version: str) -> CudnnRelease | None:
        short = ".".join(version.split(".")[:3])
        return next((c for c in self.cudnn if c.version == short), None)

    def nccl_release(self, version: str) -> NcclRelease | None:
        return next((n for n in self.nccl if n.version == version), None)


# (Ubuntu release, driver branch, flavour): one driver package, e.g. ("24.04", 580, "server-open").
PackageKey = tuple[str, int, str]


@dataclass(frozen=True)
class PackageDevices:
    """The PCI devices one Ubuntu driver package lists in its ``Modaliases:`` (vendor 10de)."""

    version: str  # the upstream version that was read, e.g. 580.178.04
    devices: frozenset[int]


@dataclass(frozen=True)
class PciIds:
    """``nvidia_pci_ids.yml``: which Ubuntu driver packages list which NVIDIA PCI device ids."""

    snapshot: str
    sources: tuple[str, ...]
    packages: Mapping[PackageKey, PackageDevices]
    by_device: Mapping[int, frozenset[PackageKey]]  # device id -> the packages that list it

    def releases_of(self, branch: int) -> tuple[str, ...]:
        """The Ubuntu releases with data for ``branch``."""
        return tuple(sorted({r for r, b, _ in self.packages if b == branch}))


# ----------------------------------------------------------------------------- validation helpers


class _Where:
    """Names a place in a data file for error messages: ``pytorch.yml: releases[0].variants``."""

    def __init__(self, file: str, path: str = "") -> None:
        self.file = file
        self.path = path

    def __truediv__(self, part: object) -> _Where:
        if isinstance(part, int):
            return _Where(self.file, f"{self.path}[{part}]")
        return _Where(self.file, f"{self.path}.{part}" if self.path else str(part))

    def fail(self, message: str) -> MatrixError:
        return MatrixError(f"{self.file}.yml: {self.path or '<top>'}: {message}")


def _get(mapping: Any, key: str, kind: type | tuple[type, ...], where: _Where, *, optional: bool = False) -> Any:
    if not isinstance(mapping, dict):
        raise where.fail(f"expected a mapping, got {type(mapping).__name__}")
    if key not in mapping:
        if optional:
            return None
        raise where.fail(f"missing key {key!r}")
    value = mapping[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise (where / key).fail(f"expected {names}, got {value!r} ({type(value).__name__})")
    return value


def _source(mapping: Any, where: _Where, key: str = "source") -> str:
    value = _get(mapping, key, str, where)
    if not value.startswith(("http://", "https://")):
        raise (where / key).fail(f"expected a URL, got {value!r}")
    return value


def _convert(fn: Any, value: Any, where: _Where) -> Any:
    if not isinstance(value, str):
        raise where.fail(f"expected a quoted string, got {value!r} ({type(value).__name__})")
    try:
        return fn(value)
    except (ValueError, InvalidVersion, InvalidSpecifier) as exc:
        raise where.fail(str(exc)) from None


# ----------------------------------------------------------------------------- loaders


def _load_gpus() -> tuple[dict[str, CC], tuple[Gpu, ...]]:
    data, where = load("gpus"), _Where("gpus")
    archs: dict[str, CC] = {}
    for name, entry in _get(data, "architectures", dict, where).items():
        at = where / "architectures" / name
        archs[name] = _convert(parse_cc, _get(entry, "first_compute_capability", str, at), at)
        _source(entry, at)
    gpus: list[Gpu] = []
    seen: set[str] = set()
    for i, entry in enumerate(_get(data, "gpus", list, where)):
        at = where / "gpus" / i
        name = _get(entry, "name", str, at)
        arch = _get(entry, "architecture", str, at)
        if arch not in archs:
            raise (at / "architecture").fail(f"unknown architecture {arch!r}; known: {', '.join(archs)}")
        aliases = tuple(_get(entry, "aliases", list, at))
        for alias in {a.lower() for a in (name, *aliases)}:
            if alias in seen:
                raise at.fail(f"name or alias {alias!r} is used by two GPUs")
            seen.add(alias)
        peaks: dict[str, float] = {}
        raw_peaks = _get(entry, "peaks", dict, at, optional=True)
        if raw_peaks is not None:
            _source(raw_peaks, at / "peaks")
            for key, value in raw_peaks.items():
                if key == "source":
                    continue
                if key not in ("fp32", "tf32", "fp16", "bf16", "fp8", "mem_bw_gbs"):
                    raise (at / "peaks" / key).fail("expected one of fp32, tf32, fp16, bf16, fp8, mem_bw_gbs")
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                    raise (at / "peaks" / key).fail(f"expected a positive number, got {value!r}")
                peaks[key] = float(value)
        healthy = _healthy_fractions(entry, at, peaks)
        gpus.append(
            Gpu(
                name=name,
                compute_capability=_convert(parse_cc, _get(entry, "compute_capability", str, at), at),
                architecture=arch,
                line=_get(entry, "line", str, at),
                aliases=aliases,
                pci_ids=tuple(p.lower() for p in _get(entry, "pci_ids", list, at)),
                peaks=peaks,
                source=_source(entry, at),
                open_modules_only=_open_modules_only(entry, at),
                healthy=healthy,
            )
        )
    return archs, tuple(gpus)


HEALTHY_KEYS = {"fp32": "fp32", "tf32": "tf32", "fp16": "fp16", "bf16": "bf16", "fp8": "fp8", "mem_bw": "mem_bw_gbs"}


def _healthy_fractions(entry: Mapping[str, Any], at: _Where, peaks: Mapping[str, float]) -> dict[str, float]:
    """``healthy:``: the fraction of a peak a healthy card measures (0 < f <= 1), for peaks the GPU has."""
    raw = _get(entry, "healthy", dict, at, optional=True)
    if raw is None:
        return {}
    _source(raw, at / "healthy")
    fractions = {}
    for key, value in raw.items():
        if key == "source":
            continue
        if key not in HEALTHY_KEYS:
            raise (at / "healthy" / key).fail(f"expected one of {', '.join(HEALTHY_KEYS)}")
        if HEALTHY_KEYS[key] not in peaks:
            raise (at / "healthy" / key).fail(f"a fraction of which peak? peaks has no {HEALTHY_KEYS[key]}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
            raise (at / "healthy" / key).fail(f"expected a fraction of the peak in (0, 1], got {value!r}")
        fractions[key] = float(value)
    return fractions


def _open_modules_only(entry: Mapping[str, Any], at: _Where) -> bool:
    """``open_modules_only: {source: URL}``: NVIDIA supports this model only with the open kernel modules."""
    raw = entry.get("open_modules_only")
    if raw is None:
        return False
    _source(raw, at / "open_modules_only")
    return True


def _load_cuda() -> tuple[tuple[CudaRelease, ...], dict[int, DriverVersion]]:
    data, where = load("cuda"), _Where("cuda")
    compat: dict[int, DriverVersion] = {}
    for major, entry in _get(data, "minor_version_compatibility", dict, where).items():
        at = where / "minor_version_compatibility" / major
        compat[int(major)] = _convert(parse_driver_version, _get(entry, "min_driver", str, at), at / "min_driver")
        _source(entry, at)
    releases = []
    for name, entry in _get(data, "releases", dict, where).items():
        at = where / "releases" / name
        version = _convert(parse_major_minor, name, at)
        if version[0] not in compat:
            raise at.fail(f"no minor_version_compatibility entry for CUDA {version[0]}")
        ubuntu = _get(entry, "ubuntu", list, at)
        for i, item in enumerate(ubuntu):
            _convert(parse_major_minor, item, at / "ubuntu" / i)
        releases.append(
            CudaRelease(
                version=version,
                toolkit_driver=_convert(parse_driver_version, _get(entry, "toolkit_driver", str, at), at),
                min_cc=_convert(parse_cc, _get(entry, "min_compute_capability", str, at), at),
                max_cc=_convert(parse_cc, _get(entry, "max_compute_capability", str, at), at),
                ubuntu=frozenset(ubuntu),
                source=_source(entry, at),
            )
        )
    return tuple(sorted(releases, key=lambda c: c.version, reverse=True)), compat


def _load_drivers(
    archs: Mapping[str, CC], cuda: tuple[CudaRelease, ...]
) -> tuple[tuple[DriverBranch, ...], DriverRules]:
    data, where = load("drivers"), _Where("drivers")
    rules = _get(data, "rules", dict, where)
    rat = where / "rules"
    driver_rules = DriverRules(
        open_min_cc=_convert(parse_cc, _get(rules, "open_min_compute_capability", str, rat), rat),
        open_required_from_cc=_convert(parse_cc, _get(rules, "open_required_from_compute_capability", str, rat), rat),
        open_default_from_branch=int(_get(rules, "open_default_from_branch", str, rat)),
        source=_source(rules, rat),
    )
    branches = []
    for name, entry in _get(data, "branches", dict, where).items():
        at = where / "branches" / name
        if not re.fullmatch(r"\d{3}", str(name)):
            raise at.fail("a branch is a three-digit number such as '580'")
        first = _convert(parse_driver_version, _get(entry, "first_version", str, at), at / "first_version")
        if first.branch != int(name):
            raise (at / "first_version").fail(f"{first} is not in branch {name}")
        arch_list = _get(entry, "architectures", list, at)
        for arch in arch_list:
            if arch not in archs:
                raise (at / "architectures").fail(f"unknown architecture {arch!r}; known: {', '.join(archs)}")
        modules = _get(entry, "kernel_modules", list, at)
        for flavour in modules:
            if flavour not in KERNEL_MODULES:
                raise (at / "kernel_modules").fail(f"unknown flavour {flavour!r}; expected open or proprietary")
        branches.append(
            DriverBranch(
                branch=int(name),
                first_version=first,
                max_cuda=_convert(parse_major_minor, _get(entry, "max_cuda", str, at), at / "max_cuda"),
                architectures=frozenset(arch_list),
                kernel_modules=frozenset(modules),
                source=_source(entry, at),
                lifecycle=_lifecycle(entry.get("lifecycle"), at / "lifecycle"),
            )
        )
    return tuple(sorted(branches, key=lambda d: d.branch, reverse=True)), driver_rules


def _lifecycle(raw: Any, at: _Where) -> Lifecycle | None:
    """``lifecycle: {type: lts | production | new-feature | null, end_of_life: "2028-06" | ended | null, source}``."""
    if raw is None:
        return None
    kind = _get(raw, "type", str, at, optional=True) or ""
    if kind and kind not in BRANCH_TYPES:
        raise (at / "type").fail(f"{kind!r} is not a branch type; expected one of {', '.join(BRANCH_TYPES)}")
    end = raw.get("end_of_life")
    month = None
    if end is not None and end != "ended":
        match = re.fullmatch(r"(\d{4})-(\d{2})", str(end))
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise (at / "end_of_life").fail(f"{end!r}: expected YYYY-MM, 'ended' or null")
        month = (int(match.group(1)), int(match.group(2)))
    return Lifecycle(kind, month, end == "ended", _source(raw, at))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _load_cudnn() -> tuple[CudnnRelease, ...]:
    data, where = load("cudnn"), _Where("cudnn")
    out = []
    for name, entry in _get(data, "releases", dict, where).items():
        at = where / "releases" / name
        if not re.fullmatch(r"\d+\.\d+\.\d+", str(name)):
            raise at.fail("a cuDNN release is MAJOR.MINOR.PATCH such as '9.10.2'")
        majors = {}
        for major, spec in _get(entry, "cuda_majors", dict, at).items():
            mat = at / "cuda_majors" / major
            majors[int(major)] = _convert(parse_cc, _get(spec, "min_compute_capability", str, mat), mat)
        out.append(CudnnRelease(version=name, cuda_majors=majors, source=_source(entry, at)))
    return tuple(sorted(out, key=lambda c: _version_key(c.version), reverse=True))


def _load_nccl() -> tuple[NcclRelease, ...]:
    data, where = load("nccl"), _Where("nccl")
    out = []
    for name, entry in _get(data, "releases", dict, where).items():
        at = where / "releases" / name
        if not re.fullmatch(r"\d+\.\d+\.\d+", str(name)):
            raise at.fail("an NCCL release is MAJOR.MINOR.PATCH such as '2.27.5'")
        majors = frozenset(int(m) for m in _get(entry, "cuda_majors", list, at))
        out.append(NcclRelease(version=name, cuda_majors=majors, source=_source(entry, at)))
    return tuple(sorted(out, key=lambda n: _version_key(n.version), reverse=True))


def _arch_list(values: Any, where: _Where) -> tuple[CC, ...]:
    if not isinstance(values, list) or not values:
        raise where.fail(f"expected a non-empty list of compute capabilities, got {values!r}")
    return tuple(_convert(parse_cc, v, where / i) for i, v in enumerate(values))


def _check_pins(entry: Any, at: _Where, cudnn: tuple[CudnnRelease, ...], nccl: tuple[NcclRelease, ...]) -> None:
    cudnn_pin = _get(entry, "cudnn", str, at)
    if not any(c.version == ".".join(cudnn_pin.split(".")[:3]) for c in cudnn):
        raise (at / "cudnn").fail(f"cuDNN {cudnn_pin} is not in cudnn.yml")
    nccl_pin = _get(entry, "nccl", str, at)
    if not any(n.version == nccl_pin for n in nccl):
        raise (at / "nccl").fail(f"NCCL {nccl_pin} is not in nccl.yml")


def _versions(entry: Any, at: _Where) -> list[Version]:
    versions = _get(entry, "versions", list, at)
    if not versions:
        raise (at / "versions").fail("expected at least one version")
    return [_convert(Version, v, at / "versions" / i) for i, v in enumerate(versions)]


def _load_pytorch(
    cuda: tuple[CudaRelease, ...], cudnn: tuple[CudnnRelease, ...], nccl: tuple[NcclRelease, ...]
) -> tuple[FrameworkRelease, ...]:
    data, where = load("pytorch"), _Where("pytorch")
    known_cuda = {c.version for c in cuda}
    out = []
    for i, entry in enumerate(_get(data, "releases", list, where)):
        at = where / "releases" / i
        default = _get(entry, "pypi_default", str, at)
        variants = []
        for name, spec in _get(entry, "variants", dict, at).items():
            vat = at / "variants" / name
            cuda_version = _convert(parse_major_minor, _get(spec, "cuda", str, vat), vat / "cuda")
            if cuda_version not in known_cuda:
                raise (vat / "cuda").fail(f"CUDA {spec['cuda']} is not in cuda.yml")
            if name != f"cu{cuda_version[0]}{cuda_version[1]}":
                raise vat.fail(f"variant name {name!r} does not match its CUDA {spec['cuda']}")
            variants.append(
                Variant(
                    name=name,
                    cuda=cuda_version,
                    archs=_arch_list(spec.get("archs"), vat / "archs"),
                    ptx=None,
                    index="pypi" if name == default else "pytorch",
                )
            )
        if default not in {v.name for v in variants}:
            raise (at / "pypi_default").fail(f"{default!r} is not one of the variants {[v.name for v in variants]}")
        variants.sort(key=lambda v: (v.index != "pypi", tuple(-x for x in v.cuda)))
        _check_pins(entry, at, cudnn, nccl)
        python = _convert(SpecifierSet, _get(entry, "python", str, at), at / "python")
        source = _source(entry, at)
        for version in _versions(entry, at):
            out.append(
                FrameworkRelease(
                    "torch", version, python, entry["cudnn"], entry["nccl"], tuple(variants), source,
                    companion_pairs=tuple(_torch_companions(data, where, version).items()),
                )
            )  # fmt: skip
    return tuple(sorted(out, key=lambda r: r.version, reverse=True))


TORCH_COMPANIONS = ("torchvision", "torchaudio")


def _torch_companions(data: Mapping[str, Any], where: _Where, version: Version) -> dict[str, Version | None]:
    """pytorch.yml ``companions["X.Y.Z"]``: the torchvision and torchaudio releases paired with torch X.Y.Z."""
    table = _get(data, "companions", dict, where)
    at = where / "companions" / str(version)
    entry = {str(key): value for key, value in table.items()}.get(str(version))
    if entry is None:
        raise at.fail(f"torch {version} has no entry: add its torchvision and torchaudio (null where none)")
    pairs: dict[str, Version | None] = {}
    for name in TORCH_COMPANIONS:
        if name not in entry:
            raise at.fail(f"missing key {name!r} (null when none is published)")
        value = entry[name]
        pairs[name] = None if value is None else _convert(Version, str(value), at / name)
    return pairs


def _load_jax(
    cuda: tuple[CudaRelease, ...], cudnn: tuple[CudnnRelease, ...], nccl: tuple[NcclRelease, ...]
) -> tuple[FrameworkRelease, ...]:
    """jax.yml: one record per (release, CUDA variant), cuda13 before cuda12 within a release."""
    data, where = load("jax"), _Where("jax")
    known_cuda = {c.version for c in cuda}
    out = []
    for i, entry in enumerate(_get(data, "releases", list, where)):
        at = where / "releases" / i
        python = _convert(SpecifierSet, _get(entry, "python", str, at), at / "python")
        source = _source(entry, at)
        variants = _get(entry, "variants", dict, at)
        for name in sorted(variants, reverse=True):
            spec, vat = variants[name], at / "variants" / name
            cuda_version = _convert(parse_major_minor, _get(spec, "cuda", str, vat), vat / "cuda")
            if cuda_version not in known_cuda:
                raise (vat / "cuda").fail(f"CUDA {spec['cuda']} is not in cuda.yml")
            if name != f"cuda{cuda_version[0]}":
                raise vat.fail(f"variant name {name!r} does not match its CUDA {spec['cuda']}")
            _check_pins(spec, vat, cudnn, nccl)
            ptx = _get(spec, "ptx", str, vat, optional=True)
            variant = Variant(
                name=name,
                cuda=cuda_version,
                archs=_arch_list(spec.get("archs"), vat / "archs"),
                ptx=_convert(parse_cc, ptx, vat / "ptx") if ptx is not None else None,
                index="pypi",
            )
            for version in _versions(entry, at):
                out.append(FrameworkRelease("jax", version, python, spec["cudnn"], spec["nccl"], (variant,), source))
    # newest first; within a version the order above (cuda13 first) is kept by the stable sort
    return tuple(sorted(out, key=lambda r: r.version, reverse=True))


def _load_tensorflow(
    cuda: tuple[CudaRelease, ...], cudnn: tuple[CudnnRelease, ...], nccl: tuple[NcclRelease, ...]
) -> tuple[FrameworkRelease, ...]:
    data, where = load("tensorflow"), _Where("tensorflow")
    known_cuda = {c.version for c in cuda}
    out = []
    for i, entry in enumerate(_get(data, "releases", list, where)):
        at = where / "releases" / i
        cuda_version = _convert(parse_major_minor, _get(entry, "cuda", str, at), at / "cuda")
        if cuda_version not in known_cuda:
            raise (at / "cuda").fail(f"CUDA {entry['cuda']} is not in cuda.yml")
        ptx = _get(entry, "ptx", str, at, optional=True)
        variant = Variant(
            name="and-cuda",
            cuda=cuda_version,
            archs=_arch_list(entry.get("archs"), at / "archs"),
            ptx=_convert(parse_cc, ptx, at / "ptx") if ptx is not None else None,
            index="pypi",
        )
        _check_pins(entry, at, cudnn, nccl)
        python = _convert(SpecifierSet, _get(entry, "python", str, at), at / "python")
        source = _source(entry, at)
        for version in _versions(entry, at):
            out.append(
                FrameworkRelease("tensorflow", version, python, entry["cudnn"], entry["nccl"], (variant,), source)
            )
    return tuple(sorted(out, key=lambda r: r.version, reverse=True))


def _load_ubuntu() -> dict[str, UbuntuRelease]:
    data, where = load("ubuntu"), _Where("ubuntu")
    out = {}
    for version, entry in _get(data, "releases", dict, where).items():
        at = where / "releases" / version
        _convert(parse_major_minor, version, at)
        python = _get(entry, "python", str, at)
        _convert(parse_major_minor, python, at / "python")
        drivers = {
            int(branch): _ubuntu_driver(branch, spec, at / "drivers" / branch)
            for branch, spec in _get(entry, "drivers", dict, at).items()
        }
        out[version] = UbuntuRelease(
            version=version,
            codename=_get(entry, "codename", str, at),
            python=python,
            drivers=drivers,
            nvidia_cuda_toolkit=_get(entry, "nvidia_cuda_toolkit", str, at, optional=True),
            libnccl2=_get(entry, "libnccl2", str, at, optional=True),
            source=_source(entry, at),
        )
        _sources(entry, at, "packages_source")
        _source(entry, at, "python_source")
    return out


def _ubuntu_driver(branch: str, spec: Any, at: _Where) -> UbuntuDriver:
    flavours = _get(spec, "flavours", list, at)
    for flavour in flavours:
        if flavour not in UBUNTU_FLAVOURS:
            raise (at / "flavours").fail(f"unknown flavour {flavour!r}; expected {', '.join(UBUNTU_FLAVOURS)}")
    version = _get(spec, "version", str, at)
    server_version = _get(spec, "server_version", str, at, optional=True) or ""
    for key, value in (("version", version), ("server_version", server_version)):
        if value and _convert(parse_driver_version, value, at / key).branch != int(branch):
            raise (at / key).fail(f"{value} is not in branch {branch}")
    if server_version and not any(f.startswith("server") for f in flavours):
        raise (at / "server_version").fail("set, but no server or server-open flavour is listed")
    return UbuntuDriver(version, frozenset(flavours), server_version)


def _sources(mapping: Any, where: _Where, key: str) -> list[str]:
    """A URL or a list of URLs (e.g. one Packages index per archive component)."""
    value = _get(mapping, key, (str, list), where)
    urls = [value] if isinstance(value, str) else value
    if not urls:
        raise (where / key).fail("expected at least one URL")
    for i, url in enumerate(urls):
        at = where / key / i if isinstance(value, list) else where / key
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise at.fail(f"expected a URL, got {url!r}")
    return urls


def parse_pci_ranges(text: str) -> frozenset[int]:
    """``"1340-1341 1344"`` -> ``{0x1340, 0x1341, 0x1344}`` (hex device ids and inclusive ranges)."""
    devices: set[int] = set()
    for token in str(text).split():
        match = _PCI_RANGE_RE.match(token.lower())
        if not match:
            raise ValueError(f"{token!r} is not a hex PCI device id or range such as '1b81' or '1340-1341'")
        first, last = int(match.group(1), 16), int(match.group(2) or match.group(1), 16)
        if last < first:
            raise ValueError(f"range {token!r} ends before it starts")
        devices.update(range(first, last + 1))
    return frozenset(devices)


def _pci_sets(raw: Any, where: _Where) -> dict[str, frozenset[int]]:
    """``device_sets``: full sets (a string of ranges) first, then ``like`` + ``plus``/``minus`` ones."""
    if not isinstance(raw, dict) or not raw:
        raise where.fail("expected a mapping of named device sets")
    full = {str(k): _convert(parse_pci_ranges, v, where / k) for k, v in raw.items() if isinstance(v, str)}
    sets = dict(full)
    for name, spec in raw.items():
        if isinstance(spec, str):
            continue
        at = where / name
        base = _get(spec, "like", str, at)
        if base not in full:
            raise (at / "like").fail(f"{base!r} is not a set written in full; those are: {', '.join(full)}")
        plus = _get(spec, "plus", str, at, optional=True)
        minus = _get(spec, "minus", str, at, optional=True)
        added = _convert(parse_pci_ranges, plus, at / "plus") if plus else frozenset()
        removed = _convert(parse_pci_ranges, minus, at / "minus") if minus else frozenset()
        sets[str(name)] = (full[base] - removed) | added
    return sets


def _mapping(value: Any, where: _Where) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise where.fail(f"expected a mapping, got {value!r}")
    return value


def _pci_package(spec: Any, key: PackageKey, sets: Mapping[str, frozenset[int]], at: _Where) -> PackageDevices:
    version = _get(spec, "version", str, at)
    if _convert(parse_driver_version, version, at / "version").branch != key[1]:
        raise (at / "version").fail(f"{version} is not in branch {key[1]}")
    name = _get(spec, "devices", str, at)
    if name not in sets:
        raise (at / "devices").fail(f"no device set {name!r}; known: {', '.join(sets)}")
    return PackageDevices(version, sets[name])


@cache
def load_pci_ids() -> PciIds:
    """Load and check ``nvidia_pci_ids.yml`` (cached). Raises :class:`MatrixError` on bad data."""
    data, where = load("nvidia_pci_ids"), _Where("nvidia_pci_ids")
    ubuntu = load_matrix().ubuntu
    sets = _pci_sets(_get(data, "device_sets", dict, where), where / "device_sets")
    packages: dict[PackageKey, PackageDevices] = {}
    for release, branches in _get(data, "packages", dict, where).items():
        rat = where / "packages" / release
        if release not in ubuntu:
            raise rat.fail(f"Ubuntu {release} is not in ubuntu.yml; known: {', '.join(ubuntu)}")
        for branch, flavours in _mapping(branches, rat).items():
            bat = rat / branch
            if not re.fullmatch(r"\d{3}", str(branch)):
                raise bat.fail("a branch is a three-digit number such as '580'")
            for flavour, spec in _mapping(flavours, bat).items():
                if flavour not in UBUNTU_FLAVOURS:
                    raise (bat / flavour).fail(f"unknown flavour; expected {', '.join(UBUNTU_FLAVOURS)}")
                key = (str(release), int(branch), str(flavour))
                packages[key] = _pci_package(spec, key, sets, bat / flavour)
    by_device: dict[int, set[PackageKey]] = {}
    for key, package in packages.items():
        for device in package.devices:
            by_device.setdefault(device, set()).add(key)
    return PciIds(
        snapshot=_get(data, "snapshot", str, where),
        sources=tuple(_sources(data, where, "sources")),
        packages=packages,
        by_device={device: frozenset(keys) for device, keys in by_device.items()},
    )


@cache
def load_matrix() -> Matrix:
    """Load and validate every data file (cached). Raises :class:`MatrixError` on bad data."""
    archs, gpus = _load_gpus()
    cuda, compat = _load_cuda()
    drivers, rules = _load_drivers(archs, cuda)
    cudnn = _load_cudnn()
    nccl = _load_nccl()
    return Matrix(
        architectures=archs,
        gpus=gpus,
        cuda=cuda,
        minor_compat=compat,
        drivers=drivers,
        driver_rules=rules,
        cudnn=cudnn,
        nccl=nccl,
        frameworks={
            "torch": _load_pytorch(cuda, cudnn, nccl),
            "tensorflow": _load_tensorflow(cuda, cudnn, nccl),
            "jax": _load_jax(cuda, cudnn, nccl),
        },
        ubuntu=_load_ubuntu(),
    )
