"""roles/container_runtime/tasks/verify.yml run by ansible-playbook on localhost.

There is no GPU and no runnable Docker here: `nvidia-smi` and `docker` are small fakes on PATH that
print what the real commands print (`nvidia-smi -L` lines), so the task file's counting, results
JSON and assertion are what is tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SMI_LINE = "GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)"

PLAYBOOK = """
- name: Verify GPU containers
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the container runtime verification
      ansible.builtin.include_role:
        name: container_runtime
        tasks_from: verify
"""


def fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(0o755)


def gpu_lines(count: int) -> str:
    return "\n".join(SMI_LINE.format(i=i) for i in range(count))


def run_verify(tmp_path: Path, host_gpus: int, gpus_all: int, cdi: int) -> tuple[int, dict]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake(bin_dir, "nvidia-smi", f"cat <<'EOF'\n{gpu_lines(host_gpus)}\nEOF\n")
    # --gpus all -> gpus_all GPUs; --device nvidia.com/gpu=all -> cdi GPUs; rc 0 either way.
    fake(
        bin_dir,
        "docker",
        'case "$*" in\n'
        f"  *--gpus*) cat <<'EOF'\n{gpu_lines(gpus_all)}\nEOF\n  ;;\n"
        f"  *nvidia.com/gpu=all*) cat <<'EOF'\n{gpu_lines(cdi)}\nEOF\n  ;;\n"
        "  *) exit 2 ;;\nesac\n",
    )
    (tmp_path / "play.yml").write_text(PLAYBOOK, encoding="utf-8")
    results = tmp_path / "verify" / "container_runtime.json"
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "localhost,",
        "-e",
        json.dumps({"container_runtime_verify_results": str(results), "ansible_python_interpreter": sys.executable}),
        str(tmp_path / "play.yml"),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert results.exists(), proc.stdout + proc.stderr
    return proc.returncode, json.loads(results.read_text(encoding="utf-8"))


@pytest.mark.skipif(os.geteuid() != 0, reason="the task file writes root-owned files")
def test_every_gpu_visible_passes(tmp_path):
    rc, report = run_verify(tmp_path, host_gpus=2, gpus_all=2, cdi=2)
    assert rc == 0
    assert report["status"] == "pass"
    assert report["host_gpus"] == 2
    assert {c["name"]: (c["gpus"], c["status"]) for c in report["checks"]} == {
        "gpus_all": (2, "pass"),
        "cdi_all": (2, "pass"),
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="the task file writes root-owned files")
def test_missing_gpu_in_cdi_container_fails_and_is_reported(tmp_path):
    rc, report = run_verify(tmp_path, host_gpus=2, gpus_all=2, cdi=1)
    assert rc != 0
    assert report["status"] == "fail"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["cdi_all"]["status"] == "fail"
    assert checks["cdi_all"]["gpus"] == 1
    assert checks["gpus_all"]["status"] == "pass"
