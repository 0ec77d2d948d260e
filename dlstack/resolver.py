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

Public API: :func:`resolve`, :class:`Stack`, :class:`ResolutionError`, :func:`find_gpu`,
:func:`gpu_from_smi`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from dlstack.matrix import (
    CC,
    KERNEL_MODULES,
    CudaRelease,
    DriverBranch,
    DriverVersion,
    FrameworkRelease,
    Gpu,
    Matrix,
    UbuntuRelease,
    Variant,
    cc_str,
    load_matrix,
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
FRAMEWORK_ALIASES = {"torch": "torch", "pytorch": "torch", "tensorflow": "tensorflow", "tensorflow-gpu": "tensorflow"}
FRAMEWORK_ORDER = ("torch", "tensorflow")


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "variant": self.variant,
            "cuda": self.cuda,
            "index": self.index,
            "index_url": self.index_url,
            "requirement": self.requirement,
        }


@dataclass(frozen=True)
class Stack:
    gpu: Gpu | None
    compute_capability: str | None
    architecture: str | None
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; the keys are the contract the preflight play and the roles read."""
        gpu = None
        if self.compute_capability is not None:
            gpu = {
                "name": self.gpu.name if self.gpu else None,
                "compute_capability": self.compute_capability,
                "architecture": self.architecture,
            }
        return {
            "gpu": gpu,
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


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _FrameworkSpec:
    name: str
    text: str
    candidates: tuple[tuple[FrameworkRelease, Variant], ...]


@dataclass(frozen=True)
class _Inputs:
    gpu: Gpu | None
    cc: CC | None
    arch: str | None
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


def _parse_driver(value: str | int, matrix: Matrix) -> tuple[DriverBranch, DriverVersion | None]:
    text = str(value).strip()
    version = None
    if re.fullmatch(r"\d{3}", text):
        branch = int(text)
    else:
        try:
            version = parse_driver_version(text)
        except ValueError:
            raise ValueError(
                f"driver={value!r} is neither a branch (e.g. '580') nor a driver version (e.g. '580.65.06')"
            ) from None
        branch = version.branch
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


def _parse_framework(spec: str, matrix: Matrix) -> _FrameworkSpec:
    text = str(spec).strip()
    local = re.search(r"\+(cu\d{3}|cpu)\b", text)
    try:
        requirement = Requirement(re.sub(r"\+(cu\d{3}|cpu)\b", "", text))
    except InvalidRequirement as exc:
        raise ValueError(f"framework {spec!r} is not a pip requirement such as 'torch==2.9.*': {exc}") from None
    name = FRAMEWORK_ALIASES.get(requirement.name.lower())
    if name is None:
        raise ValueError(
            f"framework {spec!r}: {requirement.name!r} is not one dlstack resolves; accepted: torch, tensorflow"
        )
    if local and local.group(1) == "cpu":
        raise ValueError(f"framework {spec!r}: CPU-only builds need no GPU stack; drop the +cpu suffix")
    releases = [r for r in matrix.frameworks[name] if requirement.specifier.contains(r.version, prereleases=True)]
    if not releases:
        known = ", ".join(str(r.version) for r in reversed(matrix.frameworks[name]))
        raise ValueError(f"framework {spec!r} matches no {name} release dlstack knows; known: {known}")
    candidates = tuple((r, v) for r in releases for v in r.variants if not local or v.name == local.group(1))
    if not candidates:
        variants = sorted({v.name for r in releases for v in r.variants})
        raise ValueError(f"framework {spec!r}: no {local.group(1)} wheels for it; variants: {', '.join(variants)}")
    return _FrameworkSpec(name, text, candidates)


def _gpu_inputs(
    gpu: str | None, compute_capability: str | None, matrix: Matrix, errors: list[str]
) -> tuple[Gpu | None, CC | None]:
    found = None
    cc = None
    if gpu not in (None, ""):
        found = find_gpu(str(gpu), matrix)
        if found is None:
            close = _closest_gpus(str(gpu), matrix)
            hint = f"; closest known: {', '.join(close)}" if close else ""
            errors.append(f"gpu={gpu!r} is not a GPU model dlstack knows{hint} (or give compute_capability)")
    if compute_capability not in (None, ""):
        try:
            cc = parse_cc(str(compute_capability))
        except ValueError as exc:
            errors.append(f"compute_capability: {exc}")
    if found and cc and found.compute_capability != cc:
        errors.append(
            f"gpu={found.name!r} has compute capability {found.cc}, not {cc_str(cc)} as compute_capability says"
        )
    return found, (found.compute_capability if found else cc)


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
) -> _Inputs:
    errors: list[str] = []
    found_gpu, cc = _gpu_inputs(gpu, compute_capability, matrix, errors)

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
        if any(s.name == parsed.name for s in specs):
            errors.append(f"framework {spec!r}: {parsed.name} is given twice; combine the specifiers in one spec")
            continue
        specs.append(parsed)
    if errors:
        raise ResolutionError("invalid input:\n" + "\n".join(f"  - {e}" for e in errors))
    specs.sort(key=lambda s: FRAMEWORK_ORDER.index(s.name))
    ubuntu = tuple(sorted(matrix.ubuntu.values(), key=lambda r: r.version, reverse=True))
    return _Inputs(
        gpu=found_gpu,
        cc=cc,
        arch=found_gpu.architecture if found_gpu else (_arch_of(cc, matrix) if cc else None),
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
    if inp.gpu:
        return f"{inp.gpu.name} ({inp.arch}, compute capability {inp.gpu.cc})"
    return f"a {inp.arch} GPU (compute capability {cc_str(inp.cc)})" if inp.cc else "the GPU"


def _fw_label(release: FrameworkRelease, variant: Variant) -> str:
    if release.framework == "torch":
        return f"torch {release.version}+{variant.name}"
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


def _variants_for_cc(release: FrameworkRelease, cc: CC, matrix: Matrix) -> list[str]:
    return [v.name for v in release.variants if _variant_runs_on(v, cc, matrix)]


def _rule_fw_gpu(name: str, inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if inp.cc is None:
        return None
    release, variant = s.fw[name]
    if _variant_runs_on(variant, inp.cc, m):
        return None
    archs = ", ".join(f"sm_{a[0]}{a[1]}" for a in variant.archs)
    ok = _variants_for_cc(release, inp.cc, m)
    if ok:
        fix = f"use {release.framework} {release.version} with {' or '.join(ok)} wheels"
    else:
        newer = [r for r in m.frameworks[name] if _variants_for_cc(r, inp.cc, m)]
        fix = (
            f"use {name} {newer[0].version} ({', '.join(_variants_for_cc(newer[0], inp.cc, m))}) or older"
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


def _rule_cuda_gpu(inp: _Inputs, s: _State, m: Matrix) -> str | None:
    if inp.cc is None or s.cuda.supports_cc(inp.cc):
        return None
    fits = [c.name for c in reversed(m.cuda) if c.supports_cc(inp.cc)]
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
    if inp.arch is None or inp.arch in s.driver.architectures:
        return None
    fits = [d.name for d in reversed(m.drivers) if inp.arch in d.architectures]
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
    if inp.cc is None:
        return None
    if s.km == "open" and inp.cc < rules.open_min_cc:
        return (
            f"open kernel modules need compute capability {cc_str(rules.open_min_cc)} (Turing) or newer; "
            f"{_gpu_label(inp)} needs kernel_modules=proprietary"
        )
    if s.km == "proprietary" and inp.cc >= rules.open_required_from_cc:
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
    return [_rule_km_gpu, _rule_km_driver]


# ----------------------------------------------------------------------------- search


def _default_km(inp: _Inputs, driver: DriverBranch, m: Matrix) -> list[str]:
    rules = m.driver_rules
    if inp.kernel_modules:
        return [inp.kernel_modules]
    if inp.cc is not None and inp.cc >= rules.open_required_from_cc:
        return ["open", "proprietary"]
    if inp.cc is not None and inp.cc < rules.open_min_cc:
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
    if inp.cc is None:
        out.append("no GPU given: the stack is not checked against a GPU architecture (pass gpu or compute_capability)")
    elif inp.arch in ("maxwell", "pascal", "volta"):
        out.append(f"{inp.arch.capitalize()} GPUs are supported by driver branches up to 580 and CUDA up to 12.9 only")
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
    return out


def _short(version: str) -> str:
    return ".".join(version.split(".")[:3])


def _cudnn_nccl(inp: _Inputs, s: _State, m: Matrix) -> tuple[str, str]:
    primary = _primary(s)
    if primary is not None:
        return _short(primary[0].cudnn), primary[0].nccl
    major = s.cuda.major
    cudnn = next(
        (c.version for c in m.cudnn if major in c.cuda_majors and (inp.cc is None or inp.cc >= c.cuda_majors[major])),
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
        if name == "torch":
            url = None if variant.index == "pypi" else f"https://download.pytorch.org/whl/{variant.name}"
            requirement = f"torch=={release.version}"
        else:
            url, requirement = None, f"tensorflow[and-cuda]=={release.version}"
        choices.append(
            FrameworkChoice(
                name, str(release.version), variant.name, variant.cuda_name, variant.index, url, requirement
            )
        )
    packaged = s.os.drivers.get(s.driver.branch)
    return Stack(
        gpu=inp.gpu,
        compute_capability=cc_str(inp.cc) if inp.cc else None,
        architecture=inp.arch,
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
        found = _Search(_without(inp, key, m), m, max_violations=0).run()
        if found:
            fixes.append(f"  - without {label}: {_describe(key, _stack(_without(inp, key, m), found[0], m))} fits")
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
) -> Stack:
    """Return the newest complete stack that satisfies every given constraint and every rule in the data.

    Raises :class:`ResolutionError` (a ``ValueError``) naming each malformed input, or each violated
    rule with what would satisfy it.
    """
    matrix = load_matrix()
    inp = _inputs(
        matrix, gpu, compute_capability, os, driver, kernel_modules, cuda, frameworks, driver_source, driver_line
    )
    # Without frameworks, prefer a CUDA toolkit the driver runs natively over a newer one that needs
    # minor-version compatibility; with frameworks, the newest framework wins (their wheels rely on it).
    found = None
    if not inp.frameworks:
        found = _Search(_replace(inp, allow_compat=False), matrix, max_violations=0).run()
    if found is None:
        found = _Search(inp, matrix, max_violations=0).run()
    if found is None:
        raise ResolutionError(_explain(inp, matrix))
    return _stack(inp, found[0], matrix)
