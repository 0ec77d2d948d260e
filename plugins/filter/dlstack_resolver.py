"""Ansible filters over the version resolver (thin adapter: the logic lives in ``dlstack.resolver``).

{{ {'gpu': 'NVIDIA H100 80GB HBM3', 'os': '24.04', 'frameworks': ['torch==2.9.*']} | dlstack_resolve }}
-> {"gpu": {...}, "os": "24.04", "driver": {...}, "cuda": "12.8", ..., "warnings": [...]}

{{ 'Tesla V100-SXM2-16GB' | dlstack_gpu_from_smi }}  -> "Tesla V100 SXM2"

{{ lspci_lines | dlstack_pci_problems(branch='595', os='24.04') }}
-> ["driver branch 595 as Ubuntu 24.04 packages it (...) does not support PCI device 10de:1b81 (...): ..."]

{{ ['1b81', '2330'] | dlstack_pci_gpus }}
-> [{"pci_id": "1b81", "name": null, "architectures": ["maxwell", "pascal", "volta"], ...},
    {"pci_id": "2330", "name": "H100 SXM", "architectures": ["hopper"], "compute_capabilities": ["9.0"], ...}]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    import dlstack  # noqa: F401 - probe whether the package is importable
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dlstack.resolver import ResolutionError, gpu_from_smi, pci_gpus, pci_problems, resolve_mapping


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != ()


def dlstack_resolve(constraints: Mapping[str, Any] | None) -> dict[str, Any]:
    """Resolve a stack from a dict with resolve()'s keyword names; null or empty values are ignored."""
    if constraints is None:
        constraints = {}
    if not isinstance(constraints, Mapping):
        raise AnsibleFilterError(f"dlstack_resolve: expected a dict of constraints, got {constraints!r}")
    try:
        return resolve_mapping(constraints).to_dict()
    except ResolutionError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def dlstack_gpu_from_smi(text: Any) -> str | None:
    """A known GPU model name for an nvidia-smi name or an lspci description, or None."""
    if not _present(text):
        return None
    return gpu_from_smi(str(text))


def _lines(devices: Any) -> list[str]:
    """``lspci -nn`` output as one text or a list of lines/ids (stdout or stdout_lines)."""
    if isinstance(devices, str):
        return devices.splitlines()
    if isinstance(devices, (list, tuple)):
        return [str(d) for d in devices]
    raise AnsibleFilterError(f"expected lspci -nn output or a list of PCI device ids, got {devices!r}")


def dlstack_pci_problems(
    devices: Any,
    branch: Any,
    os: Any,
    gpu: Any = None,
    compute_capability: Any = None,
    kernel_modules: Any = None,
    driver_line: Any = None,
) -> list[str]:
    """The problems of running driver ``branch`` on Ubuntu ``os`` with the host's NVIDIA devices; [] if none.

    ``gpu`` / ``compute_capability`` are dlstack_gpu / dlstack_compute_capability; null or empty values
    (and ``kernel_modules: auto``) mean "not set".
    """
    optional = {
        "gpu": gpu,
        "compute_capability": compute_capability,
        "kernel_modules": None if kernel_modules == "auto" else kernel_modules,
        "driver_line": driver_line,
    }
    kwargs = {key: str(value) for key, value in optional.items() if _present(value)}
    try:
        return pci_problems(_lines(devices or []), branch=str(branch), os=str(os), **kwargs)
    except ResolutionError as exc:
        raise AnsibleFilterError(f"dlstack_pci_problems: {exc}") from exc


def dlstack_pci_gpus(devices: Any) -> list[dict[str, Any]]:
    """What the data knows about each NVIDIA GPU in lspci -nn output or a list of ids.

    An id no data knows comes back with ``name: null`` and empty lists.
    """
    try:
        found = pci_gpus(_lines(devices or []))
    except ValueError as exc:
        raise AnsibleFilterError(f"dlstack_pci_gpus: {exc}") from exc
    unknown = {"name": None, "architectures": [], "compute_capabilities": [], "branches": []}
    return [gpu.to_dict() if gpu else {"pci_id": pci_id, **unknown} for pci_id, gpu in found.items()]


class FilterModule:
    """dlstack resolver filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "dlstack_resolve": dlstack_resolve,
            "dlstack_gpu_from_smi": dlstack_gpu_from_smi,
            "dlstack_pci_problems": dlstack_pci_problems,
            "dlstack_pci_gpus": dlstack_pci_gpus,
        }
