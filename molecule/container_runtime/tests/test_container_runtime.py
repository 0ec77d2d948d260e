"""A host that already ran containers, converged with the container_runtime role (Ubuntu's docker.io).

Before the role ran (prepare.yml), the host had Ubuntu's containerd and runc serving a kubelet
stand-in (namespace k8s.io, a containerd configuration its admin wrote), Docker from Ubuntu's
archive with a hand-written daemon.json (its own log driver, data root, options) and an image.
All of it must still be there, and the role must have refused to swap containerd for Docker's
(converge.yml's first play). This file runs twice: with the NVIDIA Container Toolkit installed,
then after side_effect.yml removed it (container_runtime_nvidia_toolkit: absent); tests that hold
for one of the two states skip in the other.

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
OWN_ROOT = "/srv/own-docker"  # the data root the user wrote by hand (prepare.yml)
STATE = "/var/lib/dlstack/container_runtime/daemon-json-owned.json"
CONTAINERD_CONFIG = """\
# Written by the admin for the kubelet (kubeadm's container runtime guide)
version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""


@pytest.fixture(scope="module")
def toolkit_absent(host) -> bool:
    return host.file("/root/.dlstack-test-toolkit-absent").exists


@pytest.fixture
def with_toolkit(toolkit_absent):
    if toolkit_absent:
        pytest.skip("the toolkit was removed (side_effect.yml)")


@pytest.fixture
def without_toolkit(toolkit_absent):
    if not toolkit_absent:
        pytest.skip("the toolkit is installed (before side_effect.yml)")


@pytest.fixture(scope="module")
def info(host) -> dict:
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


@pytest.fixture(scope="module")
def daemon_json(host) -> dict:
    return json.loads(host.file("/etc/docker/daemon.json").content_string)


@pytest.fixture(scope="module")
def state(host) -> dict:
    return json.loads(host.file(STATE).content_string)


@pytest.fixture(scope="module")
def ctk_calls(host) -> list[str]:
    return host.file("/var/log/fake-nvidia-ctk.log").content_string.splitlines()


@pytest.fixture(scope="module")
def images(host) -> list[dict]:
    output = host.check_output("docker image ls --format '{{json .}}'")
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- what the host had stays


@pytest.mark.parametrize("package", ["containerd", "runc", "docker.io", "kubelet"])
def test_the_hosts_own_runtime_packages_are_still_installed(host, package):
    status = host.check_output(f"dpkg-query -W -f '${{Status}}' {package}")
    assert status.endswith("install ok installed"), status


@pytest.mark.parametrize("package", ["containerd.io", "docker-ce"])
def test_dockers_own_packages_were_not_installed(host, package):
    assert not host.package(package).is_installed


@pytest.mark.parametrize("service", ["containerd", "docker", "kubelet"])
def test_runtime_services_still_run(host, service):
    assert host.service(service).is_running


def test_the_kubelets_containerd_namespace_is_still_there(host):
    assert "k8s.io" in host.check_output("ctr namespaces list -q").split()


def test_containerd_configuration_written_by_the_admin_is_unchanged(host):
    assert host.file("/etc/containerd/config.toml").content_string == CONTAINERD_CONFIG


def test_refusal_named_the_users_of_containerd_and_the_way_out(host):
    refusal = host.file("/root/dlstack-test-refusal.txt").content_string
    assert "would remove docker.io, containerd, runc" in refusal
    assert "kubelet.service is running" in refusal
    assert "container_runtime_remove_runtime_in_use: true" in refusal


def test_the_users_image_is_still_listed(images):
    assert {"Repository": "lab/own-image", "Tag": "1"} in [
        {"Repository": i["Repository"], "Tag": i["Tag"]} for i in images
    ]


def test_docker_keeps_the_data_root_the_user_chose(info):
    assert info["DockerRootDir"] == OWN_ROOT


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data-root", OWN_ROOT),
        ("log-driver", "local"),
        ("log-opts", {"max-size": "20m", "max-file": "2"}),
        ("registry-mirrors", ["https://mirror.example.invalid"]),
    ],
)
def test_hand_written_key_is_not_overwritten_by_a_dlstack_default(daemon_json, key, value):
    assert daemon_json[key] == value


def test_logging_driver_is_the_users(info):
    assert info["LoggingDriver"] == "local"


def test_dlstack_owns_none_of_the_users_keys(state):
    owned = {path[0] for path in state["owned"]}
    assert not owned & {"data-root", "log-driver", "log-opts", "registry-mirrors"}


def test_explicit_setting_wins_and_the_hand_written_value_is_remembered(daemon_json, state):
    assert daemon_json["max-concurrent-uploads"] == 2  # container_runtime_daemon_config
    assert {"path": ["max-concurrent-uploads"], "value": 5} in state["displaced"]


