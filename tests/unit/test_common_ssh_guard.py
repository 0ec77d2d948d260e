"""The common role refuses SSH settings that would lock Ansible out, before it touches the host.

The checks are asserts that run on the control machine, so a play against an unreachable SSH host shows
them: with a password login and password logins to be turned off, or with sshd to be moved off the port
Ansible uses, the run stops at the check (no connection is ever made; the host does not exist)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample alice@laptop"
PLAY = """
- hosts: lab01
  gather_facts: false
  roles: [common]
"""


def run(tmp_path: Path, host_vars: dict) -> subprocess.CompletedProcess[str]:
    (tmp_path / "play.yml").write_text(PLAY, encoding="utf-8")
    variables = {"ansible_host": "192.0.2.1", "common_ssh_users": [{"name": "alice", "keys": [KEY]}], **host_vars}
    (tmp_path / "hosts.json").write_text(json.dumps({"all": {"hosts": {"lab01": variables}}}), encoding="utf-8")
    playbook = str(Path(sys.executable).parent / "ansible-playbook")
    return subprocess.run(
        [playbook, "-i", str(tmp_path / "hosts.json"), str(tmp_path / "play.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "ANSIBLE_FORCE_COLOR": "0", "HOME": str(tmp_path)},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("host_vars", "says"),
    [
        ({"ansible_password": "secret"}, "Ansible reaches this host over SSH with a password"),
        ({"common_ssh_port": 2222}, "would move sshd to port 2222"),
    ],
)
def test_settings_that_would_lock_ansible_out_are_refused(tmp_path: Path, host_vars: dict, says: str) -> None:
    result = run(tmp_path, host_vars)
    flat = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert says in flat, flat[-3000:]
    assert "Refuse SSH settings that would lock Ansible out" in flat
    assert "UNREACHABLE" not in result.stdout  # stopped before any connection


def test_key_logins_over_ssh_pass_the_check(tmp_path: Path) -> None:
    # no password, same port: the check passes and the run goes on to the host (which does not exist)
    result = run(tmp_path, {"ansible_ssh_common_args": "-o ConnectTimeout=2"})
    assert "Refuse SSH settings that would lock Ansible out" in result.stdout
    assert "UNREACHABLE" in result.stdout


def test_a_bad_key_names_the_entry(tmp_path: Path) -> None:
    result = run(tmp_path, {"common_ssh_users": [{"name": "alice", "keys": ["not a key"]}]})
    flat = " ".join(result.stdout.split())
    assert "common_ssh_users[0]" in flat and "is not valid" in flat, flat[-2000:]
