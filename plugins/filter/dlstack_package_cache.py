"""Ansible filters for the package_cache role. Thin adapter over ``dlstack.package_cache``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import dlstack  # noqa: F401 - probe whether the package is importable
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dlstack import inventory_checks, package_cache


def dlstack_proxpi_requirement(_: Any = None) -> str:
    return package_cache.proxpi_requirement()


def dlstack_package_cache_problems(settings: dict[str, Any]) -> list[str]:
    """The preflight's check of the package_cache settings (``settings``: the role's variables)."""
    return inventory_checks.package_cache_problems(settings, {})


class FilterModule:
    """dlstack package_cache filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "dlstack_proxpi_requirement": dlstack_proxpi_requirement,
            "dlstack_package_cache_problems": dlstack_package_cache_problems,
        }
