"""Ansible filters over the dlstack package: host fact decisions and preflight checks.

Thin adapter: the logic lives in ``dlstack.hostfacts`` and ``dlstack.inventory_checks``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import dlstack  # noqa: F401 - probe whether the package is importable
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dlstack import hostfacts, inventory_checks
from dlstack.data import load, ubuntu_releases

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"


def dlstack_data_dir(setting: str, mounts: list[dict[str, Any]], devices: dict[str, Any]) -> str:
    return hostfacts.data_dir(setting, mounts, devices)


def dlstack_data(name: str) -> dict[str, Any]:
    """The content of ``dlstack/data/<name>.yml`` (the one source of version facts)."""
    return load(name)


def dlstack_ubuntu_releases(_: Any = None) -> dict[str, dict[str, Any]]:
    return ubuntu_releases()


def dlstack_release_problems(distribution: str, version: str) -> list[str]:
    return inventory_checks.check_release(distribution, version)


def dlstack_unknown_vars(variables: list[str]) -> list[str]:
    return inventory_checks.unknown_variables(variables, inventory_checks.role_options(ROLES_DIR))


def dlstack_type_problems(variables: Any) -> list[str]:
    return inventory_checks.type_problems(variables, inventory_checks.role_specs(ROLES_DIR))


def dlstack_stack_problems(variables: Any) -> list[str]:
    """``hostvars[inventory_hostname] | dlstack_stack_problems``: unknown ``dlstack_*`` names, bad values."""
    return inventory_checks.stack_problems(variables)


def dlstack_setting_problems(variables: Any) -> list[str]:
    """``hostvars[inventory_hostname] | dlstack_setting_problems``: structured role settings that do not fit."""
    return inventory_checks.setting_problems(variables, inventory_checks.role_defaults(ROLES_DIR))


class FilterModule:
    """dlstack core filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "dlstack_data": dlstack_data,
            "dlstack_data_dir": dlstack_data_dir,
            "dlstack_ubuntu_releases": dlstack_ubuntu_releases,
            "dlstack_release_problems": dlstack_release_problems,
            "dlstack_unknown_vars": dlstack_unknown_vars,
            "dlstack_type_problems": dlstack_type_problems,
            "dlstack_stack_problems": dlstack_stack_problems,
            "dlstack_setting_problems": dlstack_setting_problems,
        }
