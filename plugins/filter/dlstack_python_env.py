"""Ansible filters for the python_env role. Thin adapter over ``dlstack.python_env``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import dlstack  # noqa: F401 - probe whether the package is importable
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ansible.errors import AnsibleFilterError

from dlstack import python_env


def _wrap(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except python_env.PlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def dlstack_python_env_plan(
    environments: list[dict[str, Any]], stack: dict[str, Any], profiles: dict[str, Any], settings: dict[str, Any]
) -> list[dict[str, Any]]:
    return _wrap(python_env.plan_environments, environments, stack, profiles, settings)


def dlstack_python_env_fact(plans: list[dict[str, Any]]) -> dict[str, Any]:
    return python_env.local_fact(plans)


def dlstack_miniforge_installer(version: str, arch: str, mirror: str = "") -> dict[str, str]:
    return _wrap(python_env.miniforge_installer, version, arch, mirror)


def dlstack_uv_requirement(arch: str) -> str:
    return _wrap(python_env.uv_requirement, arch)


class FilterModule:
    """dlstack python_env filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "dlstack_python_env_plan": dlstack_python_env_plan,
            "dlstack_python_env_fact": dlstack_python_env_fact,
            "dlstack_miniforge_installer": dlstack_miniforge_installer,
            "dlstack_uv_requirement": dlstack_uv_requirement,
        }
