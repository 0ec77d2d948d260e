"""Inventory checks for the preflight play: unknown variable names get a 'did you mean'."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dlstack.data import ubuntu_releases


def role_specs(roles_dir: Path) -> dict[str, dict[str, Any]]:
    """Map each role name to the options of all entry points in its ``meta/argument_specs.yml``."""
    specs: dict[str, dict[str, Any]] = {}
    for spec_file in sorted(roles_dir.glob("*/meta/argument_specs.yml")):
        data = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        options: dict[str, Any] = {}
        for entry in (data.get("argument_specs") or {}).values():
            options.update((entry or {}).get("options") or {})
        specs[spec_file.parent.parent.name] = options
    return specs


def role_options(roles_dir: Path) -> dict[str, set[str]]:
    """Map each role name to the option names its ``meta/argument_specs.yml`` declares."""
    return {role: set(options) for role, options in role_specs(roles_dir).items()}


def unknown_variables(variables: Iterable[str], options: Mapping[str, set[str]]) -> list[str]:
    """Messages for variables that carry a role's prefix but that no role declares."""
    known = set().union(*options.values()) if options else set()
    messages = []
    for name in sorted(set(variables)):
        role = next((r for r in options if name.startswith(f"{r}_")), None)
        if role is None or name in known or _is_contribution(name, options[role]):
            continue
        close = difflib.get_close_matches(name, sorted(options[role]), n=3, cutoff=0.8)
        hint = (
            f"; did you mean {' or '.join(close)}?"
            if close
            else f"; role {role} accepts: {', '.join(sorted(options[role]))}"
        )
        messages.append(f"variable {name} is not a setting of role {role}{hint}")
    return messages


def _is_contribution(name: str, role_options: set[str]) -> bool:
    """``<option>__<entry>``: a named entry contributed to a role's mergeable setting (DebOps style)."""
    base, sep, entry = name.partition("__")
    return bool(sep and entry) and base in role_options


def check_release(distribution: str, version: str) -> list[str]:
    """Messages when the host is not a supported Ubuntu release."""
    supported = sorted(ubuntu_releases())
    if distribution != "Ubuntu" or version not in supported:
        return [
            f"host runs {distribution} {version}; dlstack supports Ubuntu {', '.join(supported)}. "
            "Upgrade the host or remove it from the inventory."
        ]
    return []


# Keys of an argument_specs option that the validator understands; 'default' and 'required' are
# left out on purpose: a spec's default documents the role's default, and whether a setting is
# required is the role's business when it runs.
_VALIDATOR_KEYS = ("type", "elements", "choices", "options", "no_log", "aliases")


def _validator_option(option: Mapping[str, Any]) -> dict[str, Any]:
    spec = {key: option[key] for key in _VALIDATOR_KEYS if key in option}
    if "options" in spec:
        spec["options"] = {name: _validator_option(sub) for name, sub in spec["options"].items()}
    return spec


def _expected(option: Mapping[str, Any]) -> str:
    kind = option.get("type", "str")
    text = f"a {kind}" + (f" of {option['elements']}" if "elements" in option else "")
    if "choices" in option:
        text += f" among {', '.join(map(str, option['choices']))}"
    return text


def type_problems(variables: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Messages for inventory variables whose values do not fit the role's argument spec."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # controller-only import

    messages = []
    for options in specs.values():
        for name, option in options.items():
            if name not in variables:
                continue
            value = variables[name]
            result = ArgumentSpecValidator({name: _validator_option(option)}).validate({name: value})
            if result.error_messages:
                reason = "; ".join(result.error_messages)
                messages.append(f"{name} = {value!r} is not valid: expected {_expected(option)} ({reason})")
    return messages
