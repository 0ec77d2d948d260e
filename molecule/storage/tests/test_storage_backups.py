"""Scheduled restic backups on a converged host: units, settings kept secret, a backup and a restore.

What only the VM tier proves (tests/vm/test_storage_vm.py): the RAID volumes, which need a kernel
with md, and the role's refusal of a repository whose password changed.
"""

from __future__ import annotations

import pytest

NAME = "notebooks"
SETTINGS = f"/etc/dlstack/backup/{NAME}"
FILES = ["/srv/lab/notebooks/train.ipynb", "/srv/lab/checkpoints/epoch-3.pt"]


def test_restic_comes_from_the_archive(host):
    assert host.package("restic").is_installed


@pytest.mark.parametrize("suffix", ["env", "paths", "exclude", "password"])
def test_settings_are_readable_by_root_only(host, suffix):
    with host.sudo():
        settings = host.file(f"{SETTINGS}.{suffix}")
        assert settings.is_file
        assert settings.user == "root"
        assert settings.mode == 0o600
    assert host.file("/etc/dlstack/backup").mode == 0o700


def test_password_is_the_one_set(host):
    with host.sudo():
        assert host.file(f"{SETTINGS}.password").content_string == "molecule-only-password"


def test_timer_is_enabled_on_the_schedule(host):
    timer = f"dlstack-backup-{NAME}.timer"
    assert host.service(timer).is_enabled
    assert host.run(f"systemctl is-active {timer}").stdout.strip() == "active"
    calendar = host.run(f"systemctl show -p TimersCalendar --value {timer}").stdout
    assert "*-*-* 03:30:00" in calendar


def _sums(host, paths: list[str]) -> dict[str, str]:
    out = host.check_output("sha256sum " + " ".join(paths))
    return {line.split()[1]: line.split()[0] for line in out.splitlines()}


def test_a_backup_run_stores_the_files_and_a_restore_gives_them_back(host):
    with host.sudo():
        before = _sums(host, FILES)
        run = host.run(f"systemctl start dlstack-backup-{NAME}.service")
        assert run.rc == 0, host.run(f"journalctl -u dlstack-backup-{NAME}.service -n 40 --no-pager").stdout
        snapshots = host.run(f"dlstack-backup {NAME} snapshots")
        assert snapshots.rc == 0 and "dlstack" in snapshots.stdout, snapshots.stdout + snapshots.stderr
        host.run_test("rm -rf /root/restored")
        restored = host.run(f"dlstack-backup {NAME} restore /root/restored")
        assert restored.rc == 0, restored.stderr
        after = _sums(host, [f"/root/restored{path}" for path in FILES])
        assert {p.removeprefix("/root/restored"): s for p, s in after.items()} == before
        # the exclusion held: *.tmp was not backed up
        assert not host.file("/root/restored/srv/lab/notebooks/scratch.tmp").exists


def test_the_repository_is_encrypted_with_the_password(host):
    with host.sudo():
        wrong = host.run("RESTIC_PASSWORD=not-it restic --no-cache -r /var/backups/dlstack-restic cat config")
    assert wrong.rc != 0
    assert "wrong password" in (wrong.stderr + wrong.stdout).lower()


def test_an_unknown_backup_name_is_refused_with_its_reason(host):
    with host.sudo():
        result = host.run("dlstack-backup no-such-backup run")
    assert result.rc == 2
    assert "no backup named 'no-such-backup'" in result.stderr