# ----------------------------------------------------------------------------- what the role adds


def test_docker_service_runs_and_is_enabled(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_daemon_answers_without_errors(info):
    assert info["ServerVersion"]
    assert not info.get("ServerErrors")


def test_live_restore_is_on(info, daemon_json):
    assert daemon_json["live-restore"] is True
    assert info["LiveRestoreEnabled"] is True


def test_storage_driver_from_contributed_entry(info):
    assert info["Driver"] == "vfs"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bridge", "none"),  # container_runtime_daemon_config__sandbox
        ("iptables", False),
        ("ip6tables", False),
        ("storage-driver", "vfs"),
        ("max-concurrent-downloads", 6),  # drop-in /etc/docker/daemon.json.d/60-downloads.json
    ],
)
def test_daemon_json_has_merged_entry(daemon_json, key, value):
    assert daemon_json[key] == value


def test_daemon_json_has_no_unexpected_keys(daemon_json):
    assert "default-runtime" not in daemon_json


def test_state_file_records_owned_keys_but_not_the_users(state):
    owned = {".".join(path) for path in state["owned"]}
    assert {"live-restore", "bridge", "max-concurrent-downloads"} <= owned
    assert "registry-mirrors" not in owned
    assert state["sources"]["max-concurrent-downloads"] == "60-downloads"
    assert state["sources"]["bridge"] == "sandbox"


@pytest.mark.parametrize(("user", "member"), [("labadmin", True), ("labuser", False)])
def test_docker_group_only_for_listed_users(host, user, member):
    assert ("docker" in host.user(user).groups) is member


@pytest.mark.parametrize(
    "legacy", ["/etc/apt/sources.list.d/docker.list", "/etc/apt/sources.list.d/nvidia-docker.list"]
)
def test_legacy_sources_removed(host, legacy):
    assert not host.file(legacy).exists


def test_docker_repository_is_signed_by_its_keyring(host):
    source = host.file("/etc/apt/sources.list.d/docker.sources").content_string
    fields = dict(line.split(": ", 1) for line in source.splitlines() if ": " in line)
    assert fields["Signed-By"] == "/etc/apt/keyrings/docker.asc"
    assert host.file(fields["Signed-By"]).exists
    assert fields["URIs"] == "file:///srv/fake-apt/docker"


def test_docker_repository_verifies_with_the_pinned_key(host):
    # apt only offers the fake docker-ce when the InRelease signature checked against the keyring.
    policy = host.check_output("apt-cache policy docker-ce")
    assert "Candidate: 5:99.0.0-1~ubuntu" in policy
    assert "file:/srv/fake-apt/docker" in policy


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
        assert layer_dir.startswith(f"{OWN_ROOT}/vfs/")
    finally:
        host.run(f"docker image rm {image_id}")


def test_local_fact_published(host, toolkit_absent):
    fact = json.loads(host.file("/etc/ansible/facts.d/container_runtime.fact").content_string)
    assert fact["data_root"] == OWN_ROOT
    assert fact["live_restore"] is True
    assert fact["nvidia_toolkit"] is not toolkit_absent
    assert fact["nvidia_toolkit_version"] == ("" if toolkit_absent else TOOLKIT["version"])


# ----------------------------------------------------------------------------- with the toolkit


