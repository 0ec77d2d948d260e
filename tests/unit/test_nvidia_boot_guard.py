"""The boot guard that keeps GRUB off kernels without a matching NVIDIA module (defect: a kernel
update boots a host into a kernel whose precompiled modules lag, or whose DKMS build failed).

The guard runs on hosts; these tests drive its functions on fake /boot and /lib/modules trees with
a recorded grub.cfg of Ubuntu 24.04 (tests/fixtures/grub). The VM tier (tests/vm) runs it for real
through kernel and apt hooks on a booted Ubuntu kernel.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from file_module import load_file
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "nvidia_driver" / "files" / "dlstack_nvidia_boot_guard.py"
GRUB_CFG = (ROOT / "tests" / "fixtures" / "grub" / "noble-two-kernels.grub.cfg").read_text(encoding="utf-8")
UUID = "dad7bb6f-7632-4de0-9d4a-4a152b995d7b"
PRECOMPILED = "kernel/nvidia-580srv-open/nvidia.ko"

guard = load_file("dlstack_nvidia_boot_guard", SCRIPT, register=True)


def fake_runner(versions: dict[str, str], driver: str = "580.178.04-0ubuntu0.24.04.1"):
    """modinfo answers from ``versions`` (module path suffix -> version); dpkg-query from ``driver``."""

    def runner(argv):
        if argv[0] == "dpkg-query":
            return (0, f"installed {driver}") if driver else (1, "")
        if argv[0] == "modinfo":
            for suffix, version in versions.items():
                if argv[-1].endswith(suffix):
                    return 0, version + "\n"
            return 1, ""
        raise AssertionError(argv)

    return runner


def make_module(modules: Path, release: str, rel: str) -> Path:
    path = modules / release / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF")
    return path


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("6.8.0-151-generic", "6.8.0-149-generic", 1),
        ("6.8.0-31-generic", "6.8.0-149-generic", -1),
        ("6.14.0-37-generic", "6.8.0-151-generic", 1),
        ("5.15.0-214-generic", "5.15.0-99-generic", 1),
        ("1.0~rc1", "1.0", -1),
        ("1:1.0", "2.0", 1),
        ("580.178.04-0ubuntu0.24.04.1", "580.178.04-0ubuntu0.24.04.1", 0),
    ],
)
def test_compare_versions_like_dpkg(a, b, sign):
    result = guard.compare_versions(a, b)
    assert (result > 0) - (result < 0) == sign


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 300)),
        min_size=1,
        max_size=6,
        unique=True,
    )
)
def test_newest_first_matches_numeric_order_of_kernel_abis(parts):
    releases = [f"{a}.{b}.0-{abi}-generic" for a, b, abi in parts]
    expected = [f"{a}.{b}.0-{abi}-generic" for a, b, abi in sorted(parts, reverse=True)]
    assert guard.newest_first(releases) == expected


def test_compare_versions_agrees_with_dpkg_on_kernel_names():
    dpkg = subprocess.run(["which", "dpkg"], capture_output=True, check=False)
    if dpkg.returncode != 0:
        pytest.skip("no dpkg on this machine")
    names = ["6.8.0-151-generic", "6.8.0-149-generic", "6.14.0-37-generic", "6.8.0-31-generic", "6.8.0-1015-aws"]
    for a in names:
        for b in names:
            gt = subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0
            assert (guard.compare_versions(a, b) > 0) == gt, (a, b)


def test_module_in_updates_dkms_wins_over_the_precompiled_one(tmp_path):
    make_module(tmp_path, "6.8.0-149-generic", "kernel/nvidia-580srv-open/nvidia.ko")
    dkms = make_module(tmp_path, "6.8.0-149-generic", "updates/dkms/nvidia.ko.zst")
    assert guard.find_module("6.8.0-149-generic", tmp_path) == dkms


def test_nvidiafb_is_not_the_nvidia_module(tmp_path):
    make_module(tmp_path, "6.8.0-31-generic", "kernel/drivers/video/fbdev/nvidia/nvidiafb.ko.zst")
    assert guard.find_module("6.8.0-31-generic", tmp_path) is None


def _survey(tmp_path, layout: dict[str, str | None], versions: dict[str, str]):
    for release, rel in layout.items():
        (tmp_path / release).mkdir(parents=True, exist_ok=True)
        if rel:
            make_module(tmp_path, release, rel)
    runner = fake_runner(versions)
    driver = guard.driver_version("libnvidia-compute-580-server", runner)
    return guard.survey(list(layout), driver, runner, tmp_path), driver


def test_newest_kernel_with_its_module_boots_by_default(tmp_path):
    kernels, driver = _survey(
        tmp_path,
        {"6.8.0-149-generic": PRECOMPILED, "6.8.0-151-generic": PRECOMPILED},
        {"nvidia.ko": "580.178.04"},
    )
    state = guard.decide(kernels, driver, "6.8.0-149-generic")
    assert (state.newest_kernel, state.boot_kernel, state.override) == ("6.8.0-151-generic", "6.8.0-151-generic", False)
    assert guard.dropin_text(state, GRUB_CFG) == ""


def test_newest_kernel_without_module_keeps_the_previous_one(tmp_path):
    kernels, driver = _survey(
        tmp_path,
        {"6.8.0-149-generic": PRECOMPILED, "6.8.0-151-generic": None, "6.8.0-31-generic": None},
        {"nvidia.ko": "580.178.04"},
    )
    state = guard.decide(kernels, driver, "6.8.0-149-generic")
    assert (state.newest_kernel, state.boot_kernel, state.override) == ("6.8.0-151-generic", "6.8.0-149-generic", True)
    assert state.kernels_without_module == ["6.8.0-151-generic", "6.8.0-31-generic"]
    assert "6.8.0-151-generic is the newest, but it has no NVIDIA module" in state.message
    text = guard.dropin_text(state, GRUB_CFG)
    assert f'GRUB_DEFAULT="gnulinux-advanced-{UUID}>gnulinux-6.8.0-149-generic-advanced-{UUID}"' in text


def test_the_grub_default_names_an_entry_update_grub_wrote():
    default = guard.grub_default(GRUB_CFG, "6.8.0-149-generic")
    submenu, entry = default.split(">")
    assert f"'{submenu}'" in GRUB_CFG
    assert f"'{entry}'" in GRUB_CFG


def test_module_of_another_driver_version_does_not_count(tmp_path):
    kernels, driver = _survey(
        tmp_path,
        {"6.8.0-149-generic": "kernel/nvidia-580srv-open/nvidia.ko", "6.8.0-151-generic": "updates/dkms/nvidia.ko.zst"},
        {"kernel/nvidia-580srv-open/nvidia.ko": "580.178.04", "updates/dkms/nvidia.ko.zst": "580.126.09"},
    )
    state = guard.decide(kernels, driver, "6.8.0-151-generic")
    assert state.boot_kernel == "6.8.0-149-generic"
    assert "module is version 580.126.09, the driver is 580.178.04" in state.message


def test_no_kernel_with_a_module_leaves_the_default_alone(tmp_path):
    kernels, driver = _survey(tmp_path, {"6.8.0-151-generic": None, "6.8.0-31-generic": None}, {})
    state = guard.decide(kernels, driver, "6.8.0-31-generic")
    assert not state.override
    assert state.boot_kernel == "6.8.0-151-generic"
    assert "no installed kernel has an NVIDIA module" in state.message


def test_without_a_driver_there_is_nothing_to_guard(tmp_path):
    (tmp_path / "6.8.0-151-generic").mkdir()
    runner = fake_runner({}, driver="")
    kernels = guard.survey(["6.8.0-151-generic"], guard.driver_version("x", runner), runner, tmp_path)
    state = guard.decide(kernels, "", "6.8.0-151-generic")
    assert not state.override
    assert "nothing to guard" in state.message


def test_write_dropin_is_idempotent_and_removes_itself(tmp_path):
    path = tmp_path / "grub.d" / "99-dlstack-nvidia.cfg"
    assert guard.write_dropin("GRUB_DEFAULT=x\n", path)
    assert not guard.write_dropin("GRUB_DEFAULT=x\n", path)
    assert guard.write_dropin("", path)
    assert not path.exists()
    assert not guard.write_dropin("", path)


def test_grub_cfg_without_submenu_is_refused():
    with pytest.raises(ValueError, match="Advanced options"):
        guard.grub_default("menuentry 'x' {\n}\n", "6.8.0-149-generic")


def test_state_file_lists_kernels_without_module(tmp_path):
    state = guard.decide(
        [guard.Kernel("6.8.0-151-generic"), guard.Kernel("6.8.0-149-generic", "/m", "580.178.04", True)],
        "580.178.04",
        "6.8.0-149-generic",
    )
    guard.save(state, tmp_path / "state.json")
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["kernels_without_module"] == ["6.8.0-151-generic"]
    assert data["boot_kernel"] == "6.8.0-149-generic"
