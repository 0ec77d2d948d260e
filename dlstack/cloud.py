"""Cloud GPU VMs: the instance catalogue, launch guards, tags and resource names.

Provider-neutral logic shared by the ``cloud_vm`` role (through ``plugins/filter/dlstack_cloud.py``)
and the tests. The catalogue lives in ``dlstack/data/cloud_instances.yml``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Any

from dlstack import data
from dlstack.matrix import load_matrix

PROVIDERS = ("aws", "gcp")
ACTIONS = ("up", "status", "down")
DEFAULT_MAX_GPUS = 8

# Run ids and project names end up in GCP resource names and labels: lowercase letters, digits,
# dashes; a letter first; at most 30 characters so that "<project>-<run>-<kind>" stays under 63.
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
_LABEL_VALUE_BAD = re.compile(r"[^a-z0-9_-]")
TAG_KEYS = ("project", "owner", "run")


@dataclass(frozen=True)
class InstanceSpec:
    """What one instance of a catalogued type carries."""

    provider: str
    instance_type: str
    gpu: str
    gpus: int
    source: str
    accelerator: str | None = None
    host_arch: str = "amd64"  # the host CPU architecture (A4X's Grace is arm64)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def catalogue() -> dict[str, Any]:
    """The whole catalogue (``cloud_instances.yml``)."""
    return data.load("cloud_instances")


def _provider(provider: str) -> dict[str, Any]:
    if provider not in PROVIDERS:
        raise ValueError(f"cloud_vm_provider: {provider!r} is not supported; use one of {', '.join(PROVIDERS)}")
    return catalogue()["providers"][provider]


def instance_types(provider: str) -> list[str]:
    """Catalogued instance (machine) types of ``provider``."""
    return sorted(_provider(provider).get("instance_types", {}))


def lookup(
    provider: str, instance_type: str, accelerator_type: str | None = None, accelerator_count: int = 0
) -> InstanceSpec | None:
    """The catalogue entry for a request, or ``None`` when the catalogue does not know it.

    On GCP a general-purpose machine type (``n1-standard-8``) carries GPUs only through
    ``accelerator_type`` and ``accelerator_count``; both must be catalogued and compatible.
    """
    entries = _provider(provider)
    entry = entries.get("instance_types", {}).get(instance_type)
    if entry is not None:
        if accelerator_type:
            return None  # accelerator-optimised types have their GPUs built in: an extra one is unknown
        return InstanceSpec(
            provider,
            instance_type,
            entry["gpu"],
            int(entry["gpus"]),
            entry["source"],
            host_arch=entry.get("host_arch", "amd64"),
        )
    if not accelerator_type:
        return None
    accel = entries.get("accelerators", {}).get(accelerator_type)
    if accel is None:
        return None
    family = instance_type.split("-", 1)[0]
    if family not in accel["machine_families"] or int(accelerator_count) not in accel["counts"]:
        return None
    return InstanceSpec(
        provider, instance_type, accel["gpu"], int(accelerator_count), accel["source"], accelerator=accelerator_type
    )


@dataclass(frozen=True)
class GuardResult:
    """The launch guard's verdict on a request."""

    allowed: bool
    needs_confirmation: bool
    total_gpus: int | None
    gpu: str | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["reasons"] = list(self.reasons)
        result["message"] = "; ".join(self.reasons)
        return result


def guard(
    provider: str,
    instance_type: str,
    count: int,
    *,
    max_gpus: int = DEFAULT_MAX_GPUS,
    confirm: bool = False,
    accelerator_type: str | None = None,
    accelerator_count: int = 0,
) -> GuardResult:
    """Decide whether a launch may go ahead.

    A request needs ``cloud_vm_confirm_large: true`` when it asks for more than ``max_gpus`` GPUs in
    total, or for an instance type the catalogue does not know (its GPU count is then unknown).
    """
    if int(count) < 1:
        raise ValueError(f"cloud_vm_count: {count!r} is not a positive number of instances")
    if int(max_gpus) < 0:
        raise ValueError(f"cloud_vm_max_gpus: {max_gpus!r} must be 0 or more")
    spec = lookup(provider, instance_type, accelerator_type, accelerator_count)
    if spec is not None and spec.host_arch != "amd64":
        raise ValueError(
            f"cloud_vm_instance_type: {instance_type!r} has an {spec.host_arch} host; dlstack sets up amd64 hosts "
            f"only (its images and Packages indexes are amd64): choose an amd64 type, e.g. {_amd64_alike(spec)}"
        )
    reasons: list[str] = []
    total: int | None = None
    if spec is None:
        known = f" with accelerator {accelerator_type} x {accelerator_count}" if accelerator_type else ""
        reasons.append(
            f"cloud_vm_instance_type: {instance_type!r}{known} is not in the {provider} catalogue "
            "(dlstack/data/cloud_instances.yml), so its GPU count is unknown"
        )
    else:
        total = spec.gpus * int(count)
        if total > int(max_gpus):
            reasons.append(
                f"{count} x {instance_type} = {total} x {spec.gpu}, more than cloud_vm_max_gpus ({max_gpus})"
            )
    needs = bool(reasons)
    if needs and not confirm:
        reasons.append("set cloud_vm_confirm_large: true to launch anyway")
    return GuardResult(
        allowed=(not needs) or bool(confirm),
        needs_confirmation=needs,
        total_gpus=total,
        gpu=spec.gpu if spec else None,
        reasons=tuple(reasons),
    )


