"""roles/container_runtime/files/runtime_probe.py: when is a runtime in use, and what is Docker's state.

The probe runs on target hosts; its decisions are pure functions fed here with outputs recorded on
Ubuntu 24.04 (dlstack/ubuntu-systemd:24.04 with Ubuntu's containerd, runc and docker.io from the
archive) and Docker 20.10 (`docker create --gpus all`), plus hand-made facts for the cases a test
machine cannot produce (a Kubernetes node, running GPU containers).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from file_module import load_file

ROOT = Path(__file__).resolve().parents[2]
PROBE_PATH = ROOT / "roles" / "container_runtime" / "files" / "runtime_probe.py"


def load_probe():
    module = load_file("runtime_probe", PROBE_PATH, register=True)
    return module


probe = load_probe()

# `apt-get -s remove docker.io docker-doc docker-compose docker-compose-v2 podman-docker containerd runc`
# on Ubuntu 24.04 with docker.io installed (recorded).
SIMULATED_REMOVAL = """\
Reading package lists...
Building dependency tree...
Reading state information...
Package 'docker-doc' is not installed, so not removed
Package 'docker-compose' is not installed, so not removed
Package 'docker-compose-v2' is not installed, so not removed
Package 'podman-docker' is not installed, so not removed
The following packages were automatically installed and are no longer required:
  iptables libip6tc2 libjansson4 libnetfilter-conntrack3 libnfnetlink0
  libnftables1 libnftnl11
Use 'apt autoremove' to remove them.
The following packages will be REMOVED:
  containerd docker.io runc
0 upgraded, 0 newly installed, 3 to remove and 55 not upgraded.
Remv docker.io [29.1.3-0ubuntu3~24.04.2]
Remv containerd [2.2.1-0ubuntu1~24.04.4]
Remv runc [1.3.4-0ubuntu1~24.04.1]
"""

# `dpkg-query -W -f '${Package}\t${db:Status-Abbrev}\t${Version}\n' docker.io docker-doc containerd runc
# docker-ce podman-docker` on the same host (recorded; docker-ce is unknown there and only on stderr).
DPKG_QUERY = (
    "containerd\tii \t2.2.1-0ubuntu1~24.04.4\n"
    "docker-doc\tun \t\n"
    "docker.io\tii \t29.1.3-0ubuntu3~24.04.2\n"
    "podman-docker\tun \t\n"
    "runc\tii \t1.3.4-0ubuntu1~24.04.1\n"
)

# `docker create --gpus all ...` then `docker inspect` (Docker 20.10, recorded), reduced to what is read.
GPUS_ALL = {
    "Name": "/wizardly_yonath",
    "HostConfig": {
        "Runtime": "runc",
        "DeviceRequests": [{"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}],
    },
}
PLAIN = {"Name": "/brave_liskov", "HostConfig": {"Runtime": "runc", "DeviceRequests": None}}
# Docker 25+ records `--device nvidia.com/gpu=all` as a CDI device request (documented format).
CDI = {
    "Name": "/cdi",
    "HostConfig": {"Runtime": "runc", "DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]},
}
NVIDIA_RUNTIME = {"Name": "/legacy", "HostConfig": {"Runtime": "nvidia", "DeviceRequests": None}}

REQUEST = {
    "engine_packages": ["docker.io", "docker-ce"],
    "containerd_packages": ["containerd", "containerd.io"],
}


def facts(**changes) -> dict:
    """Facts of a host with Ubuntu's docker.io, its containerd and runc, and nothing else."""
    base = {
        "engine": {"remove": ["docker.io", "containerd", "runc"], "collateral": [], "simulation_error": ""},
        "toolkit": {"remove": [], "collateral": [], "simulation_error": ""},
        "consumers": {"packages": {}, "services": []},
        "docker": {
            "installed": True,
            "running_containers": [],
            "running_names": [],
            "gpu_containers": [],
        },
        "containerd": {
            "active": True,
            "namespaces": ["moby"],
            "foreign_containers": {},
            "config": "absent",
            "nvidia_runtime": False,
        },
        "daemon_json": {},
        "state": None,
    }
    for dotted, value in changes.items():
        node = base
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return base


# ----------------------------------------------------------------------------- parsing


def test_simulated_removal_lists_what_apt_would_remove():
    assert probe.parse_simulated_removals(SIMULATED_REMOVAL) == ["docker.io", "containerd", "runc"]


