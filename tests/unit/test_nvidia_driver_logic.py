"""Unit tests for dlstack.nvidia: package names, branch changes, GPU and Secure Boot parsing."""

from __future__ import annotations

import lzma
import re
from pathlib import Path

import pytest

from dlstack import nvidia
from dlstack.data import load

LSPCI_HGX = """\
0000:18:00.0 "0302" "10de" "2330" -ra1 "10de" "16c1"
0000:2a:00.0 "0302" "10de" "2330" -ra1 "10de" "16c1"
0000:05:00.0 "0680" "10de" "22a3" -ra1 "10de" "1796"
"""
LSPCI_PASCAL = '0000:01:00.0 "0300" "10de" "1b06" -ra1 "1458" "3752"\n'


def _gpu_with_arch(arch: str) -> dict:
    gpu = next(g for g in load("gpus")["gpus"] if g["architecture"] == arch and g.get("pci_ids"))
    return {"compute_capability": str(gpu["compute_capability"]), "pci_id": str(gpu["pci_ids"][0])}


# ----------------------------------------------------------------------------- package plans


def test_ubuntu_server_open_with_precompiled_modules_never_pulls_dkms():
    plan = nvidia.package_plan("580", kernel_release="6.8.0-151-generic")
    # nvidia-headless-580-server-open depends on nvidia-dkms-580-server-open: not on this path
    assert plan["driver"] == ["nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"]
    assert not [p for p in plan["driver"] if "dkms" in p.replace("no-dkms", "")]
    assert plan["modules_meta"] == "linux-modules-nvidia-580-server-open-generic"
    assert plan["modules_prefix"] == "linux-modules-nvidia-580-server-open-"
    assert plan["modules_running"] == "linux-modules-nvidia-580-server-open-6.8.0-151-generic"
    assert plan["probe"] == "libnvidia-compute-580-server"


def test_dkms_path_brings_headers_that_follow_the_kernel():
    plan = nvidia.package_plan("580", kernel_release="6.8.0-151-generic", kernel_meta="generic-hwe-24.04")
    assert plan["dkms"] == [
        "nvidia-dkms-580-server-open",
        "linux-headers-6.8.0-151-generic",
        "linux-headers-generic-hwe-24.04",
    ]


def test_ubuntu_desktop_proprietary_regular_line():
    plan = nvidia.package_plan(
        "595", flavour="desktop", modules="proprietary", server_line=False, kernel_release="6.8.0-151-generic"
    )
    # depends on nvidia-dkms-595, which the module meta provides (installed in the same transaction)
    assert plan["driver"] == ["nvidia-driver-595"]
    assert plan["modules_meta"] == "linux-modules-nvidia-595-generic"


def test_hwe_kernel_uses_hwe_module_meta():
    plan = nvidia.package_plan("580", kernel_release="6.8.0-45-generic", kernel_meta="generic-hwe-22.04")
    assert plan["modules_meta"] == "linux-modules-nvidia-580-server-open-generic-hwe-22.04"


HWE_2404 = "generic-hwe-24.04"


@pytest.mark.parametrize(
    ("installed", "kernel", "meta"),
    [
        (["linux-generic", "linux-image-generic", "linux-image-6.8.0-151-generic"], "6.8.0-151-generic", "generic"),
        # a VM's kernel meta: virtual kernels are generic kernels (there is no -virtual module meta)
        (["linux-image-virtual", "linux-image-6.8.0-31-generic"], "6.8.0-31-generic", "generic"),
        (["linux-image-virtual-hwe-24.04", "linux-image-6.17.0-19-generic"], "6.17.0-19-generic", HWE_2404),
        (["linux-image-generic-hwe-22.04", "linux-image-generic"], "6.8.0-90-generic", "generic-hwe-22.04"),
        (["linux-image-generic-hwe-24.04", "linux-image-generic-hwe-24.04-edge"], "7.0.0-44-generic", HWE_2404),
        (["linux-image-aws", "linux-image-6.8.0-1070-aws"], "6.8.0-1070-aws", "aws"),
        (["linux-image-gcp-lts-24.04"], "6.8.0-1062-gcp", "gcp-lts-24.04"),
        (["linux-image-azure", "linux-image-generic"], "6.8.0-1044-azure", "azure"),
        # no meta installed (a kernel installed by its ABI name only): the flavour itself
        (["linux-image-6.8.0-149-generic", "linux-image-unsigned-6.8.0-149-generic"], "6.8.0-149-generic", "generic"),
        (["linux-image-generic-64k"], "6.8.0-151-generic-64k", "generic-64k"),
    ],
)
def test_kernel_meta_the_modules_follow(installed, kernel, meta):
    assert nvidia.kernel_meta(installed, kernel) == meta


