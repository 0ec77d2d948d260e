"""Bad input fails in the preflight play, with a message naming it, before any change.

The hosts are throwaway systemd containers from the local Ubuntu images; the "20.04" host is a
22.04 userland whose /etc/os-release says 20.04, which is all that Ansible's facts read.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from throwaway import throwaway_host

from dlstack.recap import recap_counts

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
    "/etc/apt/apt.conf.d/80dlstack-retries",
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


def test_unsupported_release_stops_in_preflight(focal_host, tmp_path):
    proc = site(tmp_path)
    assert proc.returncode != 0
    assert "host runs Ubuntu 20.04; dlstack supports Ubuntu 22.04, 24.04, 26.04" in proc.stdout
    assert recap_counts(proc.stdout, focal_host)["changed"] == 0
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


def test_a_package_cache_port_apt_cacher_ng_cannot_use_stops_in_preflight(noble_host, tmp_path):
    # apt-cacher-ng 3.7 fails at start above 32767; the cache playbook's preflight names the setting
    proc = subprocess.run(
        ["ansible-playbook", "playbooks/cache.yml", "-i", str(tmp_path / "hosts.yml"),
         "-e", "dlstack_target_hosts=all", "-e", "package_cache_apt_port=43142"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0
    expected = "package_cache_apt_port = '43142' is not valid: expected a port from 1 to 32767"
    assert expected in " ".join(proc.stdout.split()), proc.stdout[-3000:]
    assert recap_counts(proc.stdout, noble_host)["changed"] == 0
    assert_untouched(noble_host)


def test_driver_from_the_run_installer_stops_in_preflight(noble_host, tmp_path):
    # NVIDIA's .run installer leaves /usr/bin/nvidia-uninstall (a link to nvidia-installer); only the
    # path is read, so an executable stand-in at that path is all the check can see either way.
    make = "printf '#!/bin/sh\\n' > /usr/bin/nvidia-uninstall && chmod 755 /usr/bin/nvidia-uninstall"
    subprocess.run(["docker", "exec", noble_host, "sh", "-c", make], check=True)
    proc = site(tmp_path)
    assert proc.returncode != 0
    assert "installed with NVIDIA's .run installer" in proc.stdout
    assert "/usr/bin/nvidia-uninstall --silent" in proc.stdout
    assert recap_counts(proc.stdout, noble_host)["changed"] == 0
    assert_untouched(noble_host)


def test_misspelled_stack_variable_stops_in_preflight(noble_host, tmp_path):
    # The example: dlstack_driver instead of dlstack_driver_branch used to pass silently.
    proc = site(tmp_path, "-e", "dlstack_driver=580")
    assert proc.returncode != 0
    assert "variable dlstack_driver is not a dlstack stack variable; did you mean dlstack_driver_branch?" in proc.stdout
    assert recap_counts(proc.stdout, noble_host)["changed"] == 0
    assert_untouched(noble_host)


@pytest.mark.parametrize(
    ("environments", "message"),
    [
        (
            [{"name": "../etc"}],
            "python_env_environments[0].name = '../etc' is not valid: expected a directory name of 1-64 letters",
        ),
        (
            [{"name": "pytorch"}, {"name": "pytorch", "profile": "tensorflow"}],
            "python_env_environments: the name 'pytorch' is given by entries 0 and 1: expected each environment "
            "to have a name of its own",
        ),
    ],
    ids=["unsafe-name", "same-name-twice"],
)
def test_bad_environment_names_stop_in_preflight(noble_host, tmp_path, environments, message):
    proc = site(tmp_path, "-e", json.dumps({"python_env_environments": environments}))
    assert proc.returncode != 0
    assert message in proc.stdout
    assert recap_counts(proc.stdout, noble_host)["changed"] == 0
    assert_untouched(noble_host)


# What `lspci -nn -d 10de:` prints on a laptop with a GeForce GTX 1050 Ti Mobile (a Pascal GPU that
# gpus.yml does not list, known by the driver packages' Modaliases only: driver branches up to 580),
# and with an NVIDIA device no data knows. The container sees the CI machine's
# PCI bus, which has no NVIDIA device, so a stand-in lspci placed first on the PATH prints these;
# what only real hardware proves is that the card answers as recorded.
GTX_1050_TI_MOBILE = (
    "01:00.0 3D controller [0302]: NVIDIA Corporation GP107M [GeForce GTX 1050 Ti Mobile] [10de:1c8c] (rev a1)"
)
UNKNOWN = "01:00.0 3D controller [0302]: NVIDIA Corporation Device [10de:ffff] (rev a1)"


def fake_lspci(name: str, line: str) -> None:
    script = f"#!/bin/sh\n# stand-in for the test: the NVIDIA device of another machine\necho '{line}'\n"
    install = "cat > /usr/local/bin/lspci && chmod 755 /usr/local/bin/lspci"
    subprocess.run(["docker", "exec", "-i", name, "sh", "-c", install], input=script, text=True, check=True)


def test_a_device_the_pinned_branch_does_not_support_stops_in_preflight(noble_host, tmp_path):
    fake_lspci(noble_host, GTX_1050_TI_MOBILE)
    proc = site(tmp_path, "-e", "dlstack_driver_branch=595")
    assert proc.returncode != 0
    assert "does not support PCI device 10de:1c8c" in proc.stdout
    assert "580" in proc.stdout.split("does not support PCI device 10de:1c8c", 1)[1][:600]
    assert recap_counts(proc.stdout, noble_host)["changed"] == 0
    assert_untouched(noble_host)


def test_an_unknown_device_without_an_override_stops_in_preflight(noble_host, tmp_path):
    fake_lspci(noble_host, UNKNOWN)
    proc = site(tmp_path)
    assert proc.returncode != 0
    assert "10de:ffff" in proc.stdout
    assert "dlstack_gpu" in proc.stdout and "dlstack_compute_capability" in proc.stdout
    assert recap_counts(proc.stdout, noble_host)["changed"] == 0
    assert_untouched(noble_host)


def preflight(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ansible-playbook", "playbooks/preflight.yml", "-i", str(inventory), *extra],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip


def test_one_bad_host_fails_alone_and_is_named_at_the_end(tmp_path):
    """Two hosts, one with a bad setting: preflight finishes for the other, and the summary names the bad one."""
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    with (
        throwaway_host("dlstack-preflight", "dlstack/ubuntu-systemd:24.04", good_dir) as good,
        throwaway_host("dlstack-preflight", "dlstack/ubuntu-systemd:24.04", bad_dir) as bad,
    ):
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(
            "all:\n  children:\n    dlstack_workstations:\n      hosts:\n"
            f"        {good}:\n          ansible_connection: community.docker.docker\n"
            f"        {bad}:\n          ansible_connection: community.docker.docker\n"
            "          dlstack_driver: '580'\n",
            encoding="utf-8",
        )
        proc, strict = (preflight(inventory, *extra) for extra in ([], ["-e", "dlstack_all_or_nothing=true"]))
    # all-or-nothing: the good host stops too, before any change
    assert recap_counts(strict.stdout, good)["failed"] == 1
    assert "no host is changed" in strict.stdout
    assert proc.returncode != 0
    assert recap_counts(proc.stdout, good)["failed"] == 0
    assert "Resolve the driver, CUDA and framework stack" in proc.stdout
    summary = proc.stdout.split("DLSTACK SUMMARY", 1)[1]
    assert f"{bad}: failed in 'Check the stack variables" in summary
    assert good not in summary
