"""The committed dlstack/data/nvidia_pci_ids.yml against ubuntu.yml, gpus.yml and drivers.yml.

The device lists come from Ubuntu's packages (NVIDIA's own support lists); gpus.yml and drivers.yml
were typed from NVIDIA's documentation. Where both speak of the same device they must agree.
"""

from __future__ import annotations

import pytest

from dlstack.matrix import UBUNTU_FLAVOURS, Gpu, load_matrix, load_pci_ids
from dlstack.resolver import _archs_from_packages

MATRIX = load_matrix()
PCI = load_pci_ids()
# gpus.yml devices the packages list: (gpu, device id)
COVERED = [(gpu, int(pci_id, 16)) for gpu in MATRIX.gpus for pci_id in gpu.pci_ids if int(pci_id, 16) in PCI.by_device]


def _id(item: tuple[Gpu, int]) -> str:
    return f"{item[0].name}-{item[1]:04x}"


def test_snapshot_and_sources() -> None:
    assert PCI.snapshot >= "2026-11-30"
    assert all(url.startswith("http://archive.ubuntu.com/ubuntu/dists/") for url in PCI.sources)
    assert {url.split("/")[5] for url in PCI.sources} == {
        f"{r.codename}{pocket}" for r in MATRIX.ubuntu.values() for pocket in ("", "-updates")
    }


def test_every_package_ubuntu_yml_lists_was_read_at_the_version_it_records() -> None:
    """Stale data fails here: after a refresh of ubuntu.yml, run scripts/update_nvidia_pci_ids.py."""
    expected = {
        (release, branch, flavour): driver.version_for(flavour)
        for release, info in MATRIX.ubuntu.items()
        for branch, driver in info.drivers.items()
        for flavour in driver.flavours
    }
    assert {key: package.version for key, package in PCI.packages.items()} == expected


def test_the_data_covers_most_of_gpus_yml() -> None:
    with_ids = [gpu for gpu in MATRIX.gpus if gpu.pci_ids]
    listed = {gpu.name for gpu, _ in COVERED}
    # Kepler's K40 and K80 are listed by 470 only; every gpus.yml model with ids is listed somewhere
    assert listed == {gpu.name for gpu in with_ids}


@pytest.mark.parametrize("item", COVERED, ids=_id)
def test_branches_that_list_a_device_support_its_architecture(item: tuple[Gpu, int]) -> None:
    gpu, device = item
    for release, branch, flavour in PCI.by_device[device]:
        known = MATRIX.driver_branch(branch)
        if known is not None:
            assert gpu.architecture in known.architectures, (release, branch, flavour)


@pytest.mark.parametrize("item", COVERED, ids=_id)
def test_branches_that_drop_an_architecture_do_not_list_its_devices(item: tuple[Gpu, int]) -> None:
    gpu, device = item
    for key, package in PCI.packages.items():
        known = MATRIX.driver_branch(key[1])
        if known is not None and gpu.architecture not in known.architectures:
            assert device not in package.devices, key


@pytest.mark.parametrize("item", COVERED, ids=_id)
def test_open_module_packages_list_turing_and_newer_only(item: tuple[Gpu, int]) -> None:
    gpu, device = item
    open_min = MATRIX.driver_rules.open_min_cc
    for release, branch, flavour in PCI.by_device[device]:
        if UBUNTU_FLAVOURS[flavour] == "open":
            assert gpu.compute_capability >= open_min, (release, branch, flavour)
    if gpu.compute_capability < open_min:
        assert not any(UBUNTU_FLAVOURS[f] == "open" for _, _, f in PCI.by_device[device])


# (branch, model): models released after a legacy branch stopped taking new device ids
NEWER_THAN_THE_BRANCH = {(470, "RTX A5500")}


@pytest.mark.parametrize("item", COVERED, ids=_id)
def test_server_branches_list_every_model_of_an_architecture_they_support(item: tuple[Gpu, int]) -> None:
    """The converse, where it holds: a branch Ubuntu ships in the -server line lists each model of each
    architecture drivers.yml gives it. (545, desktop-only in Ubuntu, lacks the Tesla P4 and the H200.)
    The legacy 470 branch gets no new device ids: the RTX A5500 (2022) came after it."""
    gpu, _ = item
    ids = {int(pci_id, 16) for pci_id in gpu.pci_ids}
    for branch in sorted({b for _, b, f in PCI.packages if f.startswith("server")}):
        known = MATRIX.driver_branch(branch)
        if (branch, gpu.name) in NEWER_THAN_THE_BRANCH:
            assert not any(ids & p.devices for (_, b, _), p in PCI.packages.items() if b == branch), branch
            continue
        if known is not None and gpu.architecture in known.architectures:
            assert any(ids & p.devices for (_, b, _), p in PCI.packages.items() if b == branch), branch


def test_pascal_is_listed_by_580_and_not_by_595() -> None:
    pascal = [device for gpu, device in COVERED if gpu.architecture == "pascal"]
    assert pascal
    for device in pascal:
        branches = {branch for _, branch, _ in PCI.by_device[device]}
        assert 580 in branches
        assert not branches & {595, 615}


@pytest.mark.parametrize("item", COVERED, ids=_id)
def test_the_inference_from_packages_alone_keeps_the_true_architecture(item: tuple[Gpu, int]) -> None:
    """For devices gpus.yml knows, judging by the packages alone (as for an unknown one) is sound."""
    gpu, device = item
    assert gpu.architecture in _archs_from_packages(PCI.by_device[device], MATRIX, PCI)
