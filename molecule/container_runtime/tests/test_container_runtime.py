"""A host converged with the container_runtime role: Docker from Ubuntu's archive, for real.

Docker's and NVIDIA's apt repositories can't be reached from the test machine: their repository
configuration (keyring pinned by checksum and fingerprint, deb822 source with Signed-By, legacy
sources removed, toolkit pinned and held) is tested against local signed apt repositories that
prepare.yml builds (fake packages made with dpkg-deb, signed with a throwaway gpg key, served as
file:///srv/fake-apt). The fake toolkit's nvidia-ctk logs its calls and writes the files the real
one writes; there is no GPU here, so the nvidia_driver local fact stands in for the driver role.
"""

from __future__ import annotations

import json

import pytest

from dlstack.data import load

TOOLKIT = load("container_toolkit")["nvidia_container_toolkit"]
DATA_ROOT = "/srv/fastdisk/docker"


@pytest.fixture(scope="module")
def info(host) -> dict:
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


@pytest.fixture(scope="module")
def daemon_json(host) -> dict:
    return json.loads(host.file("/etc/docker/daemon.json").content_string)


@pytest.fixture(scope="module")
def ctk_calls(host) -> list[str]:
    return host.file("/var/log/fake-nvidia-ctk.log").content_string.splitlines()


