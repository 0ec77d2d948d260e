"""Preflight checks of storage_volumes and storage_backups: each message names the entry, the value
and what is accepted. The disks themselves are checked on the host (plugins/modules/dlstack_md_array.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dlstack import inventory_checks as ic

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = ic.role_defaults(ROOT / "roles")
A, B, C = "/dev/disk/by-id/nvme-A", "/dev/disk/by-id/nvme-B", "/dev/disk/by-id/nvme-C"
SCRATCH = {"name": "scratch", "level": 0, "devices": [A, B], "mount": "/scratch"}
PASSWORD = {"storage_backup_password": "test-only"}  # a test value, never a real secret
BACKUP = {"name": "checkpoints", "paths": ["/data/checkpoints"], "repository": "/backup/restic"}


def problems(**variables: Any) -> list[str]:
    return ic.setting_problems(variables, DEFAULTS)


def test_the_defaults_set_up_nothing_and_pass():
    assert DEFAULTS["storage"]["storage_volumes"] == []
    assert DEFAULTS["storage"]["storage_backups"] == []
    assert problems() == []


def test_a_volume_and_a_backup_as_documented_pass():
    assert problems(storage_volumes=[SCRATCH], storage_backups=[BACKUP], **PASSWORD) == []
    sftp = {**BACKUP, "repository": "sftp:backup@nas.lab:/srv/restic/ws1", "password": "own"}
    assert problems(storage_backups=[sftp]) == []


@pytest.mark.parametrize("mount", ["/", "/home", "/usr", "/var/lib", "/boot/efi", "relative", "/data/../etc"])
def test_system_or_unclean_mount_points_are_refused(mount):
    (message,) = problems(storage_volumes=[{**SCRATCH, "mount": mount}])
    assert message.startswith(f"storage_volumes[0].mount = {mount!r} is not valid: expected ")


@pytest.mark.parametrize("devices", [[A], [A, "sdb"], [], "nvme0n1"])
def test_fewer_than_two_disks_or_non_dev_paths_are_refused(devices):
    (message,) = problems(storage_volumes=[{**SCRATCH, "devices": devices}])
    assert message.startswith(f"storage_volumes[0].devices = {devices!r} is not valid: expected at least two")


@pytest.mark.parametrize("name", ["", "-x", "has space", "a/b", "x" * 33])
def test_array_names_that_are_not_simple_words_are_refused(name):
    (message,) = problems(storage_volumes=[{**SCRATCH, "name": name}])
    assert message.startswith(f"storage_volumes[0].name = {name!r} is not valid")


def test_a_disk_in_two_volumes_is_refused():
    other = {"name": "data", "level": 1, "devices": [B, C], "mount": "/data"}
    assert problems(storage_volumes=[SCRATCH, other]) == [
        f"storage_volumes: the disk {B} is listed by entries 0 and 1: a disk belongs to one volume"
    ]


def test_two_volumes_on_one_mount_point_or_name_are_refused():
    other = {"name": "scratch", "level": 1, "devices": [C, "/dev/sdz"], "mount": "/scratch/"}
    found = problems(storage_volumes=[SCRATCH, other])
    assert any("the name 'scratch' is given by entries 0 and 1" in m for m in found)
    assert any("the mount '/scratch' is given by entries 0 and 1" in m for m in found)


def test_a_backup_without_a_password_says_where_to_keep_one():
    (message,) = problems(storage_backups=[BACKUP])
    assert message.startswith("storage_backups[0] (checkpoints) has no password: set storage_backup_password")
    assert "Ansible Vault" in message


def test_a_repository_inside_what_it_backs_up_is_refused():
    inside = {**BACKUP, "repository": "/data/checkpoints/restic"}
    (message,) = problems(storage_backups=[inside], **PASSWORD)
    assert "is inside the backed-up path /data/checkpoints" in message


@pytest.mark.parametrize("repository", ["backup", "sftp:nas:/srv", "s3:bucket", "/"])
def test_repositories_that_are_neither_a_path_nor_sftp_are_refused(repository):
    (message,) = problems(storage_backups=[{**BACKUP, "repository": repository}], **PASSWORD)
    assert message.startswith(f"storage_backups[0].repository = {repository!r} is not valid")


def test_relative_paths_and_duplicate_names_are_refused():
    relative = {**BACKUP, "paths": ["notebooks"]}
    found = problems(storage_backups=[relative, BACKUP], **PASSWORD)
    assert found[0].startswith("storage_backups[0].paths = ['notebooks'] is not valid")
    assert found[-1].startswith("storage_backups: the name 'checkpoints' is given by entries 0 and 1")
