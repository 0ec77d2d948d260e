"""dlstack.cloud: catalogue, guards, tags, names, image queries and the GCP request."""

from __future__ import annotations

import pytest

from dlstack import cloud, data
from dlstack.cloud import InstanceSpec


def _catalogue_entries() -> list[tuple[str, str, dict]]:
    providers = cloud.catalogue()["providers"]
    return [
        (provider, name, entry)
        for provider, body in providers.items()
        for section in ("instance_types", "accelerators")
        for name, entry in body.get(section, {}).items()
    ]


@pytest.mark.parametrize(
    ("provider", "name", "entry"), _catalogue_entries(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_catalogue_entry_has_a_source(provider: str, name: str, entry: dict) -> None:
    assert entry["source"].startswith("https://")


@pytest.mark.parametrize(
    ("provider", "name", "entry"), _catalogue_entries(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_catalogue_gpu_is_a_known_gpu_model(provider: str, name: str, entry: dict) -> None:
    known = {gpu["name"] for gpu in data.load("gpus")["gpus"]}
    assert entry["gpu"] in known, f"{provider} {name}: {entry['gpu']!r} is not a name in gpus.yml"


@pytest.mark.parametrize(
    ("provider", "instance_type", "gpu", "gpus"),
    [
        ("aws", "g4dn.xlarge", "Tesla T4", 1),
        ("aws", "g4dn.12xlarge", "Tesla T4", 4),
        ("aws", "g5.48xlarge", "A10G", 8),
        ("aws", "g6.xlarge", "L4", 1),
        ("aws", "g6e.12xlarge", "L40S", 4),
        ("aws", "p3.16xlarge", "Tesla V100 SXM2", 8),
        ("aws", "p4d.24xlarge", "A100 SXM4 40GB", 8),
        ("aws", "p4de.24xlarge", "A100 SXM4 80GB", 8),
        ("aws", "p5.48xlarge", "H100 SXM", 8),
        ("aws", "p5e.48xlarge", "H200", 8),
        ("aws", "p5en.48xlarge", "H200", 8),
        ("aws", "p6-b200.48xlarge", "B200", 8),
        ("gcp", "a2-highgpu-8g", "A100 SXM4 40GB", 8),
        ("gcp", "a2-megagpu-16g", "A100 SXM4 40GB", 16),
        ("gcp", "a2-ultragpu-1g", "A100 SXM4 80GB", 1),
        ("gcp", "a3-highgpu-8g", "H100 SXM", 8),
        ("gcp", "a3-ultragpu-8g", "H200", 8),
        ("gcp", "g2-standard-48", "L4", 4),
    ],
)
def test_lookup_finds_catalogued_types(provider: str, instance_type: str, gpu: str, gpus: int) -> None:
    spec = cloud.lookup(provider, instance_type)
    assert spec is not None
    assert (spec.gpu, spec.gpus) == (gpu, gpus)


def test_lookup_gcp_n1_with_accelerators() -> None:
    spec = cloud.lookup("gcp", "n1-standard-16", "nvidia-tesla-v100", 4)
    assert spec == InstanceSpec(
        "gcp",
        "n1-standard-16",
        "Tesla V100 SXM2",
        4,
        "https://cloud.google.com/compute/docs/gpus#v100-gpus",
        "nvidia-tesla-v100",
    )


@pytest.mark.parametrize(
    ("provider", "instance_type", "accelerator", "count"),
    [
        ("aws", "m7i.large", None, 0),  # not a GPU type
        ("aws", "a2-highgpu-1g", None, 0),  # a GCP type on AWS
        ("gcp", "n1-standard-8", None, 0),  # n1 without accelerators has no GPU
        ("gcp", "n1-standard-8", "nvidia-tesla-t4", 3),  # T4 comes in 1, 2 or 4
        ("gcp", "n2-standard-8", "nvidia-tesla-t4", 1),  # T4 attaches to n1 only
        ("gcp", "n1-standard-8", "nvidia-tesla-k80", 1),  # unknown accelerator
        ("gcp", "a3-highgpu-8g", "nvidia-tesla-t4", 1),  # built-in GPUs plus an extra one
    ],
)
def test_lookup_rejects_unknown_requests(
    provider: str, instance_type: str, accelerator: str | None, count: int
) -> None:
    assert cloud.lookup(provider, instance_type, accelerator, count) is None


def test_unknown_provider_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"cloud_vm_provider: 'azure' is not supported; use one of aws, gcp"):
        cloud.lookup("azure", "x")


def test_guard_allows_small_launch() -> None:
    result = cloud.guard("aws", "g5.xlarge", 2)
    assert result.allowed
    assert not result.needs_confirmation
    assert result.total_gpus == 2
    assert result.gpu == "A10G"


def test_guard_allows_exactly_the_limit() -> None:
    result = cloud.guard("aws", "p5.48xlarge", 1, max_gpus=8)
    assert (result.allowed, result.total_gpus) == (True, 8)


def test_guard_stops_64_h100() -> None:
    result = cloud.guard("aws", "p5.48xlarge", 8)
    assert not result.allowed
    assert result.needs_confirmation
    assert result.total_gpus == 64
    assert "8 x p5.48xlarge = 64 x H100 SXM, more than cloud_vm_max_gpus (8)" in result.reasons[0]
    assert "cloud_vm_confirm_large: true" in result.as_dict()["message"]


def test_guard_confirmation_lets_64_h100_through() -> None:
    result = cloud.guard("aws", "p5.48xlarge", 8, confirm=True)
    assert result.allowed
    assert result.needs_confirmation
    assert not any("set cloud_vm_confirm_large" in reason for reason in result.reasons)


def test_guard_stops_uncatalogued_type() -> None:
    result = cloud.guard("aws", "m7i.large", 1)
    assert not result.allowed
    assert result.total_gpus is None
    assert "not in the aws catalogue" in result.reasons[0]


def test_guard_counts_gcp_accelerators() -> None:
    result = cloud.guard("gcp", "n1-standard-8", 3, accelerator_type="nvidia-tesla-t4", accelerator_count=4)
    assert (result.allowed, result.total_gpus) == (False, 12)


def test_guard_raises_on_bad_count() -> None:
    with pytest.raises(ValueError, match="cloud_vm_count: 0"):
        cloud.guard("aws", "g5.xlarge", 0)


def test_aws_tags() -> None:
    assert cloud.tags("aws", "dlstack", "Alice.Smith", "r1") == {
        "dlstack:project": "dlstack",
        "dlstack:owner": "Alice.Smith",
        "dlstack:run": "r1",
    }


def test_gcp_labels_follow_the_label_alphabet() -> None:
    assert cloud.tags("gcp", "dlstack", "Alice.Smith@Example", "r1") == {
        "dlstack-project": "dlstack",
        "dlstack-owner": "alice-smith-example",
        "dlstack-run": "r1",
    }


def test_empty_owner_is_refused() -> None:
    with pytest.raises(ValueError, match="cloud_vm_owner"):
        cloud.tags("aws", "dlstack", "", "r1")


def test_tag_filters_select_all_three_marks() -> None:
    assert cloud.tag_filters("aws", "dlstack", "alice", "r1") == {
        "tag:dlstack:project": "dlstack",
        "tag:dlstack:owner": "alice",
        "tag:dlstack:run": "r1",
    }
    assert cloud.tag_filters("gcp", "dlstack", "alice", "r1") == [
        "labels.dlstack-project = dlstack",
        "labels.dlstack-owner = alice",
        "labels.dlstack-run = r1",
    ]


def test_resource_name() -> None:
    assert cloud.resource_name("ssh", "dlstack", "demo-1") == "dlstack-demo-1-ssh"


@pytest.mark.parametrize("run", ["", "Demo", "1run", "run_1", "a" * 31, "run/1"])
def test_bad_run_names_are_refused(run: str) -> None:
    with pytest.raises(ValueError, match="cloud_vm_run"):
        cloud.resource_name("vm", "dlstack", run)


def test_aws_image_query_uses_the_codename_from_ubuntu_yml() -> None:
    assert cloud.image_query("aws", "24.04") == {
        "owner": "099720109477",
        "name": "ubuntu/images/*/ubuntu-noble-24.04-amd64-server-*",
    }
    codename = data.ubuntu_releases()["22.04"]["codename"]
    assert codename in cloud.image_query("aws", "22.04")["name"]


def test_gcp_image_query() -> None:
    assert cloud.image_query("gcp", "24.04") == {"project": "ubuntu-os-cloud", "family": "ubuntu-2404-lts-amd64"}


def test_image_query_refuses_unknown_release() -> None:
    with pytest.raises(ValueError, match=r"cloud_vm_ubuntu_version: '20.04' is not supported"):
        cloud.image_query("aws", "20.04")


@pytest.mark.parametrize(("value", "expected"), [("198.51.100.7/32", "198.51.100.7/32"), ("10.1.2.3/8", "10.0.0.0/8")])
def test_cidr_is_normalised(value: str, expected: str) -> None:
    assert cloud.validate_cidr(value) == expected


@pytest.mark.parametrize("value", ["", "anywhere", "300.1.1.1/32", "2001:db8::/32"])
def test_bad_cidr_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="cloud_vm_ssh_cidr"):
        cloud.validate_cidr(value)


@pytest.mark.parametrize("action", ["launch", "", "UP"])
def test_bad_action_is_refused(action: str) -> None:
    with pytest.raises(ValueError, match=r"cloud_vm_action: .* is not accepted; use one of up, status, down"):
        cloud.validate_request(action, "aws", 1)


def _gcp_request(**changes: object) -> dict:
    settings: dict = {
        "name": "dlstack-r1-vm-0",
        "machine_type": "n1-standard-8",
        "zone": "us-central1-a",
        "image": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64",
        "disk_gb": 150,
        "disk_type": "pd-balanced",
        "network": "global/networks/default",
        "network_tag": "dlstack-r1-vm",
        "labels": cloud.tags("gcp", "dlstack", "alice", "r1"),
        "ssh_user": "ubuntu",
        "ssh_public_key": "ssh-ed25519 AAAA test\n",
        "spot": False,
        "accelerator_type": "nvidia-tesla-t4",
        "accelerator_count": 2,
    }
    settings.update(changes)
    return cloud.gcp_instance_request(**settings)


def test_gcp_request_attaches_accelerators_and_terminates_on_maintenance() -> None:
    request = _gcp_request()
    assert request["guest_accelerators"] == [
        {"accelerator_type": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "accelerator_count": 2}
    ]
    assert request["scheduling"] == {
        "on_host_maintenance": "TERMINATE",
        "automatic_restart": True,
        "preemptible": False,
    }
    assert request["disks"][0]["initialize_params"]["disk_size_gb"] == 150
    assert request["disks"][0]["auto_delete"] is True
    assert request["labels"]["dlstack-run"] == "r1"
    assert request["metadata"] == {"ssh-keys": "ubuntu:ssh-ed25519 AAAA test"}
    assert request["tags"] == {"items": ["dlstack-r1-vm"]}


def test_gcp_spot_request_is_preemptible_without_restart() -> None:
    request = _gcp_request(spot=True, accelerator_type=None, accelerator_count=0, machine_type="a3-highgpu-8g")
    assert request["scheduling"]["preemptible"] is True
    assert request["scheduling"]["automatic_restart"] is False
    assert "guest_accelerators" not in request


def test_gcp_request_carries_user_data() -> None:
    assert _gcp_request(user_data="#cloud-config\n")["metadata"]["user-data"] == "#cloud-config\n"


def test_aws_host_normalisation() -> None:
    host = cloud.aws_host(
        {
            "instance_id": "i-1",
            "instance_type": "g5.xlarge",
            "state": {"name": "running"},
            "instance_lifecycle": "spot",
            "private_ip_address": "10.0.0.5",
        }
    )
    assert host == {
        "name": "i-1",
        "id": "i-1",
        "instance_type": "g5.xlarge",
        "state": "running",
        "market": "spot",
        "address": "10.0.0.5",
    }


def test_gcp_host_normalisation() -> None:
    host = cloud.gcp_host(
        {
            "name": "dlstack-r1-vm-0",
            "id": 42,
            "machineType": "https://www.googleapis.com/compute/v1/projects/p/zones/z/machineTypes/g2-standard-8",
            "status": "RUNNING",
            "scheduling": {"preemptible": False},
            "networkInterfaces": [{"networkIP": "10.1.0.2", "accessConfigs": [{"natIP": "203.0.113.9"}]}],
        }
    )
    assert host["instance_type"] == "g2-standard-8"
    assert host["address"] == "203.0.113.9"
    assert (host["state"], host["market"]) == ("running", "on-demand")