def test_cloud_kernel_flavour():
    assert nvidia.kernel_flavour("6.8.0-1015-aws") == "aws"
    assert nvidia.kernel_flavour("6.17.0-5-generic-64k") == "generic-64k"


def test_non_ubuntu_kernel_is_rejected():
    with pytest.raises(nvidia.NvidiaError, match=r"6\.1\.0-amd64"):
        nvidia.kernel_flavour("6.1.0-amd64")


def test_userspace_only_has_no_modules_and_no_open_suffix():
    plan = nvidia.package_plan("580", userspace_only=True, kernel_release="6.8.0-45-generic")
    assert plan["driver"] == [
        "nvidia-headless-no-dkms-580-server",
        "nvidia-utils-580-server",
        "libnvidia-compute-580-server",
    ]
    assert (plan["modules_meta"], plan["modules_running"], plan["dkms"]) == ("", "", [])


def test_nvidia_repo_590_uses_unversioned_names_and_pinning():
    plan = nvidia.package_plan("595", source="nvidia", kernel_release="6.8.0-45-generic")
    assert plan["pinning"] == "nvidia-driver-pinning-595"
    # NVIDIA's repository ships the persistence daemon (and its unit) in a package of its own
    assert plan["driver"] == ["libnvidia-compute", "nvidia-utils", "nvidia-dkms-open", "nvidia-persistenced"]
    assert plan["fabricmanager"] == "nvidia-fabricmanager"


def test_nvidia_repo_580_keeps_versioned_driver_names_but_not_fabric_manager():
    plan = nvidia.package_plan("580", source="nvidia", modules="proprietary", kernel_release="6.8.0-45-generic")
    assert plan["pinning"] == "nvidia-driver-pinning-580"
    assert plan["driver"] == ["libnvidia-compute-580", "nvidia-utils-580", "nvidia-dkms-580", "nvidia-persistenced"]
    # NVIDIA dropped the branch from Fabric Manager's name with 580 (nvidia-fabricmanager_580.95.05-1)
    assert plan["fabricmanager"] == "nvidia-fabricmanager"
    assert nvidia.package_plan("570", source="nvidia", kernel_release="6.8.0-45-generic")["fabricmanager"] == (
        "nvidia-fabricmanager-570"
    )


def test_nvidia_repo_userspace_has_no_daemon_package():
    plan = nvidia.package_plan("595", source="nvidia", userspace_only=True)
    assert "nvidia-persistenced" not in plan["driver"]


@pytest.mark.parametrize(
    ("package", "deb", "spec"),
    [
        # Ubuntu: fabric-manager-580 is its own source package
        ("nvidia-fabricmanager-580", "580.178.04-0ubuntu0.24.04.1", "nvidia-fabricmanager-580=580.178.04-*"),
        # NVIDIA: the driver is -0ubuntu1, Fabric Manager -1
        ("nvidia-fabricmanager", "580.95.05-0ubuntu1", "nvidia-fabricmanager=580.95.05-*"),
        ("nvidia-fabricmanager", "595.71.05-1ubuntu1", "nvidia-fabricmanager=595.71.05-*"),
    ],
)
def test_fabric_manager_pins_the_upstream_version(package, deb, spec):
    assert nvidia.fabricmanager_spec(package, deb) == spec


def test_fabric_manager_without_a_driver_version_fails():
    with pytest.raises(nvidia.NvidiaError, match="Fabric Manager"):
        nvidia.fabricmanager_spec("nvidia-fabricmanager-580", "")


def test_nvidia_repo_desktop_open_meta():
    plan = nvidia.package_plan("610", source="nvidia", flavour="desktop")
    assert plan["driver"] == ["nvidia-open", "nvidia-persistenced"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"source": "ppa"}, "nvidia_driver_source"),
        ({"flavour": "laptop"}, "nvidia_driver_flavour"),
        ({"modules": "auto"}, "nvidia_driver_kernel_modules"),
    ],
)
def test_bad_choice_names_the_variable(kwargs, name):
    with pytest.raises(nvidia.NvidiaError, match=name):
        nvidia.package_plan("580", **kwargs)


