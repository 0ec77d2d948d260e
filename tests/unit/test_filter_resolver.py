"""The Ansible filter adapter over the resolver, and the preflight task file that uses it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from ansible.errors import AnsibleFilterError
from file_module import load_file

ROOT = Path(__file__).resolve().parents[2]


def _plugin() -> ModuleType:
    module = load_file("dlstack_resolver_filter", ROOT / "plugins/filter/dlstack_resolver.py")
    return module


PLUGIN = _plugin()


def test_filters_are_exposed() -> None:
    expected = {"dlstack_resolve", "dlstack_gpu_from_smi", "dlstack_pci_problems", "dlstack_pci_gpus"}
    assert set(PLUGIN.FilterModule().filters()) == expected


def test_resolve_ignores_null_and_empty_values() -> None:
    stack = PLUGIN.dlstack_resolve(
        {
            "gpu": "Tesla P100-PCIE-16GB",
            "os": "24.04",
            "driver": None,
            "kernel_modules": "",
            "cuda": None,
            "frameworks": ["torch==2.9.*"],
            "compute_capability": None,
        }
    )
    assert stack["frameworks"]["torch"]["variant"] == "cu126"
    assert stack["os"] == "24.04"


def test_resolve_accepts_a_driver_number_and_a_single_spec() -> None:
    stack = PLUGIN.dlstack_resolve({"driver": 580, "frameworks": "tensorflow==2.17.0", "os": "22.04"})
    assert stack["driver"]["branch"] == "580"
    assert stack["cuda"] == "12.3"


def test_resolve_errors_carry_the_resolver_message() -> None:
    with pytest.raises(AnsibleFilterError, match=r"open kernel modules need compute capability 7\.5"):
        PLUGIN.dlstack_resolve({"gpu": "Tesla V100-SXM2-16GB", "kernel_modules": "open"})


def test_resolve_rejects_unknown_keys_and_non_dicts() -> None:
    with pytest.raises(AnsibleFilterError, match=r"unknown keys \['gpus'\]"):
        PLUGIN.dlstack_resolve({"gpus": "T4"})
    with pytest.raises(AnsibleFilterError, match="expected a dict"):
        PLUGIN.dlstack_resolve(["T4"])


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("Tesla V100-SXM2-16GB", "Tesla V100 SXM2"),
        ("65:00.0 3D controller [0302]: NVIDIA Corporation AD104GL [L4] [10de:27b8] (rev a1)", "L4"),
        ("Some Other GPU", None),
        ("", None),
        (None, None),
    ],
)
def test_gpu_from_smi(text: str | None, name: str | None) -> None:
    assert PLUGIN.dlstack_gpu_from_smi(text) == name


PLAY = """
- name: Resolve
  hosts: localhost
  connection: local
  gather_facts: true
  tasks:
    - name: Include the preflight resolve tasks
      ansible.builtin.include_tasks: {tasks}
    - name: Print the stack
      ansible.builtin.debug:
        var: dlstack_stack
"""


def _play(tmp_path: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY.format(tasks=ROOT / "playbooks/tasks/preflight_resolve.yml"))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "json"}
    return subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={ROOT / '.venv/bin/python'}",
            "-e",
            json.dumps(extra),
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_preflight_tasks_set_the_stack_and_fail_with_the_reasons(tmp_path: Path) -> None:
    ok = _play(tmp_path, {"dlstack_gpu": "Tesla P100-PCIE-16GB", "dlstack_frameworks": ["torch==2.9.*"]})
    assert ok.returncode == 0, ok.stdout[-3000:]
    tasks = json.loads(ok.stdout)["plays"][0]["tasks"]
    stack = tasks[-1]["hosts"]["localhost"]["dlstack_stack"]
    assert stack["frameworks"]["torch"]["variant"] == "cu126"
    assert int(stack["driver"]["branch"]) <= 580

    bad = _play(tmp_path, {"dlstack_gpu": "Tesla V100-SXM2-16GB", "dlstack_kernel_modules": "open"})
    assert bad.returncode == 2
    result = json.loads(bad.stdout)["plays"][0]["tasks"][-1]["hosts"]["localhost"]
    assert result["failed"]
    assert "dlstack_kernel_modules=open" in result["msg"]
    assert "open kernel modules need compute capability 7.5" in result["msg"]
