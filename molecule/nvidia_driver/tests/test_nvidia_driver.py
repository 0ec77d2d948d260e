"""A container converged with nvidia_driver, then switched to a second branch (side_effect.yml).

The container is detected as one, so the role runs in userspace-only mode: the real Ubuntu
archive packages (headless-no-dkms, utils, libnvidia-compute) are installed, no kernel modules.
The expected versions are the ones dlstack/data/ubuntu.yml records for the branch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dlstack.data import ubuntu_releases

MATRIX = yaml.safe_load((Path(__file__).resolve().parents[1] / "vars" / "branches.yml").read_text())["test_branches"]


def _release(host) -> str:
    return host.system_info.release


def _branches(host) -> dict:
    return MATRIX[_release(host)]


def _expected_packages(host) -> list[str]:
    entry = _branches(host)
    branch, line = entry["second"], "-server" if entry["second_server_line"] else ""
    return [
        f"nvidia-headless-no-dkms-{branch}{line}",
        f"nvidia-utils-{branch}{line}",
        f"libnvidia-compute-{branch}{line}",
    ]


def _selections(host) -> dict[str, str]:
    out = host.check_output("dpkg --get-selections")
    # multi-arch packages are listed as name:amd64
    return {line.split()[0].split(":")[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def _fact(host) -> dict:
    return json.loads(host.file("/etc/ansible/facts.d/nvidia_driver.fact").content_string)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_new_branch_package_installed_at_resolved_version(host, index):
    package = _expected_packages(host)[index]
    branch = _branches(host)["second"]
    expected = ubuntu_releases()[_release(host)]["drivers"][branch]["version"]
    pkg = host.package(package)
    assert pkg.is_installed
    assert pkg.version.split("-")[0] == expected


@pytest.mark.parametrize("index", [0, 1, 2])
def test_new_branch_package_held(host, index):
    assert _selections(host)[_expected_packages(host)[index]] == "hold"


def test_old_branch_removed(host):
    first = _branches(host)["first"]
    installed = host.check_output("dpkg-query -W -f='${db:Status-Status} ${Package}\\n'").splitlines()
    leftovers = [line.split()[1] for line in installed if line.startswith("installed ") and f"-{first}" in line]
    assert leftovers == []


def test_nvidia_smi_present(host):
    assert host.file("/usr/bin/nvidia-smi").is_file
    # No GPU in a container: nvidia-smi runs and says so (exit 9 or 255, "NVML" in the message).
    result = host.run("nvidia-smi")
    assert result.rc != 0
    assert "NVML" in result.stdout + result.stderr or "NVIDIA" in result.stdout + result.stderr


def test_libcuda_in_linker_cache(host):
    out = host.check_output("ldconfig -p")
    assert "libcuda.so.1 " in out
    assert "libnvidia-ml.so.1 " in out


def test_nouveau_blacklisted(host):
    conf = host.file("/etc/modprobe.d/dlstack-blacklist-nouveau.conf")
    assert "blacklist nouveau" in conf.content_string.splitlines()


def test_unattended_upgrades_exclude_held_packages(host):
    out = host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    patterns = [line.split('"')[1] for line in out.splitlines() if '"' in line]
    for package in _expected_packages(host):
        assert f"^{package}$" in patterns


def test_local_fact(host):
    fact = _fact(host)
    entry = _branches(host)
    assert fact["branch"] == entry["second"]
    assert fact["version"] == ubuntu_releases()[_release(host)]["drivers"][entry["second"]]["version"]
    assert fact["userspace_only"] is True
    assert fact["reboot_required"] is False
    assert fact["kernel_modules"] == "none"
    assert set(_expected_packages(host)) <= set(fact["packages"])


def test_fact_packages_all_held(host):
    selections = _selections(host)
    assert {p: selections.get(p) for p in _fact(host)["packages"]} == dict.fromkeys(_fact(host)["packages"], "hold")