def _amd64_alike(spec: InstanceSpec) -> str:
    """An amd64 instance type of the same provider with the same GPU architecture, for the error message."""
    arch = {g.name: g.architecture for g in load_matrix().gpus}
    for name, entry in sorted(_provider(spec.provider).get("instance_types", {}).items()):
        if entry.get("host_arch", "amd64") == "amd64" and arch.get(entry["gpu"]) == arch.get(spec.gpu):
            return f"{name} ({entry['gpus']} x {entry['gpu']})"
    return "one listed in dlstack/data/cloud_instances.yml"


def validate_name(variable: str, value: str) -> str:
    """Check a project or run name against the rules both providers accept; return it."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(
            f"{variable}: {value!r} is not accepted; use 1-30 lowercase letters, digits or dashes, "
            "starting with a letter"
        )
    return value


def label_value(value: str) -> str:
    """``value`` made acceptable as a GCP label value (lowercase, ``[a-z0-9_-]``, at most 63)."""
    return _LABEL_VALUE_BAD.sub("-", str(value).lower())[:63]


def tags(provider: str, project: str, owner: str, run: str) -> dict[str, str]:
    """The tags (AWS) or labels (GCP) that mark every resource of one run.

    AWS: ``dlstack:project``, ``dlstack:owner``, ``dlstack:run``. GCP label keys allow no colon:
    ``dlstack-project`` and so on, with values lowercased to the label alphabet.
    """
    _provider(provider)
    values = {"project": project, "owner": owner, "run": run}
    if not owner:
        raise ValueError("cloud_vm_owner: must not be empty (it marks who launched the resources)")
    if provider == "aws":
        return {f"dlstack:{key}": str(values[key]) for key in TAG_KEYS}
    return {f"dlstack-{key}": label_value(values[key]) for key in TAG_KEYS}


def tag_filters(provider: str, project: str, owner: str, run: str) -> dict[str, str] | list[str]:
    """Filters selecting exactly the resources of one run.

    AWS: a ``tag:<key>`` filter dict for the ``*_info`` modules; GCP: a list of label expressions
    that ``gcp_compute_instance_info`` combines with AND.
    """
    marks = tags(provider, project, owner, run)
    if provider == "aws":
        return {f"tag:{key}": value for key, value in marks.items()}
    return [f"labels.{key} = {value}" for key, value in marks.items()]


def marker(provider: str, project: str, owner: str, run: str) -> str:
    """The run's tags as one string, for resources that carry no tags (GCP firewall descriptions)."""
    return ", ".join(f"{key}={value}" for key, value in tags(provider, project, owner, run).items())


def resource_name(kind: str, project: str, run: str) -> str:
    """Name of a run's resource: ``<project>-<run>-<kind>`` (``dlstack-demo-sg``)."""
    validate_name("cloud_vm_project", project)
    validate_name("cloud_vm_run", run)
    if not re.match(r"^[a-z][a-z0-9]{0,7}$", kind):
        raise ValueError(f"kind: {kind!r} must be a short lowercase word")
    return f"{project}-{run}-{kind}"


def image_query(provider: str, ubuntu_version: str, arch: str = "amd64") -> dict[str, str]:
    """Where the newest Canonical image of ``ubuntu_version`` is found on ``provider``.

    AWS: the image owner and a name pattern for ``DescribeImages``; GCP: the image project and family.
    """
    releases = data.ubuntu_releases()
    if ubuntu_version not in releases:
        raise ValueError(
            f"cloud_vm_ubuntu_version: {ubuntu_version!r} is not supported; use one of {', '.join(sorted(releases))}"
        )
    if arch != "amd64":
        raise ValueError(f"cloud_vm_arch: {arch!r} is not supported; the catalogued GPU instances are amd64")
    images = catalogue()["images"]
    _provider(provider)
    if provider == "aws":
        pattern = images["aws"]["name_pattern"].format(
            codename=releases[ubuntu_version]["codename"], version=ubuntu_version, arch=arch
        )
        return {"owner": str(images["aws"]["owner"]), "name": pattern}
    family = images["gcp"]["families"].get(ubuntu_version)
    if family is None:
        raise ValueError(f"cloud_vm_ubuntu_version: {ubuntu_version!r} has no GCP image family in the catalogue")
    return {"project": images["gcp"]["project"], "family": family}


