"""The python_env filter plugin: a thin adapter that turns plan errors into Ansible filter errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from file_module import load_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "dlstack_python_env.py"


@pytest.fixture(scope="module")
def filters():
    module = load_file("dlstack_python_env_filter", PLUGIN)
    return module.FilterModule().filters()


def test_filters_are_exported(filters):
    assert set(filters) == {
        "dlstack_python_env_plan",
        "dlstack_python_env_fact",
        "dlstack_miniforge_installer",
        "dlstack_uv_requirement",
    }


def test_plan_error_becomes_a_filter_error(filters):
    with pytest.raises(AnsibleFilterError, match=r"python_env_environments\[0\]\.backend = 'pip'"):
        filters["dlstack_python_env_plan"]([{"name": "a", "backend": "pip"}], {}, {}, {"host_python": "3.12"})


def test_installer_error_becomes_a_filter_error(filters):
    with pytest.raises(AnsibleFilterError, match="python_env_miniforge_version = 'nope'"):
        filters["dlstack_miniforge_installer"]("nope", "x86_64")


def test_fact_of_a_plan(filters):
    plans = filters["dlstack_python_env_plan"]([{"name": "plain"}], {}, {}, {"host_python": "3.12"})
    fact = filters["dlstack_python_env_fact"](plans)
    assert fact == {
        "environments": [
            {
                "name": "plain",
                "python": "/opt/dlstack/envs/plain/bin/python",
                "backend": "venv",
                "frameworks": [],
                "versions": {},
                "framework_cuda": {},
                "kernel": "dlstack-plain",
                "lock": "/opt/dlstack/envs/plain/dlstack-lock.txt",
                "skipped_companions": {},
            }
        ]
    }
