"""scripts/update_nvidia_pci_ids.py: the Packages-index parser against a recorded excerpt of the real
archive (tests/fixtures/nvidia_pci_ids/Packages.source), Debian version order, and the data file's
range encoding read back by dlstack.matrix."""

from __future__ import annotations

import lzma
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from file_module import load_file
from hypothesis import given, settings
from hypothesis import strategies as st

from dlstack.matrix import MatrixError, _pci_sets, _Where, parse_pci_ranges

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "nvidia_pci_ids"


def _script() -> ModuleType:
    # dataclasses resolve their annotations through sys.modules
    module = load_file("update_nvidia_pci_ids", ROOT / "scripts/update_nvidia_pci_ids.py", register=True)
    return module


SCRIPT = _script()


def _stanzas(name: str) -> list[dict[str, str]]:
    return list(SCRIPT.parse_stanzas(lzma.decompress((FIXTURES / name).read_bytes()).decode("utf-8")))


RELEASE = _stanzas("resolute-restricted.Packages.xz")
UPDATES = _stanzas("resolute-updates-restricted.Packages.xz")


# ----------------------------------------------------------------------------- the recorded excerpt


def test_the_excerpt_parses_into_its_packages() -> None:
    assert [(s["Package"], s["Version"]) for s in UPDATES] == [
        ("nvidia-driver-580", "580.178.04-0ubuntu0.26.04.1"),
        ("nvidia-driver-580-open", "580.178.04-0ubuntu0.26.04.1"),
        ("nvidia-driver-590", "595.99.02-0ubuntu0.26.04.1"),
    ]
    assert [(s["Package"], s["Version"]) for s in RELEASE] == [("nvidia-driver-580", "580.142-0ubuntu3")]


def test_modaliases_give_the_nvidia_device_ids() -> None:
    driver, open_modules, transitional = UPDATES
    devices = SCRIPT.modalias_devices(driver["Modaliases"])
    assert len(devices) == 449  # the count of pci:v000010DEd... entries in the stanza
    assert {0x1B81, 0x15F8, 0x2330, 0x2B85} <= devices  # GTX 1070, P100 PCIe, H100 SXM, RTX 5090
    open_devices = SCRIPT.modalias_devices(open_modules["Modaliases"])
    assert 0x1B81 not in open_devices  # the open kernel modules start at Turing
    assert open_devices < devices
    assert min(open_devices) == 0x1E02  # TU102, the first Turing id
    assert "Modaliases" not in transitional  # nvidia-driver-590 only depends on nvidia-driver-595


def test_the_newest_version_across_pockets_wins() -> None:
    newest = SCRIPT.newest_packages([*RELEASE, *UPDATES])
    assert newest["nvidia-driver-580"]["Version"] == "580.178.04-0ubuntu0.26.04.1"
    old = SCRIPT.modalias_devices(RELEASE[0]["Modaliases"])
    new = SCRIPT.modalias_devices(newest["nvidia-driver-580"]["Modaliases"])
    assert old - new == {0x2C3A}  # 580.178.04 no longer lists one device 580.142 listed
    assert new <= old


def test_modalias_vendor_and_wildcards() -> None:
    text = (
        "nvidia(pci:v000010DEd00002330sv*sd*bc03sc*i*, pci:v000010dEd00001b81sv*sd*bc03sc*i*, "
        "pci:v00008086d00001234sv*sd*bc03sc*i*, pci:v000010DEd*sv*sd*bc03sc*i*)"
    )
    assert SCRIPT.modalias_devices(text) == {0x2330, 0x1B81}


def test_continuation_lines_are_kept() -> None:
    text = "Package: a\nDescription: one\n two\n .\n three\n\n\nPackage: b\nVersion: 1\n"
    assert list(SCRIPT.parse_stanzas(text)) == [
        {"Package": "a", "Description": "one\ntwo\n.\nthree"},
        {"Package": "b", "Version": "1"},
    ]