@pytest.mark.parametrize("branch", ["58", "latest", "580.65", ""])
def test_bad_branch_names_the_variable(branch):
    with pytest.raises(nvidia.NvidiaError, match="nvidia_driver_branch"):
        nvidia.check_branch(branch)


# ----------------------------------------------------------------------------- branch changes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ubuntu"
_REAL_BRANCH = re.compile(r"^linux-(?:modules|objects)-nvidia-(?P<branch>\d{3})(?:-server)?(?:-open)?-")


def real_module_package_names() -> list[str]:
    """Every linux-{modules,objects,signatures}-nvidia-* name of four archive suites (fixtures/ubuntu)."""
    names: list[str] = []
    for path in sorted(FIXTURES.glob("lrm-*.txt.xz")):
        names += lzma.decompress(path.read_bytes()).decode().split()
    return names


def test_real_archive_names_carry_the_branch_after_nvidia_never_the_kernel_abi():
    names = real_module_package_names()
    assert len(names) > 40000
    # today's kernels have three- and four-digit ABIs: 6.8.0-151-generic, 5.15.0-204-generic, 6.8.0-1070-aws
    assert any(re.search(r"-\d+\.\d+\.\d+-\d{3}-generic$", n) for n in names)
    wrong = []
    for name in names:
        match = _REAL_BRANCH.match(name)
        expected = match.group("branch") if match else ""
        if nvidia._branch_of(name) != expected:
            wrong.append((name, nvidia._branch_of(name), expected))
    assert wrong == []


def test_real_module_packages_are_never_held():
    names = real_module_package_names()
    for branch in ("470", "535", "580", "595"):
        assert nvidia.held_packages(names, branch) == []


@pytest.mark.parametrize(
    ("name", "branch"),
    [
        ("linux-modules-nvidia-580-server-open-6.8.0-151-generic", "580"),
        ("linux-signatures-nvidia-6.8.0-151-generic", ""),
        ("linux-signatures-nvidia-5.15.0-204-generic", ""),
        ("linux-objects-nvidia-580-server-6.8.0-1070-aws", "580"),
        ("linux-modules-nvidia-580-server-open-generic-hwe-24.04", "580"),
        ("linux-modules-nvidia-580-server-open-gcp-lts-24.04", "580"),
        ("linux-modules-nvidia-470-server-7.0.0-44-generic", "470"),
        ("nvidia-firmware-580-server-580.178.04", "580"),
        ("libnvidia-compute-580-server", "580"),
        ("nvidia-utils-595", "595"),
    ],
)
def test_branch_of_todays_package_names(name, branch):
    assert nvidia._branch_of(name) == branch


def test_a_kernel_abi_of_151_is_not_a_second_branch():
    installed = [
        "nvidia-utils-580-server",
        "libnvidia-compute-580-server",
        "linux-modules-nvidia-580-server-open-generic",
        "linux-modules-nvidia-580-server-open-6.8.0-151-generic",
        "linux-signatures-nvidia-6.8.0-151-generic",
        "linux-image-6.8.0-151-generic",
    ]
    assert nvidia.other_branch_packages(installed, "580") == []
    assert nvidia.held_packages(installed, "580") == ["libnvidia-compute-580-server", "nvidia-utils-580-server"]


@pytest.mark.parametrize(
    ("sig_enforce", "lockdown", "secure_boot", "enforced"),
    [
        ("Y\n", "", "unsupported", True),
        ("N", "[none] integrity confidentiality", "disabled", False),
        ("N", "none [integrity] confidentiality", "enabled", True),
        ("N", "none [integrity] confidentiality", "unsupported", True),
        ("", "", "enabled", True),
        ("", "", "", False),
    ],
)
def test_signatures_enforced(sig_enforce, lockdown, secure_boot, enforced):
    assert nvidia.signatures_enforced(sig_enforce, lockdown, secure_boot) is enforced