def validate_request(action: str, provider: str, count: int) -> None:
    """Check the parts of a request every action needs; raise with the variable's name."""
    if action not in ACTIONS:
        raise ValueError(f"cloud_vm_action: {action!r} is not accepted; use one of {', '.join(ACTIONS)}")
    _provider(provider)
    if int(count) < 1:
        raise ValueError(f"cloud_vm_count: {count!r} is not a positive number of instances")


def validate_cidr(value: str) -> str:
    """Check the SSH source range (``cloud_vm_ssh_cidr``); return it in canonical form."""
    try:
        network = ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError as exc:
        raise ValueError(
            f"cloud_vm_ssh_cidr: {value!r} is not a CIDR range; give the address range allowed to reach SSH, "
            "for example 203.0.113.7/32"
        ) from exc
    if network.version != 4:
        raise ValueError(f"cloud_vm_ssh_cidr: {value!r} is IPv6; an IPv4 range is accepted")
    return str(network)


def gcp_instance_request(
    *,
    name: str,
    machine_type: str,
    zone: str,
    image: str,
    disk_gb: int,
    disk_type: str,
    network: str,
    network_tag: str,
    labels: dict[str, str],
    ssh_user: str,
    ssh_public_key: str,
    spot: bool,
    user_data: str = "",
    accelerator_type: str | None = None,
    accelerator_count: int = 0,
) -> dict[str, Any]:
    """Parameters of ``google.cloud.gcp_compute_instance`` for one GPU VM (no credentials in them).

    GPU VMs cannot live-migrate: host maintenance terminates them. Spot capacity is requested as
    ``preemptible`` (the field google.cloud 1.x exposes); such VMs never restart automatically.
    ``user_data`` (cloud-config) goes into the ``user-data`` metadata key that cloud-init reads.
    """
    metadata = {"ssh-keys": f"{ssh_user}:{ssh_public_key.strip()}"}
    if user_data:
        metadata["user-data"] = user_data
    request: dict[str, Any] = {
        "name": name,
        "machine_type": machine_type,
        "zone": zone,
        "disks": [
            {
                "auto_delete": True,
                "boot": True,
                "initialize_params": {
                    "source_image": image,
                    "disk_size_gb": int(disk_gb),
                    "disk_type": disk_type,
                },
            }
        ],
        "labels": dict(labels),
        "metadata": metadata,
        "network_interfaces": [
            {
                "network": {"selfLink": network},
                "access_configs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}],
            }
        ],
        "scheduling": {"on_host_maintenance": "TERMINATE", "automatic_restart": not spot, "preemptible": bool(spot)},
        "tags": {"items": [network_tag]},
    }
    if accelerator_type:
        request["guest_accelerators"] = [
            {
                "accelerator_type": f"zones/{zone}/acceleratorTypes/{accelerator_type}",
                "accelerator_count": int(accelerator_count),
            }
        ]
    return request


def aws_host(instance: dict[str, Any]) -> dict[str, str]:
    """One ``ec2_instance_info`` instance in the provider-neutral host form the role reports."""
    return {
        "name": instance["instance_id"],
        "id": instance["instance_id"],
        "instance_type": instance.get("instance_type", ""),
        "state": instance.get("state", {}).get("name", ""),
        "market": instance.get("instance_lifecycle") or "on-demand",
        "address": instance.get("public_ip_address") or instance.get("private_ip_address") or "",
    }


def gcp_host(instance: dict[str, Any]) -> dict[str, str]:
    """One ``gcp_compute_instance_info`` resource in the provider-neutral host form."""
    interfaces = instance.get("networkInterfaces") or [{}]
    access = (interfaces[0].get("accessConfigs") or [{}])[0]
    scheduling = instance.get("scheduling") or {}
    return {
        "name": instance["name"],
        "id": str(instance.get("id", instance["name"])),
        "instance_type": str(instance.get("machineType", "")).rsplit("/", 1)[-1],
        "state": str(instance.get("status", "")).lower(),
        "market": "spot" if scheduling.get("preemptible") else "on-demand",
        "address": access.get("natIP") or interfaces[0].get("networkIP") or "",
    }
