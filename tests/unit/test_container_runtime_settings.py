"""roles/container_runtime/tasks/settings.yml: bad input is refused before anything changes.

Runs the task file alone with ansible-playbook on localhost (it only reads variables), and checks
that each message names the variable, the value given and what is accepted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PLAYBOOK = """
- name: Check the container runtime settings
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the settings check
      ansible.builtin.include_role:
        name: container_runtime
        tasks_from: settings
"""


def check(tmp_path: Path, settings: dict) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAYBOOK, encoding="utf-8")
    env = dict(
        os.environ,
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_NOCOLOR="1",
    )
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "localhost,",
        "-e",
        json.dumps({"ansible_python_interpreter": sys.executable, **settings}),
        str(tmp_path / "play.yml"),
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, check=False)


def test_defaults_pass(tmp_path):
    proc = check(tmp_path, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr


BAD = [
    ({"container_runtime_docker_source": "snap"}, "container_runtime_docker_source='snap' is not valid: use docker"),
    (
        {"container_runtime_nvidia_toolkit": "remove"},
        "container_runtime_nvidia_toolkit='remove' is not valid: use auto, true, false or absent",
    ),
    (
        {"container_runtime_live_restore": "sometimes"},
        "container_runtime_live_restore='sometimes' is not valid: use auto, true or false",
    ),
    ({"container_runtime_data_root": "docker-data"}, "container_runtime_data_root='docker-data' is not valid: use"),
    ({"container_runtime_log_max_size": "100 MB"}, "container_runtime_log_max_size='100 MB' is not valid: use auto"),
    ({"container_runtime_log_max_file": 0}, "container_runtime_log_max_file=0 is not valid: use auto or a number"),
    ({"container_runtime_docker_users": "alice"}, "container_runtime_docker_users='alice' is not valid: use a list"),
    (
        {"container_runtime_nvidia_toolkit": "absent", "container_runtime_nvidia_default_runtime": True},
        "set container_runtime_nvidia_default_runtime to false",
    ),
]


@pytest.mark.parametrize(("settings", "expected"), BAD)
def test_bad_setting_names_variable_value_and_what_is_accepted(tmp_path, settings, expected):
    proc = check(tmp_path, settings)
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout
