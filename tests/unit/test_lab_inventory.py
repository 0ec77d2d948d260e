"""The example lab inventory is one a user can copy as it is: it parses, and every host's variables pass
the preflight's checks (names, types, structured settings) and resolve to a stack; the desktops get the
desktop driver line. What only a real lab proves: the SSH access, sudo and the hardware it describes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlstack import inventory_checks, python_env
from dlstack.resolver import resolve

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "inventories" / "lab"
ROLES = ROOT / "roles"
HOSTS = ("gpu-ws-01", "gpu-srv-01", "gpu-srv-02")


def host_vars(host: str) -> dict:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(LAB), "--host", host],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def lab() -> dict[str, dict]:
    return {host: host_vars(host) for host in HOSTS}


@pytest.mark.parametrize("host", HOSTS)
def test_every_host_passes_the_preflight_checks(lab: dict[str, dict], host: str) -> None:
    variables = {key: value for key, value in lab[host].items() if not key.startswith("ansible_")}
    assert inventory_checks.unknown_variables(variables, inventory_checks.role_options(ROLES)) == []
    assert inventory_checks.type_problems(variables, inventory_checks.role_specs(ROLES)) == []
    defaults = inventory_checks.role_defaults(ROLES)
    assert inventory_checks.setting_problems(variables, defaults) == []


@pytest.mark.parametrize("host", HOSTS)
def test_every_host_resolves_and_plans_its_environments(lab: dict[str, dict], host: str) -> None:
    variables = lab[host]
    line = "server" if variables.get("nvidia_driver_server_line", True) else "desktop"
    stack = resolve(os="24.04", frameworks=variables["dlstack_frameworks"], driver_line=line).to_dict()
    profiles = inventory_checks.role_defaults(ROLES)["python_env"]["python_env_profiles"]
    plans = python_env.plan_environments(variables["python_env_environments"], stack, profiles, {"host_python": "3.12"})
    assert [plan["name"] for plan in plans] == ["pytorch", "tensorflow", "hf"]
    assert any(req.startswith("torchvision==") for req in plans[0]["requirements"])


def test_desktops_get_the_desktop_driver_and_servers_the_server_line(lab: dict[str, dict]) -> None:
    assert lab["gpu-ws-01"]["nvidia_driver_server_line"] is False
    assert "nvidia_driver_server_line" not in lab["gpu-srv-01"]  # the role's default: the -server line


def test_the_mok_password_comes_from_vault(lab: dict[str, dict]) -> None:
    assert "vault_nvidia_driver_mok_password" in lab["gpu-srv-01"]["nvidia_driver_mok_password"]
