#!/usr/bin/env python3
"""Regenerate ``dlstack/data/nvidia_pci_ids.yml`` from the Ubuntu archive's driver packages.

    .venv/bin/python scripts/update_nvidia_pci_ids.py [--cache DIR] [--output PATH] [--check]

Ubuntu's ``nvidia-driver-NNN[-server][-open]`` packages list the PCI devices each one drives in the
``Modaliases:`` field of the archive's Packages indexes (``nvidia(pci:v000010DEd00002330sv*sd*bc03sc*i*,
...)``); ``ubuntu-drivers`` reads the same field. For every Ubuntu release, driver branch and flavour that
``dlstack/data/ubuntu.yml`` lists, this script takes the newest version of that package across the
release and -updates pockets of the restricted and multiverse components, and records its NVIDIA
(vendor 10de) device ids. Each index is checked against the SHA256 its suite's InRelease file lists, so
the snapshot is consistent; the InRelease dates and every URL read are recorded in the output.

``--check`` regenerates into memory and exits 1 when the committed file differs (the archive moved on,
or ubuntu.yml changed); ``--cache DIR`` keeps the downloads (and reuses them when their checksums
still match). Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlstack.archive import (
    ARCHIVE,
    COMPONENTS,
    NVIDIA_VENDOR,
    POCKETS,
    ArchiveError,
    Index,
    compare_versions,
    encode_ranges,
    inrelease_checksums,
    modalias_devices,
    newest_packages,
    parse_stanzas,
    read_suite,
)
from dlstack.matrix import driver_package, load_matrix
from dlstack.nvidia import upstream_version

# re-exported: the tests read the parser through this script, as its users do
__all__ = [
    "ARCHIVE",
    "COMPONENTS",
    "NVIDIA_VENDOR",
    "POCKETS",
    "ArchiveError",
    "Index",
    "compare_versions",
    "encode_ranges",
    "inrelease_checksums",
    "modalias_devices",
    "newest_packages",
    "parse_stanzas",
    "read_suite",
]

OUTPUT = Path(__file__).resolve().parent.parent / "dlstack" / "data" / "nvidia_pci_ids.yml"
RANGES_PER_LINE = 14
# A set is written as the difference from another when that takes under this share of its own ranges.
DELTA_RATIO = 0.5


# ----------------------------------------------------------------------------- building the data


@dataclass(frozen=True)
class PackageDevices:
    release: str
    branch: int
    flavour: str
    package: str
    version: str  # upstream, e.g. 580.178.04
    devices: frozenset[int]


def collect(newest_by_release: Mapping[str, Mapping[str, Mapping[str, str]]]) -> list[PackageDevices]:
    """One record per (release, branch, flavour) ubuntu.yml lists; raises when a package lacks Modaliases."""
    matrix = load_matrix()
    out = []
    for release, info in sorted(matrix.ubuntu.items()):
        newest = newest_by_release[release]
        for branch, driver in sorted(info.drivers.items()):
            for flavour in sorted(driver.flavours):
                name = driver_package(branch, flavour)
                stanza = newest.get(name)
                if stanza is None or not stanza.get("Modaliases"):
                    raise ArchiveError(
                        f"Ubuntu {release}: {name} has no Modaliases in the archive (ubuntu.yml lists it)"
                    )
                version = upstream_version(stanza["Version"])
                if version != driver.version_for(flavour):
                    print(
                        f"warning: Ubuntu {release}: {name} is {version} in the archive, ubuntu.yml says "
                        f"{driver.version_for(flavour)}: refresh ubuntu.yml",
                        file=sys.stderr,
                    )
                devices = modalias_devices(stanza["Modaliases"])
                out.append(PackageDevices(release, branch, flavour, name, version, devices))
    return out


def set_names(records: Iterable[PackageDevices]) -> dict[frozenset[int], str]:
    """Each distinct device set once, named after the first package (and version, if needed) listing it."""
    names: dict[frozenset[int], str] = {}
    taken: set[str] = set()
    for record in records:
        if record.devices in names:
            continue
        name = record.package
        if name in taken:
            name = f"{record.package}={record.version}"
        if name in taken:
            name = f"{record.package}={record.version}@{record.release}"
        names[record.devices] = name
        taken.add(name)
    return names


def _cost(devices: frozenset[int], base: frozenset[int]) -> int:
    return len(encode_ranges(devices - base)) + len(encode_ranges(base - devices))


def _followers(
    base: frozenset[int], candidates: list[frozenset[int]], own: Mapping[frozenset[int], int]
) -> list[frozenset[int]]:
    return [s for s in candidates if s != base and _cost(s, base) < own[s] * DELTA_RATIO]


def choose_bases(sets: list[frozenset[int]]) -> dict[frozenset[int], frozenset[int] | None]:
    """Which sets are written in full (None) and which as the difference from a full one.

    Greedy: the set whose use as a base saves the most ranges becomes a base, with every remaining set
    whose difference from it is under DELTA_RATIO of its own size; repeat with the rest.
    """
    own = {s: len(encode_ranges(s)) for s in sets}
    plan: dict[frozenset[int], frozenset[int] | None] = {}
    remaining = list(sets)
    while remaining:
        base = max(remaining, key=lambda b: sum(own[s] - _cost(s, b) for s in _followers(b, remaining, own)))
        plan[base] = None
        for follower in _followers(base, remaining, own):
            plan[follower] = base
        remaining = [s for s in remaining if s not in plan]
    return plan


def _id_block(key: str, devices: Iterable[int], indent: str) -> list[str]:
    ranges = encode_ranges(devices)
    lines = [f"{indent}{key}: >-"]
    lines += [f"{indent}  {' '.join(ranges[i : i + RANGES_PER_LINE])}" for i in range(0, len(ranges), RANGES_PER_LINE)]
    return lines


def render_sets(names: Mapping[frozenset[int], str]) -> list[str]:
    """``device_sets:``: full sets as id blocks, the others as ``like`` + ``plus`` / ``minus`` blocks."""
    plan = choose_bases(list(names))
    lines = ["device_sets:"]
    for devices, name in names.items():
        base = plan[devices]
        if base is None:
            lines += _id_block(name, devices, "  ")
            continue
        lines += [f"  {name}:", f"    like: {names[base]}"]
        if devices - base:
            lines += _id_block("plus", devices - base, "    ")
        if base - devices:
            lines += _id_block("minus", base - devices, "    ")
    return lines


HEADER = """\
---
# NVIDIA PCI device ids (vendor 10de) each Ubuntu driver package supports, from the Modaliases:
# field of the Ubuntu archive's Packages indexes (what ubuntu-drivers reads). GENERATED: do not edit;
# regenerate with `.venv/bin/python scripts/update_nvidia_pci_ids.py` (check: add --check).
# packages: per Ubuntu release, driver branch and flavour (ubuntu.yml's names: proprietary =
#   nvidia-driver-NNN, open = nvidia-driver-NNN-open, server = nvidia-driver-NNN-server, server-open =
#   nvidia-driver-NNN-server-open), the newest upstream version across the release and -updates
#   pockets of restricted and multiverse, and the name of the device set it lists.
# device_sets: each distinct set once, as sorted hex device ids and inclusive ranges (0fc0-0fc2), or
#   as another set (`like`) with the ids it adds (`plus`) and lacks (`minus`).
# suites: the Date: of each suite's InRelease file; every index was checked against its SHA256.
"""


def render(records: list[PackageDevices], suites: Mapping[str, str], urls: Iterable[str], snapshot: str) -> str:
    """The data file's text (hand-rendered YAML: one line per package, wrapped device ranges)."""
    names = set_names(records)
    lines = [HEADER.rstrip("\n"), f'snapshot: "{snapshot}"', "suites:"]
    lines += [f'  {suite}: "{date}"' for suite, date in sorted(suites.items())]
    lines += ["sources:", *(f"  - {url}" for url in urls), "packages:"]
    release = branch = None
    for record in records:
        if record.release != release:
            release, branch = record.release, None
            lines.append(f'  "{release}":')
        if record.branch != branch:
            branch = record.branch
            lines.append(f'    "{branch}":')
        lines.append(f'      {record.flavour}: {{version: "{record.version}", devices: {names[record.devices]}}}')
    return "\n".join([*lines, *render_sets(names)]) + "\n"


