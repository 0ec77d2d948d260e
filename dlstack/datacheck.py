"""``dlstack data check``: compare ``dlstack/data`` with the sources a lab can reach.

Two sources are read, both reachable from a lab network:

* the Ubuntu archive's Packages indexes (driver branches, versions and flavours per release, the
  ``Modaliases:`` PCI ids, Fabric Manager versions), checksum-verified against each suite's InRelease;
* PyPI's JSON API and the wheels' core metadata (torch, torchvision, torchaudio, tensorflow and jax
  releases; the ``nvidia-*`` / ``cuda-toolkit`` requirements of PyPI's default torch wheel, which name
  the CUDA line, cuDNN and NCCL it is built for).

What they say is first reduced to a *snapshot* (:class:`Snapshot`: only the fields the checks read,
JSON), so that the checks are pure functions of (data files, snapshot). The tests run them against a
committed snapshot; ``--record`` writes a fresh one; the live run fetches and checks in one go.
Facts only on the open web (NVIDIA's lifecycle table, datasheets, cloud pages) stay cited in the
data's ``source:`` fields, never fetched.

Each finding is a :class:`Drift`: the data file and line to change, and what the source says.
"""

from __future__ import annotations

import json
import lzma
import re
import struct
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from dlstack.archive import (
    ARCHIVE,
    POCKETS,
    compare_versions,
    encode_ranges,
    modalias_devices,
    newest_packages,
    parse_stanzas,
    read_suite,
)
from dlstack.data import DATA_DIR
from dlstack.errors import UserError
from dlstack.matrix import UBUNTU_FLAVOURS, _pci_sets, _Where, driver_package, flavour_suffix, parse_pci_ranges
from dlstack.nvidia import upstream_version

PYPI = "https://pypi.org/pypi"
# The driver packages whose presence and flavours ubuntu.yml records, and Fabric Manager.
_DRIVER_PACKAGE = re.compile(
    r"^(?:nvidia-driver|nvidia-headless-no-dkms|nvidia-headless|nvidia-utils|libnvidia-compute|nvidia-fabricmanager)"
    r"-(?P<branch>\d{3})(?P<rest>(?:-server)?(?:-open)?)$"
)
# Packages the nvidia_driver role may install for a flavour (each must be real for the flavour to count).
_ROLE_PACKAGES = ("nvidia-driver", "nvidia-headless", "nvidia-headless-no-dkms", "nvidia-utils", "libnvidia-compute")
# PyPI projects read, and the lowest release of each the snapshot keeps (older ones are history).
PYPI_PROJECTS = ("torch", "torchvision", "torchaudio", "tensorflow", "jax", "jax-cuda12-plugin", "jax-cuda13-plugin")
# torchvision/torchaudio: every release from these on is read (their ``torch==X`` pin pairs them with torch)
COMPANION_FLOOR = {"torchvision": "0.21.0", "torchaudio": "2.6.0"}
_FINAL_RELEASE = re.compile(r"^\d+(\.\d+)*$")


