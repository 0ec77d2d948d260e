"""Preflight checks on inventory variables and the host's release."""

from pathlib import Path

import pytest

from dlstack import inventory_checks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def roles(tmp_path):
    spec = tmp_path / "common" / "meta"
    spec.mkdir(parents=True)
    (spec / "argument_specs.yml").write_text(
        """
argument_specs:
  main:
    options:
      common_timezone: {type: str, default: Etc/UTC}
      common_packages: {type: list, elements: str, default: [curl]}
      common_mode: {type: str, choices: [fast, safe], default: "{{ something }}"}
      common_limits: {type: dict, options: {cores: {type: int}}}
""",
        encoding="utf-8",
    )
    return tmp_path


def test_misspelled_variable_gets_a_suggestion(roles):
    messages = inventory_checks.unknown_variables(
        ["common_timezon", "common_timezone", "unrelated"], inventory_checks.role_options(roles)
    )
    assert messages == ["variable common_timezon is not a setting of role common; did you mean common_timezone?"]


def test_unrelated_names_are_ignored(roles):
    assert inventory_checks.unknown_variables(["ansible_host", "my_var"], inventory_checks.role_options(roles)) == []


def test_wrong_type_names_variable_value_and_expected(roles):
    specs = inventory_checks.role_specs(roles)
    messages = inventory_checks.type_problems({"common_packages": {"a": 1}}, specs)
    assert len(messages) == 1
    assert messages[0].startswith("common_packages = {'a': 1} is not valid: expected a list of str")


def test_choices_are_listed(roles):
    messages = inventory_checks.type_problems({"common_mode": "turbo"}, inventory_checks.role_specs(roles))
    assert "among fast, safe" in messages[0]


def test_documented_defaults_are_not_validated(roles):
    # common_mode's documented default is a Jinja string outside its choices: it must not be checked.
    assert inventory_checks.type_problems({}, inventory_checks.role_specs(roles)) == []


def test_valid_values_pass(roles):
    values = {"common_timezone": "Europe/Berlin", "common_packages": ["git"], "common_limits": {"cores": 4}}
    assert inventory_checks.type_problems(values, inventory_checks.role_specs(roles)) == []


def test_nested_option_types_are_checked(roles):
    messages = inventory_checks.type_problems({"common_limits": {"cores": "many"}}, inventory_checks.role_specs(roles))
    assert messages and "common_limits" in messages[0]


@pytest.mark.parametrize("version", ["20.04", "18.04", "25.10"])
def test_unsupported_ubuntu_release(version):
    (message,) = inventory_checks.check_release("Ubuntu", version)
    assert f"Ubuntu {version}" in message
    assert "22.04, 24.04, 26.04" in message


def test_other_distribution_is_rejected():
    assert "Debian 12" in inventory_checks.check_release("Debian", "12")[0]


@pytest.mark.parametrize("version", ["22.04", "24.04", "26.04"])
def test_supported_releases_pass(version):
    assert inventory_checks.check_release("Ubuntu", version) == []


def test_every_real_role_spec_loads():
    specs = inventory_checks.role_specs(ROOT / "roles")
    assert "common" in specs
    for role, options in specs.items():
        assert options, f"role {role} declares no options"
        for name in options:
            assert name.startswith(f"{role}_"), f"{role}: option {name} lacks the role prefix"


def test_named_contributions_to_a_setting_are_accepted(roles):
    options = inventory_checks.role_options(roles)
    assert inventory_checks.unknown_variables(["common_packages__lab", "common_packagez__lab"], options) == [
        "variable common_packagez__lab is not a setting of role common; did you mean common_packages?"
    ]


def test_values_are_checked_as_plain_data() -> None:
    """The validator deep-copies each value; lazy containers (ansible-core 2.19) are made plain first."""
    from collections import UserDict

    from dlstack.inventory_checks import _plain

    class Lazy(UserDict):  # a Mapping that is not a dict, like ansible-core's lazy containers
        pass

    value = Lazy({"a": (1, Lazy({"b": [2]}))})
    plain = _plain(value)
    assert plain == {"a": [1, {"b": [2]}]}
    assert type(plain) is dict and type(plain["a"]) is list and type(plain["a"][1]) is dict