def generate(cache: Path | None, today: str) -> str:
    matrix = load_matrix()
    suites: dict[str, str] = {}
    urls: list[str] = []
    newest_by_release: dict[str, dict[str, Mapping[str, str]]] = {}
    for release, info in sorted(matrix.ubuntu.items()):
        stanzas: list[Mapping[str, str]] = []
        for pocket in POCKETS:
            suite = info.codename + pocket
            suites[suite], indexes = read_suite(suite, cache)
            urls.append(f"{ARCHIVE}/dists/{suite}/InRelease")
            for index in indexes:
                urls.append(index.url)
                stanzas.extend(
                    s for s in parse_stanzas(index.text) if s.get("Package", "").startswith("nvidia-driver-")
                )
        newest_by_release[release] = newest_packages(stanzas)
    return render(collect(newest_by_release), suites, urls, today)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="keep downloaded indexes here and reuse them")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"where to write (default {OUTPUT})")
    parser.add_argument("--check", action="store_true", help="exit 1 when the output file differs; write nothing")
    args = parser.parse_args(argv)
    try:
        text = generate(args.cache, dt.datetime.now(dt.timezone.utc).date().isoformat())
    except ArchiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        old = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        same = _without_dates(old) == _without_dates(text)
        print(f"{args.output}: {'up to date' if same else 'differs from the archive: regenerate it'}")
        return 0 if same else 1
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def _without_dates(text: str) -> str:
    """The file without the snapshot and InRelease dates (they change daily; the devices do not)."""
    return re.sub(r'^(snapshot:|  [a-z-]+: ").*$', "", text, flags=re.MULTILINE)


if __name__ == "__main__":
    sys.exit(main())
