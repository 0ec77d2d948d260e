"""The NVIDIA-repository path of nvidia_driver and cuda_toolkit, against a LOCAL repository.

NVIDIA's CUDA repository cannot be reached from the test machines, so prepare.yml builds a
stand-in inside the container (files/build_fake_nvidia_repo.sh): fake packages made with
dpkg-deb, signed with a throwaway gpg key, served as file://. What is tested here is the
repository configuration (key fetched and fingerprint-checked, deb822 source with Signed-By,
legacy files removed), the branch pinning package, side-by-side toolkits and the "cuda"
alternative, version selection and holds. NCCL comes from the real Ubuntu archive on releases
that package libnccl2.
"""

from __future__ import annotations

import json

import pytest

from dlstack.data import ubuntu_releases


def _selections(host) -> dict[str, str]:
    out = host.check_output("dpkg --get-selections")
    return {line.split()[0].split(":")[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def _distro(host) -> str:
    return "ubuntu" + host.system_info.release.replace(".", "")


def _archive_nccl(host) -> str:
    return ubuntu_releases()[host.system_info.release].get("libnccl2") or ""


def _sources(host) -> dict[str, str]:
    text = host.file("/etc/apt/sources.list.d/cuda.sources").content_string
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_deb822_source_points_at_mirror(host):
    assert _sources(host)["URIs"] == f"file:///srv/nvidia-mirror/{_distro(host)}/x86_64/"


def test_deb822_source_signed_by_keyring(host):
    assert _sources(host)["Signed-By"] == "/etc/apt/keyrings/cuda-archive-keyring.asc"


def test_keyring_has_expected_fingerprint(host):
    expected = host.file("/srv/nvidia-mirror/fingerprint").content_string.strip()
    out = host.check_output("gpg --batch --with-colons --show-keys /etc/apt/keyrings/cuda-archive-keyring.asc")
    assert expected in [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]


@pytest.mark.parametrize(
    "path", ["/etc/apt/sources.list.d/cuda.list", "/etc/apt/preferences.d/cuda-repository-pin-600"]
)
def test_legacy_files_removed(host, path):
    assert not host.file(path).exists


def test_apt_reads_repository_without_warnings(host):
    result = host.run("apt-get update -o APT::Update::Error-Mode=any")
    assert result.rc == 0, result.stderr


def test_pinning_package_installed_and_held(host):
    assert host.package("nvidia-driver-pinning-595").is_installed
    assert _selections(host)["nvidia-driver-pinning-595"] == "hold"


@pytest.mark.parametrize("package", ["libnvidia-compute", "nvidia-utils"])
def test_pinned_branch_wins_over_newer(host, package):
    # The repository also carries 610.43.02: only the pinning package keeps 595.
    assert host.package(package).version == "595.45.04-1"
    assert _selections(host)[package] == "hold"


def test_driver_fact_from_nvidia_source(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/nvidia_driver.fact").content_string)
    assert (fact["source"], fact["branch"], fact["version"]) == ("nvidia", "595", "595.45.04")


@pytest.mark.parametrize("version", ["12.8", "13.0"])
def test_toolkits_side_by_side(host, version):
    nvcc = host.file(f"/usr/local/cuda-{version}/bin/nvcc")
    assert nvcc.is_file
    assert f"release {version}" in host.check_output(f"/usr/local/cuda-{version}/bin/nvcc")


def test_default_toolkit_alternative(host):
    out = host.check_output("update-alternatives --query cuda")
    values = dict(line.split(": ", 1) for line in out.splitlines() if line.startswith(("Value", "Status")))
    assert values == {"Status": "manual", "Value": "/usr/local/cuda-12.8"}
    link = host.file("/usr/local/cuda")
    assert link.is_symlink
    assert link.linked_to == "/usr/local/cuda-12.8"  # resolved through /etc/alternatives/cuda


def test_login_shell_finds_default_nvcc(host):
    assert host.check_output("bash -lc 'command -v nvcc'") == "/usr/local/cuda/bin/nvcc"
    assert "release 12.8" in host.check_output("bash -lc nvcc")


def test_linker_path_for_default_toolkit(host):
    lines = host.file("/etc/ld.so.conf.d/dlstack-cuda.conf").content_string.splitlines()
    assert "/usr/local/cuda/lib64" in lines


@pytest.mark.parametrize("package", ["cuda-toolkit-12-8", "cuda-toolkit-13-0", "libcudnn9-cuda-12", "libnccl2"])
def test_packages_held(host, package):
    assert _selections(host)[package] == "hold"


def test_cudnn_at_requested_version(host):
    # 9.12.0.46 is also in the repository: the requested version must win.
    assert host.package("libcudnn9-cuda-12").version == "9.10.2.21-1"


def test_nccl_version_and_source(host):
    version = host.package("libnccl2").version
    archive = _archive_nccl(host)
    if archive:
        assert version.startswith(f"{archive}-")
        assert "libnccl.so.2 " in host.check_output("ldconfig -p")
    else:
        assert version == "2.27.5-1+cuda12.9"


def test_cuda_fact(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/cuda_toolkit.fact").content_string)
    assert fact["versions"] == ["12.8", "13.0"]
    assert fact["default"] == "12.8"
    assert fact["prefixes"] == {"12.8": "/usr/local/cuda-12.8", "13.0": "/usr/local/cuda-13.0"}
    assert fact["packages"]["libcudnn9-cuda-12"] == "9.10.2.21-1"
    assert fact["nccl_source"] == ("ubuntu" if _archive_nccl(host) else "nvidia")