def test_dpkg_query_keeps_installed_packages_only():
    assert probe.parse_dpkg_query(DPKG_QUERY) == {
        "containerd": "2.2.1-0ubuntu1~24.04.4",
        "docker.io": "29.1.3-0ubuntu3~24.04.2",
        "runc": "1.3.4-0ubuntu1~24.04.1",
    }


@pytest.mark.parametrize(("abbrev", "installed"), [("ii ", True), ("hi ", True), ("rc ", False), ("un ", False)])
def test_dpkg_status_letters(abbrev, installed):
    parsed = probe.parse_dpkg_query(f"nvidia-container-toolkit\t{abbrev}\t1.0\n")
    assert ("nvidia-container-toolkit" in parsed) is installed


def test_systemctl_is_active_is_read_in_order():
    assert probe.parse_active("inactive\nactive\n", ["containerd", "kubelet"]) == {"containerd": False, "kubelet": True}
    assert probe.parse_active("", ["kubelet"]) == {"kubelet": False}, "no systemctl (image builds): nothing runs"


def test_docker_namespaces_are_not_foreign():
    assert probe.foreign_namespaces(probe.parse_namespaces("k8s.io\nmoby\nplugins.moby\n")) == ["k8s.io"]


def test_containerd_config_origin():
    shipped = b'disabled_plugins = ["cri"]\n'
    conffiles = probe.parse_conffiles(f" /etc/containerd/config.toml {hashlib.md5(shipped).hexdigest()}\n")  # noqa: S324
    mine = b"version = 2\n"
    assert probe.containerd_config_origin(None, conffiles, "") == "absent"
    assert probe.containerd_config_origin(shipped, conffiles, "") == "package"
    assert probe.containerd_config_origin(mine, conffiles, hashlib.sha256(mine).hexdigest()) == "dlstack"
    assert probe.containerd_config_origin(b"version = 2\n# kubeadm\n", conffiles, "") == "foreign"


@pytest.mark.parametrize(
    ("container", "gpus"), [(GPUS_ALL, True), (CDI, True), (NVIDIA_RUNTIME, True), (PLAIN, False), ({}, False)]
)
def test_gpu_containers_are_recognised(container, gpus):
    assert probe.uses_gpus(container) is gpus


# ----------------------------------------------------------------------------- engine replacement


def test_replacing_docker_io_alone_is_not_in_use():
    assert probe.engine_reasons(facts(), REQUEST) == []


def test_nothing_to_remove_is_never_in_use():
    assert probe.engine_reasons(facts(engine__remove=[], consumers__services=["kubelet"]), REQUEST) == []


def test_kubernetes_node_is_in_use_for_every_reason_found():
    node = facts(
        consumers__packages={"kubelet": "1.34.1-1.1"},
        consumers__services=["kubelet"],
        containerd__namespaces=["k8s.io", "moby"],
        containerd__config="foreign",
    )
    reasons = probe.engine_reasons(node, REQUEST)
    assert reasons == [
        "kubelet 1.34.1-1.1 is installed (it runs its containers through containerd)",
        "kubelet.service is running",
        "containerd holds namespace(s) k8s.io besides Docker's (moby)",
        "/etc/containerd/config.toml was written by someone else (not a package's default, not dlstack)",
    ]


def test_containerd_without_docker_serves_something_else():
    lone = facts(engine__remove=["containerd", "runc"], docker__installed=False, containerd__namespaces=[])
    assert probe.engine_reasons(lone, REQUEST) == ["containerd.service runs without Docker, so something else uses it"]


def test_packages_apt_would_take_along_are_in_use():
    reasons = probe.engine_reasons(facts(engine__remove=["runc"], engine__collateral=["podman"]), REQUEST)
    assert reasons == ["apt would also remove podman (they depend on runc)"]


def test_running_containers_of_the_replaced_engine_are_in_use():
    busy = facts(docker__running_containers=["abc"], docker__running_names=["jupyter"])
    assert probe.engine_reasons(busy, REQUEST) == [
        "Docker (docker.io) runs 1 container(s): jupyter; replacing the engine stops them"
    ]


def test_containerd_io_of_a_kubernetes_node_is_protected_too():
    # container_runtime_docker_source: ubuntu on a host with Docker's packages would remove containerd.io.
    node = facts(engine__remove=["docker-ce", "containerd.io"], consumers__services=["kubelet"])
    assert probe.engine_reasons(node, REQUEST) == ["kubelet.service is running"]


