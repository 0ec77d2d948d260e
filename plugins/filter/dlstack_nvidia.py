"""Ansible filters for the nvidia_driver and cuda_toolkit roles.

Thin adapter: the logic lives in ``dlstack.nvidia``. Errors become ``AnsibleFilterError`` with the
message that names the variable, the bad value and what is accepted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    import dlstack  # noqa: F401 - probe whether the package is importable
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dlstack import nvidia


def _adapt(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except nvidia.NvidiaError as exc:
            raise AnsibleFilterError(str(exc)) from exc

    return wrapper


class FilterModule:
    """dlstack NVIDIA filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "dlstack_nvidia_branch": _adapt(nvidia.check_branch),
            "dlstack_nvidia_packages": _adapt(nvidia.package_plan),
            "dlstack_nvidia_kernel_modules": _adapt(nvidia.kernel_modules),
            "dlstack_nvidia_gpus": _adapt(nvidia.gpus_from_lspci),
            "dlstack_nvidia_nvswitch": _adapt(nvidia.nvswitch_present),
            "dlstack_nvidia_branch_packages": _adapt(nvidia.branch_packages),
            "dlstack_nvidia_held_packages": _adapt(nvidia.held_packages),
            "dlstack_nvidia_driver_packages": _adapt(nvidia.driver_packages),
            "dlstack_nvidia_kernel_meta": _adapt(nvidia.kernel_meta),
            "dlstack_nvidia_fabricmanager_spec": _adapt(nvidia.fabricmanager_spec),
            "dlstack_nvidia_other_branch_packages": _adapt(nvidia.other_branch_packages),
            "dlstack_nvidia_upstream_version": _adapt(nvidia.upstream_version),
            "dlstack_nvidia_secure_boot": _adapt(nvidia.secure_boot_state),
            "dlstack_nvidia_signatures_enforced": _adapt(nvidia.signatures_enforced),
            "dlstack_nvidia_ubuntu_driver": _adapt(nvidia.ubuntu_driver),
            "dlstack_nvidia_release_branches": _adapt(nvidia.release_branches),
            "dlstack_dpkg_installed": _adapt(nvidia.dpkg_installed),
            "dlstack_nvidia_stack_version": _adapt(nvidia.stack_version),
            "dlstack_cuda_toolkit_plan": _adapt(nvidia.cuda_toolkit_plan),
            "dlstack_cuda_source": _adapt(nvidia.cuda_source),
            "dlstack_cudnn_packages": _adapt(nvidia.cudnn_packages),
            "dlstack_nccl_packages": _adapt(nvidia.nccl_packages),
            "dlstack_ubuntu_nccl": _adapt(nvidia.ubuntu_nccl),
        }