@pytest.mark.usefixtures("with_toolkit")
def test_runtimes_include_nvidia(info):
    assert info["Runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"


@pytest.mark.usefixtures("with_toolkit")
@pytest.mark.parametrize(
    ("key", "value"),
    [("runtimes", {"nvidia": {"path": "nvidia-container-runtime", "args": []}}), ("features", {"cdi": True})],
)
def test_daemon_json_has_the_nvidia_entry(daemon_json, key, value):
    assert daemon_json[key] == value


@pytest.mark.usefixtures("with_toolkit")
def test_cdi_spec_directory_is_known_to_docker(info):
    assert "/etc/cdi" in info.get("CDISpecDirs", [])


@pytest.mark.usefixtures("with_toolkit")
def test_docker_discovered_the_cdi_device(info):
    if "DiscoveredDevices" not in info:
        pytest.skip(f"Docker {info['ServerVersion']} does not report discovered devices")
    assert {"Source": "cdi", "ID": "nvidia.com/gpu=all"} in info["DiscoveredDevices"]


@pytest.mark.usefixtures("with_toolkit")
@pytest.mark.parametrize("package", TOOLKIT["packages"])
def test_toolkit_package_at_pinned_version(host, package):
    pkg = host.package(package)
    assert pkg.is_installed
    assert pkg.version == TOOLKIT["version"]


@pytest.mark.usefixtures("with_toolkit")
@pytest.mark.parametrize("package", TOOLKIT["packages"])
def test_toolkit_package_is_held(host, package):
    assert host.check_output(f"dpkg-query -W -f '${{Status}}' {package}").startswith("hold ")


@pytest.mark.usefixtures("with_toolkit")
def test_toolkit_repository_is_signed_by_its_keyring(host):
    source = host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").content_string
    fields = dict(line.split(": ", 1) for line in source.splitlines() if ": " in line)
    assert fields["Signed-By"] == "/etc/apt/keyrings/nvidia-container-toolkit.asc"
    assert host.file(fields["Signed-By"]).exists


@pytest.mark.usefixtures("with_toolkit")
def test_newer_toolkit_in_the_repository_is_not_taken(host):
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert "99.0.0-1" in policy, "the local repository should offer a newer toolkit"
    assert host.package("nvidia-container-toolkit").version != "99.0.0-1"


@pytest.mark.usefixtures("with_toolkit")
def test_cdi_spec_generated_at_the_configured_path(host):
    spec = host.file("/etc/cdi/nvidia.yaml")
    assert spec.exists
    assert "kind: nvidia.com/gpu" in spec.content_string
    assert not host.file("/var/run/cdi/nvidia.yaml").exists


@pytest.mark.usefixtures("with_toolkit")
def test_cdi_spec_records_the_driver_version(host):
    assert host.file("/var/lib/dlstack/container_runtime/cdi-driver-version").content_string.strip() == "580.95.05"


@pytest.mark.usefixtures("with_toolkit")
def test_cdi_refresh_service_writes_to_the_same_path(host):
    env = host.file("/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env").content_string
    assert "NVIDIA_CTK_CDI_OUTPUT_FILE_PATH=/etc/cdi/nvidia.yaml" in env.splitlines()
    assert host.service("nvidia-cdi-refresh.path").is_enabled


@pytest.mark.usefixtures("with_toolkit")
def test_nvidia_ctk_generated_cdi_once(ctk_calls):
    assert ctk_calls.count("cdi generate --output=/etc/cdi/nvidia.yaml") == 1


@pytest.mark.usefixtures("with_toolkit")
def test_nvidia_ctk_configured_containerd(host, ctk_calls):
    assert "runtime configure --runtime=containerd" in ctk_calls
    assert host.file("/etc/containerd/conf.d/99-nvidia.toml").exists


@pytest.mark.usefixtures("with_toolkit")
def test_nvidia_ctk_never_rewrote_daemon_json(ctk_calls):
    assert not [call for call in ctk_calls if "--runtime=docker" in call]


@pytest.mark.usefixtures("with_toolkit")
def test_dev_char_udev_rule_installed(host):
    rule = host.file("/etc/udev/rules.d/71-nvidia-dev-char.rules").content_string
    assert 'RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"' in rule


# ----------------------------------------------------------------------------- after the toolkit's removal


@pytest.mark.usefixtures("without_toolkit")
@pytest.mark.parametrize("package", TOOLKIT["packages"])
def test_toolkit_package_is_removed(host, package):
    assert not host.package(package).is_installed


@pytest.mark.usefixtures("without_toolkit")
@pytest.mark.parametrize("package", TOOLKIT["packages"])
def test_toolkit_package_is_no_longer_held(host, package):
    assert "hold" not in host.check_output(f"dpkg --get-selections {package}")


@pytest.mark.usefixtures("without_toolkit")
def test_docker_no_longer_knows_the_nvidia_runtime(info, daemon_json):
    assert "nvidia" not in info["Runtimes"]
    assert "nvidia" not in daemon_json.get("runtimes", {})
    assert "features" not in daemon_json


@pytest.mark.usefixtures("without_toolkit")
@pytest.mark.parametrize(
    "path",
    [
        "/etc/cdi/nvidia.yaml",
        "/var/lib/dlstack/container_runtime/cdi-driver-version",
        "/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env",
        "/etc/udev/rules.d/71-nvidia-dev-char.rules",
        "/etc/containerd/conf.d/99-nvidia.toml",
        "/etc/apt/sources.list.d/nvidia-container-toolkit.sources",
        "/etc/apt/keyrings/nvidia-container-toolkit.asc",
    ],
)
def test_what_dlstack_added_for_the_toolkit_is_gone(host, path):
    assert not host.file(path).exists


@pytest.mark.usefixtures("without_toolkit")
def test_docker_itself_stays_after_the_toolkit_removal(host, info):
    assert host.package("docker.io").is_installed
    assert info["DockerRootDir"] == OWN_ROOT
