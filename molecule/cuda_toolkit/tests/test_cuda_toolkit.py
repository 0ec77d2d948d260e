"""The NVIDIA-repository path of nvidia_driver and cuda_toolkit, against a LOCAL repository.

NVIDIA's CUDA repository cannot be reached from the test machines, so prepare.yml builds a
stand-in inside the container (files/build_fake_nvidia_repo.sh): fake packages made with
dpkg-deb, signed with a throwaway gpg key, served as file://. What is tested here is the
repository configuration (key fetched and fingerprint-checked, deb822 source with Signed-By,
legacy files removed), the branch pinning package, side-by-side toolkits and the "cuda"
alternative, version selection and holds. NCCL comes from the real Ubuntu archive on releases
that package libnccl2.

The scenario runs verify twice: after the install, and after side_effect.yml has switched the host
to ``cuda_toolkit_state: absent`` (it writes MARKER, which converge.yml reads). The toolkit tests
are split by that marker (``installed`` / ``removed`` fixtures skip the other phase's tests); the
repository and driver tests run in both phases, so after the removal they show that the removal
left NVIDIA's repository and the driver alone.
"""

from __future__ import annotations

import json

import pytest

from dlstack.data import ubuntu_releases

MARKER = "/root/.dlstack-test-cuda-absent"
TOOLKITS = ["12.8", "13.0"]
# what the first converge installs from the stand-in repository: the toolkit metapackages and
# their dependencies (shared config-common included), cuDNN
CUDA_PACKAGES = [
    *(f"cuda-toolkit-{v.replace('.', '-')}" for v in TOOLKITS),
    *(f"cuda-nvcc-{v.replace('.', '-')}" for v in TOOLKITS),
    *(f"cuda-toolkit-{v.replace('.', '-')}-config-common" for v in TOOLKITS),
    "cuda-toolkit-config-common",
    "libcudnn9-cuda-12",
    "libnccl2",
]
HELD = ["cuda-toolkit-12-8", "cuda-toolkit-13-0", "libcudnn9-cuda-12", "libnccl2"]
DRIVER_PACKAGES = ["libnvidia-compute", "nvidia-utils", "nvidia-fabricmanager", "nvidia-driver-pinning-595"]


def _removed(host) -> bool:
    return host.file(MARKER).exists


@pytest.fixture
def installed(host):
    """Only before side_effect.yml switched the host to cuda_toolkit_state: absent."""
    if _removed(host):
        pytest.skip("the host was switched to cuda_toolkit_state: absent")


@pytest.fixture
def removed(host):
    """Only after side_effect.yml switched the host to cuda_toolkit_state: absent."""
    if not _removed(host):
        pytest.skip("the host still has cuda_toolkit_state: present")


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


def test_fabric_manager_at_the_drivers_upstream_version_and_held(host):
    # the repository has 610.43.02-1ubuntu1 too, and the driver's revision (-1) differs from it
    assert host.package("nvidia-fabricmanager").version == "595.45.04-1ubuntu1"
    assert _selections(host)["nvidia-fabricmanager"] == "hold"