def test_driver_packages_are_what_removal_removes_and_nothing_else():
    installed = [
        *INSTALLED,
        "linux-modules-nvidia-580-server-open-generic",
        "linux-signatures-nvidia-6.8.0-151-generic",
        "libnvidia-compute",
        "nvidia-utils",
        "nvidia-persistenced",
        "nvidia-fabricmanager",
        "libnvidia-container1",
        "libnvidia-container-tools",
        "nvidia-container-toolkit-base",
        "cuda-toolkit-12-8",
        "cuda-drivers",
        "linux-image-6.8.0-151-generic",
        "libnccl2",
    ]
    removed = nvidia.driver_packages(installed)
    assert "linux-signatures-nvidia-6.8.0-151-generic" in removed
    unversioned = {"libnvidia-compute", "nvidia-utils", "nvidia-persistenced", "nvidia-fabricmanager", "cuda-drivers"}
    assert unversioned <= set(removed)
    assert "nvidia-driver-pinning-570" in removed
    others = {"libnvidia-container1", "libnvidia-container-tools", "nvidia-container-toolkit", "libnccl2"}
    others |= {"nvidia-container-toolkit-base", "cuda-toolkit-12-8", "linux-image-6.8.0-151-generic"}
    assert not others & set(removed)


INSTALLED = [
    "nvidia-utils-570-server",
    "libnvidia-compute-570-server",
    "nvidia-firmware-570-server-570.211.01",
    "linux-modules-nvidia-570-server-open-6.8.0-45-generic",
    "nvidia-driver-pinning-570",
    "nvidia-utils-580-server",
    "libnvidia-compute-580-server",
    "nvidia-container-toolkit",
    "libnccl2",
    "linux-image-6.8.0-45-generic",
]


def test_other_branch_packages_are_the_old_branch_only():
    assert nvidia.other_branch_packages(INSTALLED, "580") == [
        "libnvidia-compute-570-server",
        "linux-modules-nvidia-570-server-open-6.8.0-45-generic",
        "nvidia-driver-pinning-570",
        "nvidia-firmware-570-server-570.211.01",
        "nvidia-utils-570-server",
    ]


def test_branch_packages_leave_unrelated_packages_alone():
    assert nvidia.branch_packages(INSTALLED, "580") == ["libnvidia-compute-580-server", "nvidia-utils-580-server"]


def test_same_branch_has_nothing_to_remove():
    assert nvidia.other_branch_packages(["nvidia-utils-580-server", "nvidia-driver-pinning-580"], "580") == []


@pytest.mark.parametrize(
    ("deb", "upstream"),
    [
        ("580.178.04-0ubuntu0.24.04.1", "580.178.04"),
        ("1:595.45.04-1", "595.45.04"),
        ("570.26-1ubuntu1", "570.26"),
        ("2.18.5-1", ""),
    ],
)
def test_upstream_version(deb, upstream):
    assert nvidia.upstream_version(deb) == upstream


# ----------------------------------------------------------------------------- GPUs, modules, NVSwitch


def test_lspci_finds_known_gpus_and_nvswitch():
    gpus = nvidia.gpus_from_lspci(LSPCI_HGX)
    assert [(g["name"], g["compute_capability"]) for g in gpus] == [("H100 SXM", "9.0"), ("H100 SXM", "9.0")]
    assert nvidia.nvswitch_present(LSPCI_HGX)


def test_lspci_pascal_gpu():
    assert [g["architecture"] for g in nvidia.gpus_from_lspci(LSPCI_PASCAL)] == ["pascal"]


def test_no_nvswitch_on_a_workstation():
    assert not nvidia.nvswitch_present(LSPCI_PASCAL)


def test_human_readable_lspci_nvswitch():
    assert nvidia.nvswitch_present("05:00.0 Bridge: NVIDIA Corporation GH100 [H100 NVSwitch] (rev a1)\n")


def test_auto_modules_pascal_is_proprietary():
    assert nvidia.kernel_modules("auto", "580", [_gpu_with_arch("pascal")]) == "proprietary"


def test_auto_modules_hopper_is_open():
    assert nvidia.kernel_modules("auto", "580", [_gpu_with_arch("hopper")]) == "open"


def test_auto_modules_without_gpu_follows_branch_default():
    assert nvidia.kernel_modules("auto", "535", []) == "proprietary"
    assert nvidia.kernel_modules("auto", "580", []) == "open"


def test_open_modules_on_volta_fail():
    with pytest.raises(nvidia.NvidiaError, match="open"):
        nvidia.kernel_modules("open", "580", [_gpu_with_arch("volta")])


def test_proprietary_on_blackwell_fails():
    with pytest.raises(nvidia.NvidiaError, match="proprietary"):
        nvidia.kernel_modules("proprietary", "580", [_gpu_with_arch("blackwell")])