@dataclass(frozen=True, order=True)
class Drift:
    """One difference between the data and a source: where to change the data, and why."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


# ----------------------------------------------------------------------------- locating facts


class DataFile:
    """A data file, loaded, with the line of every node (for drift reports)."""

    def __init__(self, path: Path, shown_as: str) -> None:
        self.path, self.shown_as = path, shown_as
        # parsed from the file, not its text, so that a YAML error names the file
        with path.open(encoding="utf-8") as handle:
            self._root = yaml.compose(handle, Loader=yaml.SafeLoader)
        with path.open(encoding="utf-8") as handle:
            self.data: Any = yaml.safe_load(handle)

    def line(self, *keys: str | int) -> int:
        """1-based line of the key at ``keys`` (the deepest existing one's when a key is missing)."""
        node, line = self._root, 1
        for key in keys:
            found = _child(node, key)
            if found is None:
                break
            node, line = found[1], found[0]
        return line

    def drift(self, message: str, *keys: str | int) -> Drift:
        return Drift(self.shown_as, self.line(*keys), message)


def _child(node: yaml.Node | None, key: str | int) -> tuple[int, yaml.Node] | None:
    """The child at ``key`` and the line where it is named (its key's line; a list item's own line)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == str(key):
                return key_node.start_mark.line + 1, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key].start_mark.line + 1, node.value[key]
    return None


class DataDir:
    """The data files a check reads; ``file("pytorch")`` is ``<dir>/pytorch.yml``."""

    def __init__(self, root: Path = DATA_DIR, shown_prefix: str | None = None) -> None:
        self.root = root
        self.prefix = shown_prefix if shown_prefix is not None else _shown(root)
        self._files: dict[str, DataFile] = {}

    def file(self, name: str) -> DataFile:
        if name not in self._files:
            self._files[name] = DataFile(self.root / f"{name}.yml", f"{self.prefix}{name}.yml")
        return self._files[name]

    def has(self, name: str) -> bool:
        return (self.root / f"{name}.yml").is_file()


def _shown(root: Path) -> str:
    try:
        return f"{root.resolve().relative_to(Path.cwd().resolve())}/"
    except ValueError:
        return f"{root}/"


# ----------------------------------------------------------------------------- the snapshot


@dataclass
class Snapshot:
    """What the sources said, reduced to what the checks read.

    ``ubuntu[release][package]`` = newest ``{version, depends, section, description[, devices]}``
    across the release and -updates pockets (``devices``: hex PCI id ranges from Modaliases);
    ``pypi[project][version]`` = ``{yanked, requires_python, requires_dist}`` (requires_dist only
    for releases the data lists, read from the Linux x86_64 wheel's core metadata).
    """

    recorded: str
    sources: list[str] = field(default_factory=list)
    ubuntu: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    pypi: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        blob = path.read_bytes()
        try:
            raw = json.loads(lzma.decompress(blob) if path.suffix == ".xz" else blob)
        except (lzma.LZMAError, ValueError) as exc:  # ValueError: JSON and UTF-8 decoding errors
            raise UserError(f"{path}: not a data check snapshot ({exc})") from exc
        if not isinstance(raw, dict) or "recorded" not in raw:
            raise UserError(f"{path}: not a data check snapshot (no 'recorded' date)")
        return cls(raw["recorded"], raw.get("sources", []), raw.get("ubuntu", {}), raw.get("pypi", {}))

    def dump(self, path: Path) -> None:
        body = {"recorded": self.recorded, "sources": self.sources, "ubuntu": self.ubuntu, "pypi": self.pypi}
        text = (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8")
        path.write_bytes(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME) if path.suffix == ".xz" else text)


def reduce_stanza(stanza: Mapping[str, str]) -> dict[str, Any]:
    """The fields of a Packages stanza the checks read (Modaliases as PCI id ranges)."""
    out: dict[str, Any] = {
        "version": stanza.get("Version", ""),
        "depends": stanza.get("Depends", ""),
        "section": stanza.get("Section", ""),
        "description": stanza.get("Description", "").split("\n", 1)[0],
    }
    if stanza.get("Modaliases"):
        out["devices"] = encode_ranges(modalias_devices(stanza["Modaliases"]))
    return out


def reduce_archive(stanzas: Iterable[Mapping[str, str]]) -> dict[str, dict[str, Any]]:
    """The newest stanza of each driver package, reduced (everything else in the index is dropped)."""
    wanted = (s for s in stanzas if _DRIVER_PACKAGE.match(s.get("Package", "")))
    return {name: reduce_stanza(stanza) for name, stanza in sorted(newest_packages(wanted).items())}


def requirement(text: str) -> Requirement | None:
    """A Requires-Dist value parsed (``torch (==2.6.0)`` and ``torch==2.6.0`` alike); None when malformed."""
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def pin(text: str) -> tuple[str, str] | None:
    """``"nvidia-cudnn-cu13==9.19.0.56; platform_system == 'Linux'"`` -> ``("nvidia-cudnn-cu13", "9.19.0.56")``."""
    req = requirement(text)
    if req is None:
        return None
    exact = [spec.version for spec in req.specifier if spec.operator in ("==", "===")]
    return (req.name.lower(), exact[0]) if len(exact) == 1 else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# ----------------------------------------------------------------------------- checks: Ubuntu


@dataclass(frozen=True)
class ArchiveBranch:
    """A driver branch as the archive has it for one release."""

    flavours: frozenset[str]
    version: str  # upstream version of the desktop line (or of the server line when there is none)
    server_version: str  # upstream version of the -server line ("" when it has none)
    fabricmanager: str  # upstream version of nvidia-fabricmanager-NNN ("" when absent)


def _is_real(package: Mapping[str, Any] | None, branch: str) -> bool:
    """A real package: present, not oldlibs, not transitional, and Depends names no other branch."""
    if not package:
        return False
    if package["section"].endswith("oldlibs") or "transitional" in package["description"].lower():
        return False
    other = re.findall(r"nvidia-[a-z-]*?-(\d{3})\b", package["depends"])
    return all(b == branch for b in other)


def _role_package(package: str, branch: str, flavour: str) -> str:
    """``nvidia-utils`` and ``libnvidia-compute`` serve both module flavours: they carry no ``-open``."""
    suffix = flavour_suffix(flavour)
    if package in ("nvidia-utils", "libnvidia-compute"):
        suffix = suffix.removesuffix("-open")
    return f"{package}-{branch}{suffix}"


def archive_branches(packages: Mapping[str, Mapping[str, Any]]) -> dict[str, ArchiveBranch]:
    """Per branch: the flavours whose every role package is real, and the upstream versions."""
    branches = sorted({m.group("branch") for name in packages if (m := _DRIVER_PACKAGE.match(name))})
    out = {}
    for branch in branches:
        flavours = frozenset(
            flavour
            for flavour in UBUNTU_FLAVOURS
            if all(_is_real(packages.get(_role_package(p, branch, flavour)), branch) for p in _ROLE_PACKAGES)
        )
        if not flavours:
            continue
        desktop = next(
            (f"nvidia-driver-{branch}{s}" for s in ("", "-open") if f"nvidia-driver-{branch}{s}" in packages), ""
        )
        server = next(
            (
                f"nvidia-driver-{branch}{s}"
                for s in ("-server", "-server-open")
                if f"nvidia-driver-{branch}{s}" in packages
            ),
            "",
        )
        version = upstream_version(packages[desktop or server]["version"])
        server_version = upstream_version(packages[server]["version"]) if server else ""
        fm = packages.get(f"nvidia-fabricmanager-{branch}")
        out[branch] = ArchiveBranch(flavours, version, server_version, upstream_version(fm["version"]) if fm else "")
    return out


def check_ubuntu(data: DataDir, snapshot: Snapshot) -> Iterator[Drift]:
    """ubuntu.yml's driver branches, versions and flavours per release against the archive."""
    ubuntu, drivers = data.file("ubuntu"), data.file("drivers")
    known = sorted(drivers.data["branches"], key=int)
    for release, info in ubuntu.data["releases"].items():
        if release not in snapshot.ubuntu:
            yield ubuntu.drift(
                f"Ubuntu {release}: the snapshot has no archive data for it (record again)", "releases", release
            )
            continue
        archive = archive_branches(snapshot.ubuntu[release])
        listed = {str(b): spec for b, spec in (info.get("drivers") or {}).items()}
        for branch, have in archive.items():
            if branch not in listed and int(branch) >= int(known[0]):
                yield ubuntu.drift(
                    f"Ubuntu {release} ({info['codename']}) packages driver branch {branch} "
                    f"({', '.join(sorted(have.flavours))}; {have.version}): add it under drivers",
                    "releases",
                    release,
                    "drivers",
                )
        for branch, spec in listed.items():
            yield from _check_ubuntu_branch(ubuntu, release, branch, spec, archive.get(branch))


def _check_ubuntu_branch(
    ubuntu: DataFile, release: str, branch: str, spec: Mapping[str, Any], have: ArchiveBranch | None
) -> Iterator[Drift]:
    at = ("releases", release, "drivers", branch)
    if have is None:
        yield ubuntu.drift(f"Ubuntu {release}: the archive has no real package set for branch {branch}: remove it", *at)
        return
    flavours = frozenset(spec.get("flavours", []))
    if flavours != have.flavours:
        yield ubuntu.drift(
            f"Ubuntu {release} branch {branch}: flavours are {sorted(have.flavours)} in the archive, "
            f"the data says {sorted(flavours)}",
            *at,
            "flavours",
        )
    if spec.get("version") != have.version:
        yield ubuntu.drift(
            f"Ubuntu {release} branch {branch}: version is {have.version} in the archive, "
            f"the data says {spec.get('version')}",
            *at,
            "version",
        )
    if have.server_version:
        expected = spec.get("server_version") or spec.get("version")
        if expected != have.server_version:
            key = "server_version" if "server_version" in spec else "version"
            yield ubuntu.drift(
                f"Ubuntu {release} branch {branch}: the -server line is {have.server_version} in the archive, "
                f"the data says {expected} (server_version: absent means the same as version)",
                *at,
                key,
            )
        if have.fabricmanager and have.fabricmanager != have.server_version:
            yield ubuntu.drift(
                f"Ubuntu {release} branch {branch}: nvidia-fabricmanager-{branch} is {have.fabricmanager} but the "
                f"-server driver is {have.server_version}: Fabric Manager hosts cannot install a matching pair yet",
                *at,
            )


def check_drivers_cover_ubuntu(data: DataDir) -> Iterator[Drift]:
    """Every branch ubuntu.yml lists is in drivers.yml (the resolver never picks a branch it lacks)."""
    ubuntu, drivers = data.file("ubuntu"), data.file("drivers")
    known = {str(b) for b in drivers.data["branches"]}
    missing: dict[str, list[str]] = {}
    for release, info in ubuntu.data["releases"].items():
        for branch in info.get("drivers") or {}:
            if str(branch) not in known:
                missing.setdefault(str(branch), []).append(release)
    for branch, releases in sorted(missing.items()):
        yield drivers.drift(
            f"branch {branch} is packaged by Ubuntu {', '.join(releases)} (ubuntu.yml) but drivers.yml lacks it: "
            "the resolver can never pick it",
            "branches",
        )


def check_pci_ids(data: DataDir, snapshot: Snapshot) -> Iterator[Drift]:
    """nvidia_pci_ids.yml's device sets against the archive's Modaliases."""
    pci = data.file("nvidia_pci_ids")
    sets = _pci_sets(pci.data["device_sets"], _Where("nvidia_pci_ids", "device_sets"))
    for release, branches in pci.data["packages"].items():
        packages = snapshot.ubuntu.get(release, {})
        for branch, flavours in branches.items():
            for flavour, spec in flavours.items():
                name = driver_package(branch, flavour)
                at = ("packages", release, branch, flavour)
                package = packages.get(name)
                if package is None:
                    yield pci.drift(f"Ubuntu {release}: {name} is not in the archive", *at)
                    continue
                have = parse_pci_ranges(" ".join(package.get("devices", [])))
                listed = sets.get(spec["devices"], frozenset())
                if have != listed:
                    yield pci.drift(
                        f"Ubuntu {release}: {name} {upstream_version(package['version'])} lists {len(have)} devices, "
                        f"the data {len(listed)} (+{len(have - listed)} -{len(listed - have)}): "
                        "run scripts/update_nvidia_pci_ids.py",
                        *at,
                    )


# ----------------------------------------------------------------------------- checks: PyPI


def _final_versions(releases: Mapping[str, Mapping[str, Any]], lowest: str) -> set[str]:
    return {
        v
        for v, info in releases.items()
        if _FINAL_RELEASE.match(v) and not info.get("yanked") and _version_key(v) >= _version_key(lowest)
    }


def _release_index(entries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {str(v): i for i, entry in enumerate(entries) for v in entry["versions"]}


def check_release_lists(data: DataDir, snapshot: Snapshot, name: str, project: str) -> Iterator[Drift]:
    """Releases on PyPI (final, not yanked, at least the oldest the data lists) against the data's list."""
    file = data.file(name)
    index = _release_index(file.data["releases"])
    if not index or project not in snapshot.pypi:
        return
    lowest = min(index, key=_version_key)
    published = _final_versions(snapshot.pypi[project], lowest)
    for version in sorted(published - set(index), key=_version_key):
        yield file.drift(f"PyPI has {project} {version}; the data does not list it", "releases")
    for version in sorted(set(index) - published, key=_version_key):
        yield file.drift(
            f"{project} {version} is not a (non-yanked) release on PyPI", "releases", index[version], "versions"
        )


def _pins(requires: Iterable[str]) -> dict[str, str]:
    return dict(p for r in requires if (p := pin(r)))


def _python_floor(spec: str) -> str:
    match = re.search(r">=\s*(\d+\.\d+)", spec or "")
    return match.group(1) if match else ""


def _cuda_line(pins: Mapping[str, str]) -> str:
    """The CUDA line a wheel's pins name: ``cuda-toolkit==13.0.2`` or ``nvidia-cuda-runtime-cu12==12.8.90``."""
    for name in ("cuda-toolkit", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11", "nvidia-cuda-runtime"):
        if name in pins:
            return ".".join(pins[name].split(".")[:2])
    return ""


def _pin_named(pins: Mapping[str, str], prefix: str) -> str:
    return next((v for n, v in pins.items() if n.startswith(prefix)), "")


def _read_releases(file: DataFile, snapshot: Snapshot, project: str) -> Iterator[tuple[int, Any, str, Any]]:
    """(index, entry, version, metadata) of each release the data lists and the snapshot read metadata for."""
    for i, entry in enumerate(file.data["releases"]):
        for version in entry["versions"]:
            meta = snapshot.pypi.get(project, {}).get(str(version), {})
            if "requires_dist" in meta:
                yield i, entry, str(version), meta


def _python_drift(file: DataFile, project: str, i: int, version: str, entry: Any, meta: Any) -> Iterator[Drift]:
    floor = _python_floor(meta.get("requires_python", ""))
    if floor and floor != _python_floor(entry.get("python", "")):
        yield file.drift(
            f"{project} {version}: Python floor is {floor} on PyPI, the data says {entry.get('python')}",
            "releases",
            i,
            "python",
        )


def check_torch(data: DataDir, snapshot: Snapshot) -> Iterator[Drift]:
    """Each torch release: PyPI's default wheel's CUDA line, cuDNN, NCCL and Python floor."""
    file = data.file("pytorch")
    for i, entry, version, meta in _read_releases(file, snapshot, "torch"):
        pins = _pins(meta["requires_dist"])
        default = entry["variants"].get(entry["pypi_default"], {})
        checks = (
            ("pypi_default", _cuda_line(pins), default.get("cuda"), "CUDA line of PyPI's wheel"),
            ("cudnn", _pin_named(pins, "nvidia-cudnn-"), entry.get("cudnn"), "cuDNN pin"),
            ("nccl", _pin_named(pins, "nvidia-nccl-"), entry.get("nccl"), "NCCL pin"),
            (
                "python",
                _python_floor(meta.get("requires_python", "")),
                _python_floor(entry.get("python", "")),
                "Python floor",
            ),
        )
        for key, found, said, what in checks:
            if found and found != said:
                yield file.drift(
                    f"torch {version}: {what} is {found} on PyPI, the data says {said}", "releases", i, key
                )


def _torch_requirement(meta: Mapping[str, Any]) -> Requirement | None:
    return next((r for t in meta.get("requires_dist", []) if (r := requirement(t)) and r.name == "torch"), None)


def check_companions(data: DataDir, snapshot: Snapshot) -> Iterator[Drift]:
    """pytorch.yml's torchvision/torchaudio pairs: each on PyPI, and its ``torch`` requirement admits the pair."""
    file = data.file("pytorch")
    companions = {str(k): v for k, v in (file.data.get("companions") or {}).items()}
    for project in ("torchvision", "torchaudio"):
        releases = snapshot.pypi.get(project, {})
        exact: dict[str, str] = {}
        for version, meta in releases.items():
            req = _torch_requirement(meta)
            named = [s.version for s in req.specifier if s.operator == "=="] if req else []
            if len(named) == 1 and _version_key(version) >= _version_key(exact.get(named[0], "0")):
                exact[named[0]] = version
        for torch, pair in companions.items():
            said = str(pair.get(project) or "")
            if not said:
                continue
            req = _torch_requirement(releases.get(said, {}))
            if said not in releases:
                yield file.drift(f"torch {torch}: {project} {said} is not on PyPI", "companions", torch, project)
            elif req is not None and not req.specifier.contains(torch, prereleases=True):
                yield file.drift(
                    f"torch {torch}: {project} {said} requires {req}, which excludes torch {torch}"
                    + (f" ({project} {exact[torch]} pins it)" if torch in exact else ""),
                    "companions",
                    torch,
                    project,
                )
        for torch in sorted(set(_release_index(file.data["releases"])) - set(companions), key=_version_key):
            if torch in exact:
                yield file.drift(f"torch {torch}: no companions entry ({project} {exact[torch]} pins it)", "companions")
        for torch, pair in companions.items():
            if not pair.get(project) and torch in exact:
                yield file.drift(
                    f"torch {torch}: no {project} in the data ({project} {exact[torch]} pins it)", "companions", torch
                )


def check_tensorflow(data: DataDir, snapshot: Snapshot) -> Iterator[Drift]:
    """Each TensorFlow release: the ``[and-cuda]`` cuDNN/NCCL pins and the Python floor."""
    file = data.file("tensorflow")
    for i, entry, version, meta in _read_releases(file, snapshot, "tensorflow"):
        pins = _pins(meta["requires_dist"])
        for key, found in (
            ("cudnn", _pin_named(pins, "nvidia-cudnn-")),
            ("nccl", _pin_named(pins, "nvidia-nccl-")),
        ):
            if found and found != entry.get(key):
                yield file.drift(
                    f"tensorflow {version}: [and-cuda] pins {key} {found}, the data says {entry.get(key)}",
                    "releases",
                    i,
                    key,
                )
        yield from _python_drift(file, "tensorflow", i, version, entry, meta)


def _extra_plugin(meta: Mapping[str, Any], extra: str) -> Requirement | None:
    """The ``jax-cudaNN-plugin`` requirement that jax's extra ``extra`` adds (None when it adds none)."""
    for text in meta.get("requires_dist", []):
        req = requirement(text)
        if req is None or not re.fullmatch(r"jax-cuda\d+-plugin", req.name):
            continue
        if req.marker is not None and req.marker.evaluate({"extra": extra}) and not req.marker.evaluate({"extra": ""}):
            return req
    return None


def check_jax(data: DataDir, snapshot: Snapshot) -> Iterator[Drift]:
    """jax.yml's releases: the Python floor, and each CUDA variant against the plugin its extra installs."""
    if not data.has("jax"):
        return
    file = data.file("jax")
    for i, entry, version, meta in _read_releases(file, snapshot, "jax"):
        yield from _python_drift(file, "jax", i, version, entry, meta)
        for extra in ("cuda12", "cuda13"):
            yield from _check_jax_variant(file, snapshot, i, version, extra, entry, meta)


def _check_jax_variant(
    file: DataFile,
    snapshot: Snapshot,
    i: int,
    version: str,
    extra: str,
    entry: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> Iterator[Drift]:
    req = _extra_plugin(meta, extra)
    plugins = snapshot.pypi.get(f"jax-{extra}-plugin", {})
    served = req is not None and any(
        req.specifier.contains(v, prereleases=True) for v, m in plugins.items() if not m.get("yanked")
    )
    listed = extra in (entry.get("variants") or {})
    if listed and not served:
        yield file.drift(
            f"jax {version}: PyPI has no jax-{extra}-plugin for jax[{extra}] ({req or 'the extra adds none'})",
            "releases",
            i,
            "variants",
            extra,
        )
    if served and not listed:
        yield file.drift(
            f"jax {version}: PyPI serves jax[{extra}] ({req}); the data lists no {extra}", "releases", i, "variants"
        )


CHECKS: tuple[Callable[[DataDir, Snapshot], Iterable[Drift]], ...] = (
    check_ubuntu,
    lambda data, _snapshot: check_drivers_cover_ubuntu(data),
    check_pci_ids,
    lambda data, snapshot: check_release_lists(data, snapshot, "pytorch", "torch"),
    check_torch,
    check_companions,
    lambda data, snapshot: check_release_lists(data, snapshot, "tensorflow", "tensorflow"),
    check_tensorflow,
    lambda data, snapshot: check_release_lists(data, snapshot, "jax", "jax") if data.has("jax") else iter(()),
    check_jax,
)


def check(data: DataDir, snapshot: Snapshot) -> list[Drift]:
    """Every drift between the data and the snapshot, in file and line order."""
    return sorted({drift for run in CHECKS for drift in run(data, snapshot)})


# ----------------------------------------------------------------------------- recording (network)


def _fetch_json(url: str) -> Any:
    if not url.startswith(f"{PYPI}/"):
        raise RuntimeError(f"refusing to read {url}: only PyPI's JSON API is a source here")
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - the URL is checked above
        return json.load(response)


def _wheel_choice(files: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Linux x86_64 wheel of the newest CPython (not free-threaded), or a pure-Python wheel."""

    def rank(f: Mapping[str, Any]) -> tuple[int, int]:
        match = re.search(r"-cp3(\d+)-cp3\d+(t?)-", f["filename"])
        return (int(match.group(1)), 0 if match.group(2) else 1) if match else (0, 1)

    wheels = [
        f
        for f in files
        if f["filename"].endswith(".whl")
        and (("manylinux" in f["filename"] and "x86_64" in f["filename"]) or f["filename"].endswith("-none-any.whl"))
    ]
    return max(wheels, key=lambda f: (rank(f), f["filename"]), default=None)


def _get(url: str, first: int | None = None, last: int | None = None) -> bytes:
    """GET from PyPI; ``first``/``last`` ask for a byte range (``first`` negative: the last bytes)."""
    if not url.startswith(("https://pypi.org/", "https://files.pythonhosted.org/")):
        raise RuntimeError(f"refusing to read {url}: not PyPI")
    request = urllib.request.Request(url)  # noqa: S310 - the URL is checked above
    if first is not None:
        request.add_header("Range", f"bytes={first}" if first < 0 else f"bytes={first}-{'' if last is None else last}")
    with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310 - the URL is checked above
        return response.read()


def _zip_metadata(url: str) -> str:
    """A wheel's ``*.dist-info/METADATA``, read with HTTP range requests (the wheel is never downloaded)."""
    tail = _get(url, -65536)
    end = tail.rfind(b"PK\x05\x06")
    size, offset = struct.unpack("<II", tail[end + 12 : end + 20])
    if offset == 0xFFFFFFFF:  # zip64: the locator just before the end record points at the zip64 record
        locator = tail.rfind(b"PK\x06\x07", 0, end)
        record_at = struct.unpack("<Q", tail[locator + 8 : locator + 16])[0]
        size, offset = struct.unpack("<QQ", _get(url, record_at, record_at + 55)[40:56])
    directory, at = _get(url, offset, offset + size - 1), 0
    while directory[at : at + 4] == b"PK\x01\x02":
        method, packed = (
            struct.unpack("<H", directory[at + 10 : at + 12])[0],
            struct.unpack("<I", directory[at + 20 : at + 24])[0],
        )
        name_len, extra_len, comment_len = struct.unpack("<HHH", directory[at + 28 : at + 34])
        local = struct.unpack("<I", directory[at + 42 : at + 46])[0]
        name = directory[at + 46 : at + 46 + name_len].decode("utf-8", "replace")
        if re.fullmatch(r"[^/]+\.dist-info/METADATA", name):
            header = _get(url, local, local + 29)
            start = local + 30 + sum(struct.unpack("<HH", header[26:30]))
            body = _get(url, start, start + packed - 1)
            return (zlib.decompress(body, -15) if method == 8 else body).decode("utf-8", "replace")
        at += 46 + name_len + extra_len + comment_len
    raise RuntimeError(f"{url}: no .dist-info/METADATA in the wheel")


def _wheel_metadata(base: str, files: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """Requires-Dist of the chosen wheel: PEP 658 ``.metadata`` where served, else read from the wheel."""
    wheel = _wheel_choice(files)
    if wheel is None:
        return None
    url = urllib.parse.urljoin(base, wheel["url"])
    try:
        text = _get(url + ".metadata").decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        text = _zip_metadata(url)
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def record_pypi(data: DataDir, sources: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """PyPI's releases of each project, with core metadata for the releases the data lists."""
    wanted = {
        "torch": set(_release_index(data.file("pytorch").data["releases"])),
        "tensorflow": set(_release_index(data.file("tensorflow").data["releases"])),
        "jax": set(_release_index(data.file("jax").data["releases"])) if data.has("jax") else set(),
    }
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for project in PYPI_PROJECTS:
        url = f"{PYPI}/{project}/json"
        sources.append(url)
        raw = _fetch_json(url)
        releases: dict[str, dict[str, Any]] = {}
        for version, files in raw["releases"].items():
            if not files or not _FINAL_RELEASE.match(version):
                continue
            entry: dict[str, Any] = {
                "yanked": all(f.get("yanked") for f in files),
                "requires_python": files[0].get("requires_python") or "",
            }
            floor = COMPANION_FLOOR.get(project)
            if version in wanted.get(project, set()) or (floor and _version_key(version) >= _version_key(floor)):
                found = _wheel_metadata(url, files)
                if found is not None:
                    entry["requires_dist"] = [r for r in found if _relevant(r)]
            releases[version] = entry
        out[project] = releases
    return out


def _relevant(requirement: str) -> bool:
    name = (pin(requirement) or (requirement.split(";")[0].strip(), ""))[0].lower()
    return name.startswith(("nvidia-", "cuda-toolkit", "torch", "jax"))


def record_ubuntu(data: DataDir, sources: list[str], cache: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """The newest driver packages of each release ubuntu.yml lists (release and -updates pockets)."""
    out = {}
    for release, info in data.file("ubuntu").data["releases"].items():
        stanzas: list[Mapping[str, str]] = []
        for pocket in POCKETS:
            suite = f"{info['codename']}{pocket}"
            _date, indexes = read_suite(suite, cache)
            sources.append(f"{ARCHIVE}/dists/{suite}/InRelease")
            for index in indexes:
                sources.append(index.url)
                stanzas.extend(parse_stanzas(index.text))
        out[str(release)] = reduce_archive(stanzas)
    return out


def record(data: DataDir, today: str, cache: Path | None = None) -> Snapshot:
    """Read both sources now (network) and reduce them to a snapshot."""
    sources: list[str] = []
    ubuntu = record_ubuntu(data, sources, cache)
    pypi = record_pypi(data, sources)
    return Snapshot(today, sources, ubuntu, pypi)


__all__ = ["DataDir", "Drift", "Snapshot", "check", "compare_versions", "record"]
