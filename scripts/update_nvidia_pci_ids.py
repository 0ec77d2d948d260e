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
import hashlib
import lzma
import re
import sys
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlstack.matrix import driver_package, load_matrix
from dlstack.nvidia import upstream_version

ARCHIVE = "http://archive.ubuntu.com/ubuntu"
COMPONENTS = ("restricted", "multiverse")
POCKETS = ("", "-updates")
NVIDIA_VENDOR = "10DE"
OUTPUT = Path(__file__).resolve().parent.parent / "dlstack" / "data" / "nvidia_pci_ids.yml"
# "pci:v000010DEd00002330sv*sd*bc03sc*i*": vendor and device, each zero-padded to eight hex digits.
_PCI_ALIAS = re.compile(r"pci:v0000(?P<vendor>[0-9A-Fa-f]{4})d0000(?P<device>[0-9A-Fa-f]{4})")
_SHA256_LINE = re.compile(r"^\s+(?P<sha>[0-9a-f]{64})\s+(?P<size>\d+)\s+(?P<path>\S+)$")
RANGES_PER_LINE = 14
# A set is written as the difference from another when that takes under this share of its own ranges.
DELTA_RATIO = 0.5


class ArchiveError(RuntimeError):
    """The archive answered something this script cannot use; the message says what and where."""


# ----------------------------------------------------------------------------- parsing (pure)


def parse_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Deb822 paragraphs (a Packages index) as dicts; continuation lines are joined with newlines."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


def modalias_devices(modaliases: str, vendor: str = NVIDIA_VENDOR) -> frozenset[int]:
    """The PCI device ids of ``vendor`` that a ``Modaliases:`` value names (wildcard devices are skipped)."""
    return frozenset(
        int(m.group("device"), 16) for m in _PCI_ALIAS.finditer(modaliases) if m.group("vendor").upper() == vendor
    )


def _version_order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_fragment(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or revision (``~`` sorts before everything)."""
    while a or b:
        a_text, a = _split_leading(a, digits=False)
        b_text, b = _split_leading(b, digits=False)
        for ca, cb in zip(a_text.ljust(len(b_text), "\0"), b_text.ljust(len(a_text), "\0"), strict=True):
            oa, ob = (0 if ca == "\0" else _version_order(ca)), (0 if cb == "\0" else _version_order(cb))
            if oa != ob:
                return -1 if oa < ob else 1
        a_num, a = _split_leading(a, digits=True)
        b_num, b = _split_leading(b, digits=True)
        if int(a_num or 0) != int(b_num or 0):
            return -1 if int(a_num or 0) < int(b_num or 0) else 1
    return 0


def _split_leading(text: str, *, digits: bool) -> tuple[str, str]:
    end = 0
    while end < len(text) and text[end].isdigit() == digits:
        end += 1
    return text[:end], text[end:]


def compare_versions(a: str, b: str) -> int:
    """Compare two Debian versions (``[epoch:]upstream[-revision]``) as dpkg does: -1, 0 or 1."""

    def parts(version: str) -> tuple[int, str, str]:
        epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = parts(a)
    eb, ub, rb = parts(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_fragment(ua, ub) or _compare_fragment(ra, rb)


def newest_packages(stanzas: Iterable[Mapping[str, str]]) -> dict[str, Mapping[str, str]]:
    """The newest stanza of each package name (the version apt would install)."""
    newest: dict[str, Mapping[str, str]] = {}
    for stanza in stanzas:
        name = stanza.get("Package", "")
        if name and (name not in newest or compare_versions(stanza["Version"], newest[name]["Version"]) > 0):
            newest[name] = stanza
    return newest


def inrelease_checksums(text: str) -> tuple[str, dict[str, str]]:
    """An InRelease file's ``Date:`` and its SHA256 section as ``{path: sha256}``."""
    date = re.search(r"^Date:\s*(.+)$", text, re.MULTILINE)
    if not date:
        raise ArchiveError("InRelease has no Date: field")
    sums: dict[str, str] = {}
    in_sha256 = False
    for line in text.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.startswith("SHA256:")
            continue
        match = _SHA256_LINE.match(line)
        if in_sha256 and match:
            sums[match.group("path")] = match.group("sha")
    return re.sub(r"\s+", " ", date.group(1).strip()), sums


def encode_ranges(devices: Iterable[int]) -> list[str]:
    """Sorted hex ids with runs folded: ``[0x1340, 0x1341, 0x1344]`` -> ``["1340-1341", "1344"]``."""
    out: list[str] = []
    run: list[int] = []
    for device in sorted(set(devices)):
        if run and device != run[-1] + 1:
            out.append(_run_text(run))
            run = []
        run.append(device)
    if run:
        out.append(_run_text(run))
    return out


def _run_text(run: list[int]) -> str:
    return f"{run[0]:04x}" if len(run) == 1 else f"{run[0]:04x}-{run[-1]:04x}"


# ----------------------------------------------------------------------------- the archive


@dataclass(frozen=True)
class Index:
    suite: str
    url: str
    text: str


def _get(url: str) -> bytes:
    if not url.startswith("http://archive.ubuntu.com/"):
        raise ArchiveError(f"refusing to read {url}: only the Ubuntu archive is a source")
    try:
        with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - the URL is checked above
            return response.read()
    except OSError as exc:
        raise ArchiveError(f"cannot read {url}: {exc}") from exc


def _cached(url: str, cache: Path | None, sha256: str | None = None) -> bytes:
    path = cache / url.removeprefix(f"{ARCHIVE}/").replace("/", "_") if cache else None
    if path and path.exists() and sha256 and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
        return path.read_bytes()
    data = _get(url)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def read_suite(suite: str, cache: Path | None) -> tuple[str, list[Index]]:
    """The suite's InRelease date and its restricted and multiverse indexes, checksum-verified."""
    date, sums = inrelease_checksums(_get(f"{ARCHIVE}/dists/{suite}/InRelease").decode("utf-8", "replace"))
    indexes = []
    for component in COMPONENTS:
        path = f"{component}/binary-amd64/Packages.xz"
        url = f"{ARCHIVE}/dists/{suite}/{path}"
        if path not in sums:
            raise ArchiveError(f"{suite}/InRelease lists no {path}")
        data = _cached(url, cache, sums[path])
        if hashlib.sha256(data).hexdigest() != sums[path]:
            raise ArchiveError(
                f"{url} does not match the SHA256 in {suite}/InRelease (the archive moved on: run again)"
            )
        indexes.append(Index(suite, url, lzma.decompress(data).decode("utf-8", "replace")))
    return date, indexes


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
