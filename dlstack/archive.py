"""The Ubuntu archive's Packages indexes: reading them (checksum-verified against InRelease) and the
pure parsing dlstack's data tools share (``scripts/update_nvidia_pci_ids.py``, ``dlstack data check``).
Standard library only."""

from __future__ import annotations

import hashlib
import lzma
import re
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ARCHIVE = "http://archive.ubuntu.com/ubuntu"
COMPONENTS = ("restricted", "multiverse")
POCKETS = ("", "-updates")
NVIDIA_VENDOR = "10DE"
# "pci:v000010DEd00002330sv*sd*bc03sc*i*": vendor and device, each zero-padded to eight hex digits.
_PCI_ALIAS = re.compile(r"pci:v0000(?P<vendor>[0-9A-Fa-f]{4})d0000(?P<device>[0-9A-Fa-f]{4})")
_SHA256_LINE = re.compile(r"^\s+(?P<sha>[0-9a-f]{64})\s+(?P<size>\d+)\s+(?P<path>\S+)$")


class ArchiveError(RuntimeError):
    """The archive answered something this code cannot use; the message says what and where."""


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
