"""The cloud_vm role's Google Cloud path, rendered without a Google account.

There is no GCP emulator here: these tests render the role's VM requests (tasks/gcp/requests.yml)
and run the launch guard through playbooks/cloud.yml with provider gcp. The API calls themselves
are unproven (docs/cloud.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dlstack import cloud

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

RENDER = """
- name: Render the GCP requests
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Validate
      ansible.builtin.include_role:
        name: cloud_vm
        tasks_from: validate.yml
        public: true
    - name: Build
      ansible.builtin.include_role:
        name: cloud_vm
        tasks_from: gcp/requests.yml
    - name: Save
      ansible.builtin.copy:
        content: "{{ __cloud_vm_gcp_requests | to_json }}"
        dest: "{{ render_out }}"
        mode: "0644"
"""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_FILTER_PLUGINS": str(ROOT / "plugins" / "filter"),
        "ANSIBLE_NOCOLOR": "1",
    }


@pytest.fixture
def ssh_pub(tmp_path: Path) -> Path:
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey tester@example\n", encoding="utf-8")
    return key


def _render(tmp_path: Path, ssh_pub: Path, *extra: str) -> list[dict[str, Any]]:
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER, encoding="utf-8")
    out = tmp_path / "requests.json"
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        str(playbook),
        "-e",
        f"render_out={out}",
        "-e",
        "cloud_vm_provider=gcp",
        "-e",
        "cloud_vm_action=up",
        "-e",
        "cloud_vm_run=g1",
        "-e",
        "cloud_vm_owner=Alice",
        "-e",
        "cloud_vm_ssh_cidr=198.51.100.7/32",
        "-e",
        f"cloud_vm_ssh_public_key_file={ssh_pub}",
        *extra,
    ]
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return json.loads(out.read_text(encoding="utf-8"))


def test_n1_with_t4_renders_accelerators_labels_and_key(tmp_path: Path, ssh_pub: Path) -> None:
    requests = _render(
        tmp_path,
        ssh_pub,
        "-e",
        "cloud_vm_instance_type=n1-standard-8",
        "-e",
        "cloud_vm_gcp_accelerator_type=nvidia-tesla-t4",
        "-e",
        "cloud_vm_gcp_accelerator_count=2",
        "-e",
        "cloud_vm_count=2",
        "-e",
        "cloud_vm_root_volume_gb=150",
    )
    assert [r["name"] for r in requests] == ["dlstack-g1-vm-0", "dlstack-g1-vm-1"]
    first = requests[0]
    assert first["machine_type"] == "n1-standard-8"
    assert first["guest_accelerators"] == [
        {"accelerator_type": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "accelerator_count": 2}
    ]
    assert first["labels"] == {"dlstack-project": "dlstack", "dlstack-owner": "alice", "dlstack-run": "g1"}
    assert first["metadata"]["ssh-keys"] == "ubuntu:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey tester@example"
    assert first["metadata"]["user-data"].startswith("#cloud-config")
    assert first["disks"][0]["initialize_params"] == {
        "source_image": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64",
        "disk_size_gb": 150,
        "disk_type": "pd-balanced",
    }
    assert first["scheduling"] == {"on_host_maintenance": "TERMINATE", "automatic_restart": True, "preemptible": False}
    assert first["tags"] == {"items": ["dlstack-g1-vm"]}


def test_spot_a3_with_image_id(tmp_path: Path, ssh_pub: Path) -> None:
    image = "projects/my-project/global/images/my-image"
    requests = _render(
        tmp_path,
        ssh_pub,
        "-e",
        "cloud_vm_instance_type=a3-highgpu-8g",
        "-e",
        "cloud_vm_spot=true",
        "-e",
        f"cloud_vm_image_id={image}",
    )
    assert len(requests) == 1
    assert "guest_accelerators" not in requests[0]
    assert requests[0]["scheduling"]["preemptible"] is True
    assert requests[0]["disks"][0]["initialize_params"]["source_image"] == image


def test_gcp_guard_stops_before_any_api_call(tmp_path: Path, ssh_pub: Path) -> None:
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        str(ROOT / "playbooks" / "cloud.yml"),
        "-e",
        "cloud_vm_provider=gcp",
        "-e",
        "cloud_vm_gcp_project=nonexistent-project",
        "-e",
        "cloud_vm_action=up",
        "-e",
        "cloud_vm_run=g2",
        "-e",
        "cloud_vm_ssh_cidr=198.51.100.7/32",
        "-e",
        f"cloud_vm_ssh_public_key_file={ssh_pub}",
        "-e",
        "cloud_vm_instance_type=a3-highgpu-8g",
        "-e",
        "cloud_vm_count=3",
    ]
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "3 x a3-highgpu-8g = 24 x H100 SXM, more than cloud_vm_max_gpus (8)" in result.stdout
    assert "Create the run's firewall rule" not in result.stdout  # no GCP API task ran


def test_an_arm_host_is_refused_by_name_with_an_amd64_alternative() -> None:
    # A4X: GB200 Superchips on NVIDIA Grace (arm64); dlstack sets up amd64 hosts only
    with pytest.raises(ValueError, match=r"'a4x-highgpu-4g' has an arm64 host.*a4-highgpu-8g \(8 x B200\)"):
        cloud.guard("gcp", "a4x-highgpu-4g", 1)


@pytest.mark.parametrize(
    ("provider", "instance_type", "gpu", "gpus"),
    [
        ("gcp", "a4-highgpu-8g", "B200", 8),
        ("gcp", "g4-standard-384", "RTX PRO 6000 Blackwell", 8),
        ("aws", "p6-b300.48xlarge", "B300", 8),
        ("aws", "g7e.12xlarge", "RTX PRO 6000 Blackwell", 2),
    ],
)
def test_late_2026_instance_types_are_catalogued(provider: str, instance_type: str, gpu: str, gpus: int) -> None:
    spec = cloud.lookup(provider, instance_type)
    assert spec is not None and (spec.gpu, spec.gpus, spec.host_arch) == (gpu, gpus, "amd64")
