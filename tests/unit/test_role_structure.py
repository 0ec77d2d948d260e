"""Every role follows the conventions: prefixed defaults, argument specs in sync, README, scenario."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())
SCENARIOS = {p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml")}
# Roles whose Molecule coverage lives in another role's scenario (role -> scenario).
COVERED_BY = {"cloud_vm": "tests/emulator (moto EC2 emulator)"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def spec_options(role: str) -> dict:
    specs = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    options: dict = {}
    for entry in specs.values():
        options.update(entry.get("options") or {})
    return options


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_prefixed(role):
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    assert defaults, f"{role}: defaults/main.yml is missing or empty"
    bad = [name for name in defaults if not name.startswith(f"{role}_")]
    assert not bad, f"{role}: defaults without the '{role}_' prefix: {bad}"


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    options = spec_options(role)
    missing = sorted(set(defaults) - set(options))
    assert not missing, f"{role}: defaults not documented in meta/argument_specs.yml: {missing}"
    undefaulted = sorted(n for n, o in options.items() if n not in defaults and not o.get("required"))
    assert not undefaulted, f"{role}: options neither in defaults nor required: {undefaulted}"


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_document_the_real_defaults(role):
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    for name, option in spec_options(role).items():
        if "default" not in option or name not in defaults:
            continue
        value = defaults[name]
        if isinstance(value, str) and "{{" in value:
            continue  # a templated default is documented in words
        assert option["default"] == value, f"{role}: {name} default {option['default']!r} != defaults {value!r}"


@pytest.mark.parametrize("role", ROLES)
def test_role_has_readme_and_meta(role):
    assert (ROOT / "roles" / role / "README.md").is_file()
    assert (ROOT / "roles" / role / "meta" / "main.yml").is_file()


@pytest.mark.parametrize("role", ROLES)
def test_role_has_a_molecule_scenario(role):
    assert role in SCENARIOS or role in COVERED_BY, f"{role}: no molecule/{role} scenario"
