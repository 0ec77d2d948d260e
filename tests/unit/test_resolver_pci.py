"""The resolver with the host's PCI device ids: parsing lspci, what an id tells, the problems of a
chosen branch, the constraint an id puts on the stack, and the Ansible filters over them."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from file_module import load_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlstack.matrix import UBUNTU_FLAVOURS, load_matrix, load_pci_ids
from dlstack.resolver import ResolutionError, pci_device_ids, pci_gpu, pci_problems, resolve

ROOT = Path(__file__).resolve().parents[2]
MATRIX = load_matrix()
PCI = load_pci_ids()
# A Pascal laptop GPU that gpus.yml does not list: known only by the Modaliases of the driver packages
GTX_1050_TI_M = (
    "01:00.0 3D controller [0302]: NVIDIA Corporation GP107M [GeForce GTX 1050 Ti Mobile] [10de:1c8c] (rev a1)"
)
GTX_1050_TI_M_AUDIO = (
    "01:00.1 Audio device [0403]: NVIDIA Corporation GP104 High Definition Audio Controller [10de:10f0] (rev a1)"
)
INTEL_VGA = "00:02.0 VGA compatible controller [0300]: Intel Corporation HD Graphics 630 [8086:5912] (rev 04)"
H100 = "3b:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)"
NVSWITCH = "05:00.0 Bridge [0680]: NVIDIA Corporation Device [10de:22a3] (rev a1)"


def _plugin() -> ModuleType:
    module = load_file("dlstack_resolver_filter", ROOT / "plugins/filter/dlstack_resolver.py")
    return module


PLUGIN = _plugin()


def _error(**kwargs: Any) -> str:
    with pytest.raises(ResolutionError) as info:
        resolve(**kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------- reading device ids


def test_lspci_lines_give_the_nvidia_display_devices_once() -> None:
    text = "\n".join(
        [INTEL_VGA, GTX_1050_TI_M, GTX_1050_TI_M_AUDIO, H100, H100.replace("3b:00.0", "5d:00.0"), NVSWITCH]
    )
    assert pci_device_ids(text) == ("1c8c", "2330")
    assert pci_device_ids(text.splitlines()) == ("1c8c", "2330")


@pytest.mark.parametrize(
    "given", ["1c8c", "0x1C8C", "10de:1c8c", "01:00.0 0300: 10de:1c8c (rev a1)", f"  {GTX_1050_TI_M}  "]
)
def test_the_forms_of_one_id(given: str) -> None:
    assert pci_device_ids([given]) == ("1c8c",)


def test_other_vendors_are_skipped_and_garbage_is_named() -> None:
    assert pci_device_ids(["8086:5912", "", INTEL_VGA]) == ()
    with pytest.raises(ValueError, match=r"pci_ids: 'GTX 1070' is neither an `lspci -nn` line nor"):
        pci_device_ids(["GTX 1070"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=5))
def test_any_text_gives_ids_or_a_value_error(lines: list[str]) -> None:
    try:
        ids = pci_device_ids(lines)
    except ValueError as exc:
        assert "pci_ids:" in str(exc)
    else:
        assert all(len(i) == 4 and int(i, 16) >= 0 for i in ids)


# ----------------------------------------------------------------------------- what an id tells


def test_an_id_gpus_yml_knows_is_that_model() -> None:
    device = pci_gpu("10de:2330")
    assert device is not None and device.gpu is not None
    assert device.gpu.name == "H100 SXM"
    assert device.compute_capabilities == ((9, 0),)
    assert {b for _, b, _ in device.packages} >= {580, 595}


def test_an_id_only_the_packages_know_is_narrowed_by_them() -> None:
    # GeForce GTX 1050 Ti Mobile: listed by 470, 545 and 580, by no -open package, not by 595 or 615
    device = pci_gpu("1c8c")
    assert device is not None and device.gpu is None
    assert device.architectures == ("maxwell", "pascal", "volta")
    assert device.compute_capabilities[0] == (5, 0) and device.compute_capabilities[-1] == (7, 0)
    assert device.to_dict()["branches"] == ["470", "545", "580"]


def test_an_id_no_data_knows() -> None:
    assert pci_gpu("ffff") is None


# ----------------------------------------------------------------------------- problems of a chosen branch


def test_a_branch_that_dropped_the_device() -> None:
    (problem,) = pci_problems([GTX_1050_TI_M], branch="595", os="24.04")
    assert "driver branch 595" in problem
    assert "PCI device 10de:1c8c" in problem
    assert "nvidia-driver-580" in problem and "branch 470 or 580" in problem


def test_the_problem_names_a_known_model() -> None:
    (problem,) = pci_problems(["15f8"], branch="595", os="ubuntu26.04")
    assert "PCI device 10de:15f8 (Tesla P100 PCIe)" in problem
    assert "branch 580" in problem  # 26.04 packages no 470


def test_an_unknown_device_without_a_setting_says_both_ways_out() -> None:
    (problem,) = pci_problems(["10de:ffff"], branch="580", os="24.04")
    assert "10de:ffff" in problem
    assert "dlstack_gpu" in problem and "dlstack_compute_capability" in problem and "'8.6'" in problem
    assert pci_problems(["10de:ffff"], branch="580", os="24.04", compute_capability="8.6") == []
    assert pci_problems(["10de:ffff"], branch="580", os="24.04", gpu="NVIDIA GeForce RTX 3090") == []


def test_all_is_well() -> None:
    assert pci_problems([H100, GTX_1050_TI_M], branch="580", os="22.04") == []
    assert pci_problems([], branch="580", os="22.04") == []


def test_kernel_module_flavour_and_line_narrow_the_packages() -> None:
    (problem,) = pci_problems(["1c8c"], branch="580", os="24.04", kernel_modules="open")
    assert "nvidia-driver-580-open" in problem
    assert "only nvidia-driver-470, nvidia-driver-470-server, nvidia-driver-580, nvidia-driver-580-server" in problem
    assert pci_problems(["1c8c"], branch="580", os="24.04", kernel_modules="proprietary", driver_line="server") == []


def test_a_branch_ubuntu_does_not_package_falls_back_to_drivers_yml() -> None:
    (problem,) = pci_problems(["1c8c"], branch="590", os="24.04")
    assert "driver branch 590 does not support PCI device 10de:1c8c" in problem
    assert "from 470 to 580" in problem
    assert pci_problems(["2330"], branch="590.44.01", os="24.04") == []


def test_a_branch_another_release_packages_uses_that_release() -> None:
    # 545 is packaged on 22.04 only: its Modaliases still say which devices the branch drives
    assert pci_problems(["2330"], branch="545", os="24.04") == []
    assert "ubuntu 22.04" in pci_problems(["1bb3"], branch="545", os="24.04")[0].lower()  # Tesla P4: not in 545


def test_settings_that_contradict_a_known_device() -> None:
    (problem,) = pci_problems([H100], branch="580", os="24.04", gpu="A100")
    assert "PCI device 10de:2330 (H100 SXM)" in problem
    assert "A100" in problem


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"branch": "58", "os": "24.04"}, "driver='58' is neither a branch"),
        ({"branch": "580", "os": "20.04"}, "os='20.04' is not a supported Ubuntu release"),
        ({"branch": "580", "os": "24.04", "kernel_modules": "nouveau"}, "kernel_modules='nouveau'"),
        ({"branch": "580", "os": "24.04", "gpu": ""}, "gpu='' is empty"),
    ],
)
def test_bad_inputs_are_named(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ResolutionError, match="invalid input") as info:
        pci_problems(["1c8c"], **kwargs)
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------- the constraint on the stack


def test_a_gtx_1050_ti_mobile_never_gets_a_branch_that_dropped_pascal() -> None:
    stack = resolve(pci_ids=[GTX_1050_TI_M]).to_dict()
    assert int(stack["driver"]["branch"]) <= 580
    assert stack["driver"]["kernel_modules"] == "proprietary"
    assert stack["gpu"]["pci_ids"] == ["1c8c"]
    assert stack["gpu"]["compute_capability"] is None
    assert stack["gpu"]["architectures"] == ["maxwell", "pascal", "volta"]
    assert any("10de:1c8c is not in gpus.yml" in w for w in stack["warnings"])
    assert "use a branch from 470 to 580" in _error(pci_ids=["1c8c"], driver="595")
    assert "use a branch from 470 to 580" in _error(pci_ids=["1c8c"], driver="590", driver_source="nvidia")


def test_a_known_device_is_its_model() -> None:
    stack = resolve(pci_ids=[H100, H100], os="24.04").to_dict()
    assert stack["gpu"] == {
        "name": "H100 SXM",
        "compute_capability": "9.0",
        "architecture": "hopper",
        "pci_ids": ["2330"],
        "compute_capabilities": ["9.0"],
        "architectures": ["hopper"],
    }


def test_an_unknown_device_needs_a_setting() -> None:
    message = _error(pci_ids=["10de:ffff"])
    assert "dlstack_gpu" in message and "dlstack_compute_capability" in message
    stack = resolve(pci_ids=["10de:ffff"], compute_capability="8.6").to_dict()
    assert stack["gpu"]["compute_capability"] == "8.6"


def test_settings_must_agree_with_a_known_device() -> None:
    assert "the host has PCI device 10de:2330 (H100 SXM)" in _error(pci_ids=[H100], gpu="A100 SXM4 80GB")
    assert resolve(pci_ids=[H100], gpu="H100").to_dict()["gpu"]["family"] == "H100"


def test_an_lspci_line_as_the_gpu_setting() -> None:
    assert resolve(gpu=GTX_1050_TI_M).to_dict()["gpu"]["architectures"] == ["maxwell", "pascal", "volta"]


def test_a_mixed_host_gets_a_stack_for_every_gpu() -> None:
    stack = resolve(pci_ids=["1c8c", "2330"]).to_dict()  # a GTX 1050 Ti Mobile next to an H100
    assert int(stack["driver"]["branch"]) <= 580
    assert stack["gpu"]["architectures"] == ["maxwell", "pascal", "volta", "hopper"]


def test_a_device_one_branch_no_longer_lists_is_held_to_the_packages() -> None:
    # 10de:2c3a: listed by 580.142 (26.04 release pocket) and by 595 and 615, not by 580.178.04: the
    # architecture rule allows 580, the packages do not
    message = _error(pci_ids=["2c3a"], driver="580", os="26.04")
    assert "driver branch 580 as Ubuntu 26.04 packages it" in message
    assert "packages that do: nvidia-driver-595-open" in message
    assert resolve(pci_ids=["2c3a"], os="26.04").driver_branch == "595"


def test_a_device_only_the_server_line_lists() -> None:
    # 10de:1db2 is listed by nvidia-driver-580-server but not by nvidia-driver-580
    assert resolve(pci_ids=["1db2"], driver="580", driver_line="server").driver_branch == "580"
    message = _error(pci_ids=["1db2"], driver="580", driver_line="desktop")
    assert "only nvidia-driver-580-server" in message


KNOWN_IDS = sorted(f"{device:04x}" for device in PCI.by_device)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pci_id=st.sampled_from(KNOWN_IDS),
    os=st.sampled_from(sorted(MATRIX.ubuntu)),
    driver=st.one_of(
        st.none(), st.sampled_from(sorted({str(b) for _, b, _ in PCI.packages if MATRIX.driver_branch(b)}))
    ),
)
def test_every_stack_for_a_device_uses_a_package_that_lists_it(pci_id: str, os: str, driver: str | None) -> None:
    try:
        stack = resolve(pci_ids=[pci_id], os=os, driver=driver).to_dict()
    except ResolutionError as exc:
        assert str(exc).startswith("no stack satisfies all constraints:")
        return
    branch, modules = int(stack["driver"]["branch"]), stack["driver"]["kernel_modules"]
    keys = [
        (os, branch, f) for f, kind in UBUNTU_FLAVOURS.items() if kind == modules and (os, branch, f) in PCI.packages
    ]
    assert any(int(pci_id, 16) in PCI.packages[key].devices for key in keys)
    assert MATRIX.driver_branch(branch).architectures.issuperset(stack["gpu"]["architectures"])  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- the Ansible filters


def test_filters_are_registered() -> None:
    assert {"dlstack_pci_problems", "dlstack_pci_gpus", "dlstack_resolve"} <= set(PLUGIN.FilterModule().filters())


def test_pci_problems_filter() -> None:
    lspci = "\n".join([INTEL_VGA, GTX_1050_TI_M, GTX_1050_TI_M_AUDIO])
    assert (
        PLUGIN.dlstack_pci_problems(lspci, "580", "24.04", gpu=None, compute_capability="", kernel_modules="auto") == []
    )
    (problem,) = PLUGIN.dlstack_pci_problems(lspci.splitlines(), "595", "24.04")
    assert "10de:1c8c" in problem
    with pytest.raises(AnsibleFilterError, match="dlstack_pci_problems: invalid input"):
        PLUGIN.dlstack_pci_problems(["1c8c"], "595", "18.04")


def test_pci_gpus_filter() -> None:
    assert PLUGIN.dlstack_pci_gpus(["1c8c", H100, "ffff"]) == [
        {
            "pci_id": "1c8c",
            "name": None,
            "architectures": ["maxwell", "pascal", "volta"],
            "compute_capabilities": ["5.0", "5.2", "6.0", "6.1", "7.0"],
            "branches": ["470", "545", "580"],
        },
        {
            "pci_id": "2330",
            "name": "H100 SXM",
            "architectures": ["hopper"],
            "compute_capabilities": ["9.0"],
            "branches": ["545", "580", "595", "615"],
        },
        {"pci_id": "ffff", "name": None, "architectures": [], "compute_capabilities": [], "branches": []},
    ]


def test_resolve_filter_takes_pci_ids() -> None:
    stack = PLUGIN.dlstack_resolve(
        {"pci_ids": "\n".join([GTX_1050_TI_M, GTX_1050_TI_M_AUDIO]), "os": "24.04", "gpu": ""}
    )
    assert stack["driver"]["branch"] == "580"


def test_a_gpu_gpus_yml_lists_is_known_by_its_pci_id() -> None:
    # GeForce GTX 1070 (10de:1b81): the model, so its exact compute capability, not the packages' range
    device = pci_gpu("1b81")
    assert device is not None and device.gpu is not None
    assert (device.gpu.name, device.gpu.cc) == ("GeForce GTX 1070", "6.1")