def test_driver_fact_from_nvidia_source(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/nvidia_driver.fact").content_string)
    assert (fact["source"], fact["branch"], fact["version"]) == ("nvidia", "595", "595.45.04")


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("version", ["12.8", "13.0"])
def test_toolkits_side_by_side(host, version):
    nvcc = host.file(f"/usr/local/cuda-{version}/bin/nvcc")
    assert nvcc.is_file
    assert f"release {version}" in host.check_output(f"/usr/local/cuda-{version}/bin/nvcc")


@pytest.mark.usefixtures("installed")
def test_default_toolkit_alternative(host):
    out = host.check_output("update-alternatives --query cuda")
    values = dict(line.split(": ", 1) for line in out.splitlines() if line.startswith(("Value", "Status")))
    assert values == {"Status": "manual", "Value": "/usr/local/cuda-12.8"}
    link = host.file("/usr/local/cuda")
    assert link.is_symlink
    assert link.linked_to == "/usr/local/cuda-12.8"  # resolved through /etc/alternatives/cuda


@pytest.mark.usefixtures("installed")
def test_login_shell_finds_default_nvcc(host):
    assert host.check_output("bash -lc 'command -v nvcc'") == "/usr/local/cuda/bin/nvcc"
    assert "release 12.8" in host.check_output("bash -lc nvcc")


@pytest.mark.usefixtures("installed")
def test_linker_path_for_default_toolkit(host):
    lines = host.file("/etc/ld.so.conf.d/dlstack-cuda.conf").content_string.splitlines()
    assert "/usr/local/cuda/lib64" in lines


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("package", HELD)
def test_packages_held(host, package):
    assert _selections(host)[package] == "hold"


@pytest.mark.usefixtures("installed")
def test_cudnn_at_requested_version(host):
    # 9.12.0.46 is also in the repository: the requested version must win.
    assert host.package("libcudnn9-cuda-12").version == "9.10.2.21-1"


@pytest.mark.usefixtures("installed")
def test_nccl_version_and_source(host):
    version = host.package("libnccl2").version
    archive = _archive_nccl(host)
    if archive:
        assert version.startswith(f"{archive}-")
        assert "libnccl.so.2 " in host.check_output("ldconfig -p")
    else:
        assert version == "2.27.5-1+cuda12.9"


@pytest.mark.usefixtures("installed")
def test_cuda_fact(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/cuda_toolkit.fact").content_string)
    assert fact["versions"] == ["12.8", "13.0"]
    assert fact["default"] == "12.8"
    assert fact["prefixes"] == {"12.8": "/usr/local/cuda-12.8", "13.0": "/usr/local/cuda-13.0"}
    assert fact["packages"]["libcudnn9-cuda-12"] == "9.10.2.21-1"
    assert fact["nccl_source"] == ("ubuntu" if _archive_nccl(host) else "nvidia")


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("package", [p for p in CUDA_PACKAGES if p.startswith("cuda-") and p not in HELD])
def test_toolkit_dependencies_installed_automatically(host, package):
    # the removal takes these along only because apt marked them automatic
    assert package in host.check_output("apt-mark showauto").splitlines()


def test_unrelated_unneeded_package_stays(host):
    # installed and marked automatic by prepare.yml: apt finds it unneeded, but it is not the
    # roles' to remove (no blanket autoremove, in either phase)
    assert host.package("dlstack-test-unneeded").is_installed


@pytest.mark.usefixtures("removed")
@pytest.mark.parametrize("package", CUDA_PACKAGES)
def test_removed_package_purged(host, package):
    # not installed and no configuration left (purged): dpkg no longer knows it, or as not-installed
    result = host.run(f"dpkg-query -W -f='${{db:Status-Status}}' {package}")
    assert result.rc != 0 or result.stdout.strip() == "not-installed", result.stdout


@pytest.mark.usefixtures("removed")
@pytest.mark.parametrize("package", HELD)
def test_removed_package_not_held(host, package):
    assert _selections(host).get(package) != "hold"


@pytest.mark.usefixtures("removed")
@pytest.mark.parametrize("version", TOOLKITS)
def test_removed_toolkit_directory_gone(host, version):
    assert not host.file(f"/usr/local/cuda-{version}").exists


@pytest.mark.usefixtures("removed")
@pytest.mark.parametrize("path", ["/usr/local/cuda", "/etc/alternatives/cuda"])
def test_removed_cuda_link_gone(host, path):
    # a dangling link would not "exist": check for a link too
    assert not host.file(path).exists
    assert not host.file(path).is_symlink


@pytest.mark.usefixtures("removed")
def test_removed_cuda_alternative_gone(host):
    result = host.run("update-alternatives --query cuda")
    assert result.rc != 0
    assert "no alternatives for cuda" in result.stderr


@pytest.mark.usefixtures("removed")
@pytest.mark.parametrize(
    "path",
    ["/etc/profile.d/cuda.sh", "/etc/ld.so.conf.d/dlstack-cuda.conf", "/etc/ansible/facts.d/cuda_toolkit.fact"],
)
def test_removed_role_file_gone(host, path):
    assert not host.file(path).exists


@pytest.mark.usefixtures("removed")
def test_removed_login_shell_has_no_nvcc(host):
    assert host.run("bash -lc 'command -v nvcc'").rc != 0


@pytest.mark.usefixtures("removed")
def test_removed_nccl_out_of_linker_cache(host):
    if not _archive_nccl(host):
        pytest.skip("NCCL comes from the stand-in repository here (a marker file, no library)")
    assert "libnccl.so.2 " not in host.check_output("ldconfig -p")


@pytest.mark.usefixtures("removed")
@pytest.mark.parametrize("package", DRIVER_PACKAGES)
def test_removed_driver_packages_still_installed_and_held(host, package):
    assert host.package(package).is_installed
    assert _selections(host)[package] == "hold"
