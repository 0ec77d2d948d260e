"""Ansible filters over the version resolver (thin adapter: the logic lives in ``dlstack.resolver``).

{{ {'gpu': 'NVIDIA H100 80GB HBM3', 'os': '24.04', 'frameworks': ['torch==2.9.*']} | dlstack_resolve }}
-> {"gpu": {...}, "os": "24.04", "driver": {...}, "cuda": "12.8", ..., "warnings": [...]}

{{ 'Tesla V100-SXM2-16GB' | dlstack_gpu_from_smi }}  -> "Tesla V100 SXM2"
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

from dlstack.resolver import ResolutionError, gpu_from_smi, resolve

RESOLVE_KEYS = (
    "gpu",
    "compute_capability",
    "os",
    "driver",
    "kernel_modules",
    "cuda",
    "frameworks",
    "driver_source",
    "driver_line",
)


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != ()


def dlstack_resolve(constraints: Mapping[str, Any] | None) -> dict[str, Any]:
    """Resolve a stack from a dict with resolve()'s keyword names; null or empty values are ignored."""
    if constraints is None:
        constraints = {}
    if not isinstance(constraints, Mapping):
        raise AnsibleFilterError(f"dlstack_resolve: expected a dict of constraints, got {constraints!r}")
    unknown = sorted(set(constraints) - set(RESOLVE_KEYS))
    if unknown:
        raise AnsibleFilterError(f"dlstack_resolve: unknown keys {unknown}; accepted: {', '.join(RESOLVE_KEYS)}")
    kwargs = {key: value for key, value in constraints.items() if _present(value)}
    frameworks = kwargs.get("frameworks", ())
    if isinstance(frameworks, str):
        frameworks = [frameworks]
    if "frameworks" in kwargs:
        kwargs["frameworks"] = tuple(str(spec) for spec in frameworks)
    for key in ("gpu", "compute_capability", "os", "driver", "kernel_modules", "cuda", "driver_source", "driver_line"):
        if key in kwargs:
            kwargs[key] = str(kwargs[key])
    try:
        return resolve(**kwargs).to_dict()
    except ResolutionError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def dlstack_gpu_from_smi(text: Any) -> str | None:
    """A known GPU model name for an nvidia-smi name or an lspci description, or None."""
    if not _present(text):
        return None
    return gpu_from_smi(str(text))


class FilterModule:
    """dlstack resolver filters."""

    def filters(self) -> dict[str, Any]:
        return {"dlstack_resolve": dlstack_resolve, "dlstack_gpu_from_smi": dlstack_gpu_from_smi}
