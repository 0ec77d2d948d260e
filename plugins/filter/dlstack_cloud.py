"""Filters for the ``cloud_vm`` role: a thin adapter over :mod:`dlstack.cloud` (no logic here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    from dlstack import cloud
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from dlstack import cloud

from ansible.errors import AnsibleFilterError


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except (ValueError, KeyError, TypeError) as exc:
        raise AnsibleFilterError(str(exc)) from exc


def cloud_spec(instance_type: str, provider: str, accelerator_type: str = "", accelerator_count: int = 0) -> Any:
    """``{{ 'p5.48xlarge' | dlstack_cloud_spec('aws') }}``: the catalogue entry as a dict, or None."""
    spec = _call(cloud.lookup, provider, instance_type, accelerator_type or None, int(accelerator_count))
    return spec.as_dict() if spec else None


def cloud_guard(
    instance_type: str,
    provider: str,
    count: int,
    max_gpus: int = cloud.DEFAULT_MAX_GPUS,
    confirm: bool = False,
    accelerator_type: str = "",
    accelerator_count: int = 0,
) -> dict[str, Any]:
    """``{{ cloud_vm_instance_type | dlstack_cloud_guard(provider, count, max, confirm) }}``: the verdict."""
    result = _call(
        cloud.guard,
        provider,
        instance_type,
        int(count),
        max_gpus=int(max_gpus),
        confirm=bool(confirm),
        accelerator_type=accelerator_type or None,
        accelerator_count=int(accelerator_count),
    )
    return result.as_dict()


def cloud_tags(provider: str, project: str, owner: str, run: str) -> dict[str, str]:
    """Tags (AWS) or labels (GCP) marking one run's resources."""
    return _call(cloud.tags, provider, project, owner, run)


def cloud_tag_filters(provider: str, project: str, owner: str, run: str) -> dict[str, str] | list[str]:
    """Filters selecting exactly one run's resources."""
    return _call(cloud.tag_filters, provider, project, owner, run)


def cloud_marker(provider: str, project: str, owner: str, run: str) -> str:
    """The run's tags as one string (for resources without tags)."""
    return _call(cloud.marker, provider, project, owner, run)


def cloud_name(kind: str, project: str, run: str) -> str:
    """``<project>-<run>-<kind>``, validated."""
    return _call(cloud.resource_name, kind, project, run)


def cloud_image_query(ubuntu_version: str, provider: str, arch: str = "amd64") -> dict[str, str]:
    """Where the newest Canonical Ubuntu image is found."""
    return _call(cloud.image_query, provider, str(ubuntu_version), arch)


def cloud_validate(action: str, provider: str, count: int) -> bool:
    """Raise a clear error for a bad action, provider or count; True otherwise."""
    _call(cloud.validate_request, action, provider, count)
    return True


def cloud_validate_name(value: str, variable: str) -> str:
    """Raise when a project or run name is not accepted; return it otherwise."""
    return _call(cloud.validate_name, variable, value)


def cloud_cidr(value: str) -> str:
    """The SSH source range, validated."""
    return _call(cloud.validate_cidr, value)


def cloud_gcp_instance(settings: dict[str, Any]) -> dict[str, Any]:
    """``google.cloud.gcp_compute_instance`` parameters from a dict of keyword arguments."""
    return _call(cloud.gcp_instance_request, **settings)


def cloud_host(instance: dict[str, Any], provider: str) -> dict[str, str]:
    """An instance as the provider's info module returns it, in the provider-neutral host form."""
    function = {"aws": cloud.aws_host, "gcp": cloud.gcp_host}.get(provider)
    if function is None:
        raise AnsibleFilterError(f"cloud_vm_provider: {provider!r} is not supported; use one of aws, gcp")
    return _call(function, instance)


class FilterModule:
    """dlstack cloud filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "dlstack_cloud_spec": cloud_spec,
            "dlstack_cloud_guard": cloud_guard,
            "dlstack_cloud_tags": cloud_tags,
            "dlstack_cloud_tag_filters": cloud_tag_filters,
            "dlstack_cloud_marker": cloud_marker,
            "dlstack_cloud_name": cloud_name,
            "dlstack_cloud_image_query": cloud_image_query,
            "dlstack_cloud_validate": cloud_validate,
            "dlstack_cloud_validate_name": cloud_validate_name,
            "dlstack_cloud_cidr": cloud_cidr,
            "dlstack_cloud_host": cloud_host,
            "dlstack_cloud_gcp_instance": cloud_gcp_instance,
        }
