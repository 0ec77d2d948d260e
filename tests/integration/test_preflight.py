"""Bad input fails in the preflight play, with a message naming it, before any change.

The hosts are throwaway systemd containers from the local Ubuntu images; the "20.04" host is a
22.04 userland whose /etc/os-release says 20.04, which is all that Ansible's facts read.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from throwaway import throwaway_host

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

FOCAL_OS_RELEASE = """PRETTY_NAME="Ubuntu 20.04.6 LTS"
NAME="Ubuntu"
VERSION_ID="20.04"
VERSION="20.04.6 LTS (Focal Fossa)"
VERSION_CODENAME=focal
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=focal
"""
# Files a converge would create; none may exist after a failed preflight.
WRITTEN_BY_ROLES = [
    "/etc/apt/apt.conf.d/51dlstack-unattended-upgrades",
    "/etc/ansible/facts.d",
    "/etc/profile.d/dlstack-data.sh",
    "/data",
]


@pytest.fixture
def focal_host(tmp_path: Path) -> Iterator[str]:
    os_release = tmp_path / "os-release"
    os_release.write_text(FOCAL_OS_RELEASE, encoding="utf-8")
    volumes = (f"{os_release}:/usr/lib/os-release:ro",)
    with throwaway_host("dlstack-preflight", "dlstack/ubuntu-systemd:22.04", tmp_path, volumes) as name:
        yield name


@pytest.fixture
def noble_host(tmp_path: Path) -> Iterator[str]:
    with throwaway_host("dlstack-preflight", "dlstack/ubuntu-systemd:24.04", tmp_path) as name:
        yield name


def site(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ansible-playbook", "site.yml", "-i", str(tmp_path / "hosts.yml"), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def assert_untouched(name: str) -> None:
    for path in WRITTEN_BY_ROLES:
        probe = subprocess.run(["docker", "exec", name, "test", "-e", path], check=False)
        assert probe.returncode == 1, f"{path} exists: preflight let a role run"


def recap(output: str, host: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(host) and "ok=" in line)


def test_unsupported_release_stops_in_preflight(focal_host, tmp_path):
    proc = site(tmp_path)
    assert proc.returncode != 0
    assert "host runs Ubuntu 20.04; dlstack supports Ubuntu 22.04, 24.04, 26.04" in proc.stdout
    assert "changed=0" in recap(proc.stdout, focal_host)
    assert_untouched(focal_host)


def test_misspelled_variable_stops_in_preflight(noble_host, tmp_path):
    proc = site(tmp_path, "-e", "common_timezon=Europe/Berlin")
    assert proc.returncode != 0
    assert "variable common_timezon is not a setting of role common; did you mean common_timezone?" in proc.stdout
    assert_untouched(noble_host)


def test_mistyped_variable_stops_in_preflight(noble_host, tmp_path):
    proc = site(tmp_path, "-e", '{"common_data_users": {"alice": true}}')
    assert proc.returncode != 0
    assert "common_data_users = {'alice': True} is not valid: expected a list of str" in proc.stdout
    assert_untouched(noble_host)