def test_docker_service_runs_and_is_enabled(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_daemon_answers_without_errors(info):
    assert info["ServerVersion"]
    assert not info.get("ServerErrors")


def test_runtimes_include_nvidia(info):
    assert info["Runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"


def test_logging_driver_is_json_file(info):
    assert info["LoggingDriver"] == "json-file"


def test_data_root_is_on_the_fast_disk_from_the_common_fact(info):
    assert info["DockerRootDir"] == DATA_ROOT


def test_storage_driver_from_contributed_entry(info):
    assert info["Driver"] == "vfs"


def test_cdi_spec_directory_is_known_to_docker(info):
    assert "/etc/cdi" in info.get("CDISpecDirs", [])


def test_docker_discovered_the_cdi_device(info):
    if "DiscoveredDevices" not in info:
        pytest.skip(f"Docker {info['ServerVersion']} does not report discovered devices")
    assert {"Source": "cdi", "ID": "nvidia.com/gpu=all"} in info["DiscoveredDevices"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("registry-mirrors", ["https://mirror.example.invalid"]),  # the user's own key (prepare.yml)
        ("bridge", "none"),  # container_runtime_daemon_config__sandbox
        ("iptables", False),
        ("ip6tables", False),
        ("storage-driver", "vfs"),
        ("max-concurrent-downloads", 6),  # drop-in /etc/docker/daemon.json.d/60-downloads.json
        ("live-restore", True),  # container_runtime_daemon_config
        ("log-driver", "json-file"),
        ("log-opts", {"max-size": "100m", "max-file": "3"}),
        ("data-root", DATA_ROOT),
        ("runtimes", {"nvidia": {"path": "nvidia-container-runtime", "args": []}}),
        ("features", {"cdi": True}),
    ],
)
def test_daemon_json_has_merged_entry(daemon_json, key, value):
    assert daemon_json[key] == value


def test_daemon_json_has_no_unexpected_keys(daemon_json):
    assert "default-runtime" not in daemon_json


def test_state_file_records_owned_keys_but_not_the_users(host):
    state = json.loads(host.file("/var/lib/dlstack/container_runtime/daemon-json-owned.json").content_string)
    owned = {".".join(path) for path in state["owned"]}
    assert {"log-opts.max-size", "runtimes.nvidia.path", "bridge", "max-concurrent-downloads"} <= owned
    assert "registry-mirrors" not in owned
    assert state["sources"]["max-concurrent-downloads"] == "60-downloads"
    assert state["sources"]["bridge"] == "sandbox"


@pytest.mark.parametrize(("user", "member"), [("labadmin", True), ("labuser", False)])
def test_docker_group_only_for_listed_users(host, user, member):
    assert ("docker" in host.user(user).groups) is member


@pytest.mark.parametrize("package", TOOLKIT["packages"])
def test_toolkit_package_at_pinned_version(host, package):
    pkg = host.package(package)
    assert pkg.is_installed
    assert pkg.version == TOOLKIT["version"]


@pytest.mark.parametrize("package", TOOLKIT["packages"])
def test_toolkit_package_is_held(host, package):
    assert host.check_output(f"dpkg-query -W -f '${{Status}}' {package}").startswith("hold ")


@pytest.mark.parametrize(
    "legacy", ["/etc/apt/sources.list.d/docker.list", "/etc/apt/sources.list.d/nvidia-docker.list"]
)
def test_legacy_sources_removed(host, legacy):
    assert not host.file(legacy).exists


@pytest.mark.parametrize(
    ("name", "uri"), [("docker", "file:///srv/fake-apt/docker"), ("nvidia-container-toolkit", None)]
)
def test_deb822_source_is_signed_by_its_keyring(host, name, uri):
    source = host.file(f"/etc/apt/sources.list.d/{name}.sources").content_string
    fields = dict(line.split(": ", 1) for line in source.splitlines() if ": " in line)
    assert fields["Signed-By"] == f"/etc/apt/keyrings/{name}.asc"
    assert host.file(fields["Signed-By"]).exists
    if uri:
        assert fields["URIs"] == uri


def test_docker_repository_verifies_with_the_pinned_key(host):
    # apt only offers the fake docker-ce when the InRelease signature checked against the keyring.
    policy = host.check_output("apt-cache policy docker-ce")
    assert "Candidate: 5:99.0.0-1~ubuntu" in policy
    assert "file:/srv/fake-apt/docker" in policy


def test_newer_toolkit_in_the_repository_is_not_taken(host):
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert "99.0.0-1" in policy, "the local repository should offer a newer toolkit"
    assert host.package("nvidia-container-toolkit").version != "99.0.0-1"


def test_cdi_spec_generated_at_the_configured_path(host):
    spec = host.file("/etc/cdi/nvidia.yaml")
    assert spec.exists
    assert "kind: nvidia.com/gpu" in spec.content_string
    assert not host.file("/var/run/cdi/nvidia.yaml").exists


def test_cdi_spec_records_the_driver_version(host):
    assert host.file("/var/lib/dlstack/container_runtime/cdi-driver-version").content_string.strip() == "580.95.05"


def test_cdi_refresh_service_writes_to_the_same_path(host):
    env = host.file("/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env").content_string
    assert "NVIDIA_CTK_CDI_OUTPUT_FILE_PATH=/etc/cdi/nvidia.yaml" in env.splitlines()
    assert host.service("nvidia-cdi-refresh.path").is_enabled


def test_nvidia_ctk_generated_cdi_once(ctk_calls):
    assert ctk_calls.count("cdi generate --output=/etc/cdi/nvidia.yaml") == 1


def test_nvidia_ctk_configured_containerd(host, ctk_calls):
    assert "runtime configure --runtime=containerd" in ctk_calls
    assert host.file("/etc/containerd/conf.d/99-nvidia.toml").exists


def test_nvidia_ctk_never_rewrote_daemon_json(ctk_calls):
    assert not [call for call in ctk_calls if "--runtime=docker" in call]


def test_dev_char_udev_rule_installed(host):
    rule = host.file("/etc/udev/rules.d/71-nvidia-dev-char.rules").content_string
    assert 'RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"' in rule


def test_local_fact_published(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/container_runtime.fact").content_string)
    assert fact["nvidia_toolkit"] is True
    assert fact["nvidia_toolkit_version"] == TOOLKIT["version"]
    assert fact["data_root"] == DATA_ROOT


def test_image_import_lands_in_the_data_root(host):
    # There is no registry: import a busybox rootfs. (Running containers needs NET_ADMIN, which the
    # test container does not have: "failed to create default sandbox: operation not permitted".)
    image_id = host.check_output("docker import /srv/fake-apt/tiny-rootfs.tar dlstack-test/tiny:1")
    try:
        layers = json.loads(
            host.check_output("docker image inspect --format '{{json .GraphDriver}}' dlstack-test/tiny:1")
        )
        assert layers["Name"] == "vfs"
        layer_dir = layers["Data"].get("Dir") or layers["Data"].get("SourceDir")  # "SourceDir" from Docker 29
        assert layer_dir.startswith(f"{DATA_ROOT}/vfs/")
    finally:
        host.run(f"docker image rm {image_id}")