def test_a_failed_simulation_refuses():
    broken = facts(engine__simulation_error="E: Unmet dependencies.")
    assert probe.engine_reasons(broken, REQUEST) == [
        "apt cannot plan the removal of docker.io, containerd, runc: E: Unmet dependencies."
    ]


# ----------------------------------------------------------------------------- toolkit removal

TOOLKIT = ["nvidia-container-toolkit", "nvidia-container-toolkit-base"]


def test_unused_toolkit_can_go():
    assert probe.toolkit_reasons(facts(toolkit__remove=TOOLKIT)) == []


def test_gpu_containers_keep_the_toolkit():
    busy = facts(toolkit__remove=TOOLKIT, docker__gpu_containers=["train"])
    assert probe.toolkit_reasons(busy) == ["running container(s) use GPUs through the toolkit: train"]


def test_hand_written_default_runtime_keeps_the_toolkit():
    hand = facts(toolkit__remove=TOOLKIT, daemon_json={"default-runtime": "nvidia"})
    assert "default-runtime to nvidia by hand" in probe.toolkit_reasons(hand)[0]
    # The same key written by dlstack (container_runtime_nvidia_default_runtime) goes with the toolkit.
    state = {"owned": [["default-runtime"]], "leaves": [{"path": ["default-runtime"], "value": "nvidia"}]}
    ours = facts(toolkit__remove=TOOLKIT, daemon_json={"default-runtime": "nvidia"}, state=state)
    assert probe.toolkit_reasons(ours) == []


def test_pods_next_to_a_configured_nvidia_runtime_keep_the_toolkit():
    node = facts(toolkit__remove=TOOLKIT, containerd__nvidia_runtime=True, containerd__foreign_containers={"k8s.io": 7})
    assert probe.toolkit_reasons(node) == [
        "containerd is configured with the nvidia runtime and has containers outside Docker (7 in k8s.io): "
        "GPU pods may use it"
    ]


def test_an_empty_kubernetes_namespace_does_not_keep_the_toolkit():
    # The scenario's kubelet stand-in registers the namespace but runs no pods.
    node = facts(toolkit__remove=TOOLKIT, containerd__nvidia_runtime=True, containerd__foreign_containers={"k8s.io": 0})
    assert probe.toolkit_reasons(node) == []


def test_toolkit_not_installed_is_never_in_use():
    assert probe.toolkit_reasons(facts(docker__gpu_containers=["train"])) == []


# ----------------------------------------------------------------------------- Docker's data root


def test_fresh_host_has_no_dockerd_and_no_data():
    assert probe.is_fresh(False, [])
    assert not probe.is_fresh(True, []), "Docker installed: not fresh"
    assert not probe.is_fresh(False, ["image", "overlay2"]), "docker.io removed, its images still there"


def test_data_root_dlstack_wrote_is_kept_sticky():
    state = {"owned": [["data-root"]], "leaves": [{"path": ["data-root"], "value": "/srv/data/docker"}]}
    assert probe.dlstack_data_root({"data-root": "/srv/data/docker"}, state) == "/srv/data/docker"


@pytest.mark.parametrize(
    ("daemon_json", "state"),
    [
        ({"data-root": "/srv/own"}, None),  # hand-written
        ({"data-root": "/srv/moved"}, {"owned": [["data-root"]], "leaves": [{"path": ["data-root"], "value": "/a"}]}),
        ({}, {"owned": [["data-root"]]}),  # deleted by hand
        (None, None),
    ],
)
def test_data_root_that_is_not_dlstacks(daemon_json, state):
    assert probe.dlstack_data_root(daemon_json, state) == ""


def test_data_root_owned_by_an_older_dlstack_without_values():
    assert probe.dlstack_data_root({"data-root": "/d"}, {"owned": [["data-root"]]}) == "/d"


def test_main_prints_json_for_an_empty_request(capsys, monkeypatch):
    # Nothing to remove and nothing on PATH: the probe still answers with a complete document.
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(probe, "ENV", {"PATH": "/nonexistent"})
    assert probe.main(["runtime_probe.py", json.dumps({"daemon_json": "/nonexistent", "state_file": ""})]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine"]["in_use"] == []
    assert out["toolkit"]["in_use"] == []
    assert out["docker"]["running"] is False
