"""Inventory checks for the preflight play: unknown variable names get a 'did you mean'."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dlstack.data import ubuntu_releases


def role_options(roles_dir: Path) -> dict[str, set[str]]:
    """Map each role name to the option names its ``meta/argument_specs.yml`` declares."""
    options: dict[str, set[str]] = {}
    for spec_file in sorted(roles_dir.glob("*/meta/argument_specs.yml")):
        specs = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        names: set[str] = set()
        for entry in (specs.get("argument_specs") or {}).values():
            names.update((entry or {}).get("options") or {})
        options[spec_file.parent.parent.name] = names
    return options


def unknown_variables(variables: Iterable[str], options: Mapping[str, set[str]]) -> list[str]:
    """Messages for variables that carry a role's prefix but that no role declares."""
    known = set().union(*options.values()) if options else set()
    messages = []
    for name in sorted(set(variables)):
        role = next((r for r in options if name.startswith(f"{r}_")), None)
        if role is None or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(options[role]), n=3, cutoff=0.6)
        hint = (
            f"; did you mean {' or '.join(close)}?"
            if close
            else f"; role {role} accepts: {', '.join(sorted(options[role]))}"
        )
        messages.append(f"variable {name} is not a setting of role {role}{hint}")
    return messages


def check_release(distribution: str, version: str) -> list[str]:
    """Messages when the host is not a supported Ubuntu release."""
    supported = sorted(ubuntu_releases())
    if distribution != "Ubuntu" or version not in supported:
        return [
            f"host runs {distribution} {version}; dlstack supports Ubuntu {', '.join(supported)}. "
            "Upgrade the host or remove it from the inventory."
        ]
    return []


def as_names(hostvars: Mapping[str, Any]) -> list[str]:
    """The variable names of one host's hostvars (helper for the filter)."""
    return list(hostvars)