def test_open_modules_on_branch_without_them_fail():
    with pytest.raises(nvidia.NvidiaError, match="470"):
        nvidia.kernel_modules("open", "470", [])


# ----------------------------------------------------------------------------- Secure Boot


@pytest.mark.parametrize(
    ("mokutil", "efivar", "state"),
    [
        ("SecureBoot enabled\n", "", "enabled"),
        ("SecureBoot disabled\n", "", "disabled"),
        ("EFI variables are not supported on this system\n", "", "unsupported"),
        ("", " 06 00 00 00 01\n", "enabled"),
        ("", " 06 00 00 00 00\n", "disabled"),
    ],
)
def test_secure_boot_state(mokutil, efivar, state):
    assert nvidia.secure_boot_state(mokutil, efivar) == state


def test_release_branches_come_from_data():
    assert nvidia.release_branches("24.04") == sorted(load("ubuntu")["releases"]["24.04"]["drivers"])


# ----------------------------------------------------------------------------- CUDA, cuDNN, NCCL


def test_cuda_toolkit_plan_nvidia():
    plan = nvidia.cuda_toolkit_plan("12.8")
    assert plan == {
        "version": "12.8",
        "package": "cuda-toolkit-12-8",
        "prefix": "/usr/local/cuda-12.8",
        "priority": "1208",
    }


def test_cuda_toolkit_plan_ubuntu_only_archive_version():
    packaged = load("ubuntu")["releases"]["24.04"]["nvidia_cuda_toolkit"]
    major_minor = ".".join(packaged.split(".")[:2])
    assert nvidia.cuda_toolkit_plan(major_minor, "ubuntu", "24.04")["prefix"] == "/usr"
    with pytest.raises(nvidia.NvidiaError, match="cuda_toolkit_source"):
        nvidia.cuda_toolkit_plan("13.0", "ubuntu", "24.04")


def test_cuda_source_auto():
    packaged = load("ubuntu")["releases"]["24.04"]["nvidia_cuda_toolkit"]
    assert nvidia.cuda_source("auto", [packaged], "24.04") == "ubuntu"
    assert nvidia.cuda_source("auto", ["13.0"], "24.04") == "nvidia"
    assert nvidia.cuda_source("auto", [packaged, "13.0"], "24.04") == "nvidia"


def test_bad_cuda_version_names_variable():
    with pytest.raises(nvidia.NvidiaError, match="cuda_toolkit_versions"):
        nvidia.cuda_major_minor("twelve")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("9.10.2.21", ["libcudnn9-cuda-12=9.10.2.21-*", "libcudnn9-dev-cuda-12=9.10.2.21-*"]),
        ("9.10.2", ["libcudnn9-cuda-12=9.10.2.*", "libcudnn9-dev-cuda-12=9.10.2.*"]),
        ("8.9.7.29", ["libcudnn8=8.9.7.29-*+cuda12.*", "libcudnn8-dev=8.9.7.29-*+cuda12.*"]),
    ],
)
def test_cudnn_packages(version, expected):
    assert nvidia.cudnn_packages(version, "12.8") == expected


def test_cudnn_from_ubuntu_is_refused():
    with pytest.raises(nvidia.NvidiaError, match="nvidia-cudnn"):
        nvidia.cudnn_packages("9.10.2", "12.8", "ubuntu")


def test_nccl_packages():
    assert nvidia.nccl_packages("2.27.5", "13.0") == ["libnccl2=2.27.5-*+cuda13.*", "libnccl-dev=2.27.5-*+cuda13.*"]
    assert nvidia.nccl_packages({"version": "2.18.5"}, "12.0", "ubuntu") == [
        "libnccl2=2.18.5-*",
        "libnccl-dev=2.18.5-*",
    ]


def test_dpkg_installed():
    text = "installed\tlibnccl2\t2.18.5-1-2\nconfig-files\told-pkg\t1.0\ninstalled\tcuda-toolkit-12-8\t12.8.93-1\n"
    assert nvidia.dpkg_installed(text) == {"libnccl2": "2.18.5-1-2", "cuda-toolkit-12-8": "12.8.93-1"}


def test_stack_version():
    assert nvidia.stack_version({"version": "12.8"}) == "12.8"
    assert nvidia.stack_version("13.0") == "13.0"
    assert nvidia.stack_version(None) == ""