def test_inrelease_date_and_sha256() -> None:
    # the shape of http://archive.ubuntu.com/ubuntu/dists/noble-updates/InRelease (lines from it)
    text = (
        "Origin: Ubuntu\nDate: Sun, 29 Nov 2026  3:21:46 UTC\nMD5Sum:\n"
        " e64f916979cdb597e7a9690686e17db7          1968384 restricted/binary-amd64/Packages.xz\n"
        "SHA256:\n"
        " 327bb5c82b36eb89aaeacde9c9dd9b39dba00787f5d60b69cc8210e8e2dfa1b4            50696 "
        "multiverse/binary-amd64/Packages.xz\n"
        " a7e8748ab5a2549f08b5b0eef42edd1d8cd4f7d9cdd5e3627fe531090d4ffdc0          1968384 "
        "restricted/binary-amd64/Packages.xz\n"
    )
    date, sums = SCRIPT.inrelease_checksums(text)
    assert date == "Sun, 29 Nov 2026 3:21:46 UTC"
    assert sums["restricted/binary-amd64/Packages.xz"].startswith("a7e8748a")
    assert len(sums) == 2  # the MD5Sum section is not read


# ----------------------------------------------------------------------------- Debian versions


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("580.142-0ubuntu3", "580.178.04-0ubuntu0.26.04.1"),
        ("580.178.04-0ubuntu0.24.04.1", "580.178.04-0ubuntu0.26.04.1"),
        ("1.0~rc1-1", "1.0-1"),
        ("1.0-1", "1.0-1ubuntu1"),
        ("9.9-1", "1:0.1-1"),
        ("1.0", "1.0.1"),
        ("1.0a", "1.0b"),
        ("1.0-0ubuntu1~22.04", "1.0-0ubuntu1"),
    ],
)
def test_debian_version_order(older: str, newer: str) -> None:
    assert SCRIPT.compare_versions(older, newer) == -1
    assert SCRIPT.compare_versions(newer, older) == 1
    assert SCRIPT.compare_versions(newer, newer) == 0


numeric_versions = st.lists(st.integers(0, 999), min_size=1, max_size=4).map(lambda p: ".".join(map(str, p)))


@settings(max_examples=200, deadline=None)
@given(numeric_versions, numeric_versions)
def test_numeric_versions_compare_like_tuples(a: str, b: str) -> None:
    """Dotted numbers order as tuples of ints, except where only trailing zeros differ ("1" < "1.0" for dpkg)."""

    def key(version: str) -> tuple[int, ...]:
        parts = [int(p) for p in version.split(".")]
        while parts and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    if key(a) != key(b):
        assert SCRIPT.compare_versions(a, b) == (1 if key(a) > key(b) else -1)
    assert SCRIPT.compare_versions(a, b) == -SCRIPT.compare_versions(b, a)


# ----------------------------------------------------------------------------- ranges and rendering


@settings(max_examples=200, deadline=None)
@given(st.frozensets(st.integers(0, 0xFFFF), max_size=300))
def test_ranges_round_trip(devices: frozenset[int]) -> None:
    assert parse_pci_ranges(" ".join(SCRIPT.encode_ranges(devices))) == devices


def test_ranges_fold_runs() -> None:
    assert SCRIPT.encode_ranges([0x1341, 0x1340, 0x1344, 0x1B81, 0x1B82, 0x1B83]) == ["1340-1341", "1344", "1b81-1b83"]


@pytest.mark.parametrize("bad", ["1b8", "zzzz", "1341-1340", "0x1b81"])
def test_bad_ranges_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match=bad.split("-")[0]):
        parse_pci_ranges(bad)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.frozensets(st.integers(0x1000, 0x1100), min_size=1, max_size=60), min_size=1, max_size=6))
def test_rendered_device_sets_read_back_the_same(sets: list[frozenset[int]]) -> None:
    """Whatever the script writes in full or as a difference, the loader reads the same sets back."""
    records = [
        SCRIPT.PackageDevices("24.04", 580, "proprietary", f"nvidia-driver-{580 + i}", "580.1", devices)
        for i, devices in enumerate(sets)
    ]
    names = SCRIPT.set_names(records)
    data = yaml.safe_load("\n".join(SCRIPT.render_sets(names)))
    loaded = _pci_sets(data["device_sets"], _Where("nvidia_pci_ids", "device_sets"))
    assert {name: loaded[name] for name in names.values()} == {name: devices for devices, name in names.items()}


def test_a_difference_must_name_a_full_set() -> None:
    raw = {"a": "1b81", "b": {"like": "a", "plus": "1b82"}, "c": {"like": "b", "plus": "1b83"}}
    with pytest.raises(MatrixError, match=r"device_sets.c.like: 'b' is not a set written in full"):
        _pci_sets(raw, _Where("nvidia_pci_ids", "device_sets"))
