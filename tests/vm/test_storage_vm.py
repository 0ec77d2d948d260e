"""The storage role on a booted Ubuntu kernel (QEMU): md RAID from blank disks, backups, a reboot.

A container shares the host's kernel, which has no md driver here; a VM has Ubuntu's, with five
blank virtio disks (``/dev/disk/by-id/virtio-dlstack-disk1`` to ``5``). One VM walks the steps:

1. a disk that holds a filesystem is refused by the preflight, before anything is installed;
2. a mount point with files in it is refused, and the files stay;
3. the converge builds a RAID 0 scratch volume and a RAID 1 data volume, each with ext4, mounted by
   UUID with nofail, recorded in mdadm.conf and the initramfs; a second converge changes nothing;
4. a backup of the data volume to the scratch volume, then a restore, gives the files back;
5. a changed backup password is refused (it would not open the existing repository);
6. after a reboot both arrays are assembled and mounted again, with the data on them.

What only a real machine proves: NVMe speed, and that the firmware boots with a failed disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from vmhost import VMHost, booted_vm

pytestmark = pytest.mark.vm

RELEASE = os.environ.get("DLSTACK_VM_STORAGE_RELEASE", "24.04")
PLAYBOOK = "tests/vm/storage.yml"
DISK = "/dev/disk/by-id/virtio-dlstack-disk{}"
PASSWORD = "vm-only-password"  # noqa: S105 - a throwaway VM's test repository
VOLUMES = [
    {"name": "scratch", "level": 0, "devices": [DISK.format(1), DISK.format(2)], "mount": "/scratch", "mode": "1777"},
    {"name": "data", "level": 1, "devices": [DISK.format(3), DISK.format(4)], "mount": "/data"},
]
BACKUPS = [{"name": "checkpoints", "paths": ["/data/checkpoints"], "repository": "/scratch/restic", "keep_daily": 2}]
HOST_VARS = {"storage_volumes": VOLUMES, "storage_backups": BACKUPS, "storage_backup_password": PASSWORD}


@pytest.fixture(scope="class")
def host() -> Iterator[VMHost]:
    with booted_vm(RELEASE, HOST_VARS, data_disks_mib=(320, 320, 320, 320, 64), name="storage") as machine:
        yield machine


def _flat(text: str) -> str:
    return " ".join(text.split())


def _blank(host: VMHost, disk: str) -> bool:
    """blkid -p exits 2 when it finds no signature at all."""
    return host.sh(f"blkid -p {disk}", check=False).returncode == 2


@pytest.mark.usefixtures("host")
class TestStorageOnARealKernel:
    def test_a_disk_with_a_filesystem_is_refused_before_anything_changes(self, host):
        # a user's disk: ext4 with a file on it
        host.sh(f"mkfs.ext4 -q -L users-disk {DISK.format(5)} && mkdir -p /mnt/u && mount {DISK.format(5)} /mnt/u")
        host.sh("echo precious > /mnt/u/thesis.tex && umount /mnt/u")
        volumes = [{**VOLUMES[0], "devices": [DISK.format(1), DISK.format(5)]}]
        result = host.play(PLAYBOOK, "storage-refuse-disk", {"storage_volumes": volumes, "storage_backups": []})
        assert result.rc != 0, result.tail()
        flat = _flat(result.output)
        assert f"storage_volumes[0] (scratch): {DISK.format(5)} is not blank (TYPE=ext4" in flat, result.tail()
        assert f"wipefs -a {DISK.format(5)}" in flat
        # the preflight refused: nothing installed, no array, both disks as they were
        assert host.sh("dpkg -s mdadm", check=False).returncode != 0
        assert _blank(host, DISK.format(1))
        assert host.out(f"blkid -p -s LABEL -o value {DISK.format(5)}") == "users-disk"

    def test_a_mount_point_with_files_in_it_is_refused_and_the_files_stay(self, host):
        host.sh("mkdir -p /data && echo mine > /data/notes.txt")
        result = host.play(PLAYBOOK, "storage-refuse-mount", {"storage_backups": []})
        assert result.rc != 0, result.tail()
        assert "storage_volumes[1] (data): /data is a directory with files in it" in _flat(result.output), result.tail()
        assert host.out("cat /data/notes.txt") == "mine"
        assert all(_blank(host, DISK.format(n)) for n in (1, 2, 3, 4))
        host.sh("rm /data/notes.txt")

    def test_converge_builds_the_arrays_and_mounts_them_by_uuid(self, host):
        result = host.play(PLAYBOOK, "storage-converge")
        assert result.rc == 0, result.tail()
        for volume, level in zip(VOLUMES, ("raid0", "raid1"), strict=True):
            md = host.out(f"basename $(readlink -f /dev/md/{volume['name']})")
            assert host.out(f"cat /sys/block/{md}/md/level") == level
            members = host.out(
                f"for d in {' '.join(volume['devices'])}; do basename $(readlink -f $d); done | sort | xargs"
            )
            assert host.out(f"ls /sys/block/{md}/slaves | sort | xargs") == members
        for volume in VOLUMES:
            source = host.out(f"findmnt -n -o SOURCE --mountpoint {volume['mount']}")
            assert host.out(f"readlink -f {source}") == host.out(f"readlink -f /dev/md/{volume['name']}")
            assert host.out(f"findmnt -n -o FSTYPE --mountpoint {volume['mount']}") == "ext4"
            uuid = host.out(f"blkid -s UUID -o value /dev/md/{volume['name']}")
            fstab = host.out(f"grep ' {volume['mount']} ' /etc/fstab")
            assert fstab.startswith(f"UUID={uuid} ") and "nofail" in fstab
        assert host.out("grep -c '^ARRAY' /etc/mdadm/mdadm.conf") == "2"
        assert host.out("stat -c %a /scratch") == "1777"
        initrd = f"/boot/initrd.img-{host.kernel()}"
        if host.sh(f"test -e {initrd}", check=False).returncode == 0:
            # the boot assembles from the initramfs's copy of mdadm.conf (mdadm's initramfs hook copies it):
            # the initramfs must have been made after the arrays were recorded (unpacking it takes minutes
            # under emulation; the reboot below shows the arrays assembled)
            assert host.sh(f"test {initrd} -nt /etc/mdadm/mdadm.conf", check=False).returncode == 0

    def test_second_converge_changes_nothing(self, host):
        result = host.play(PLAYBOOK, "storage-idempotence")
        assert result.rc == 0, result.tail()
        assert result.recap()["changed"] == 0, result.tail()

    def test_a_backup_then_a_restore_gives_the_checkpoints_back(self, host):
        host.sh("mkdir -p /data/checkpoints && head -c 3000000 /dev/urandom > /data/checkpoints/epoch-1.pt")
        before = host.out("sha256sum /data/checkpoints/epoch-1.pt").split()[0]
        run = host.sh("systemctl start dlstack-backup-checkpoints.service", check=False)
        assert run.returncode == 0, host.out("journalctl -u dlstack-backup-checkpoints.service -n 40 --no-pager")
        host.sh("rm /data/checkpoints/epoch-1.pt")
        host.sh("dlstack-backup checkpoints restore /scratch/restored")
        assert host.out("sha256sum /scratch/restored/data/checkpoints/epoch-1.pt").split()[0] == before

    def test_a_changed_password_is_refused_and_the_old_one_kept(self, host):
        # the volumes are left out of this run: they have nothing to do with the password (and cost minutes here)
        extra = {"storage_backup_password": "another-password", "storage_volumes": []}
        result = host.play(PLAYBOOK, "storage-new-password", extra)
        assert result.rc != 0, result.tail()
        assert "does not open with the password now set" in _flat(result.output), result.tail()
        assert host.out("cat /etc/dlstack/backup/checkpoints.password") == PASSWORD

    def test_after_a_reboot_the_arrays_are_assembled_and_mounted_with_their_data(self, host):
        host.sh("echo survives > /data/marker && sync")
        uuids = {v["name"]: host.out(f"blkid -s UUID -o value /dev/md/{v['name']}") for v in VOLUMES}
        host.reboot()
        for volume in VOLUMES:
            assert host.out(f"findmnt -n -o UUID --mountpoint {volume['mount']}") == uuids[volume["name"]]
        assert host.out("cat /data/marker") == "survives"
        assert "[UU]" in host.out("cat /proc/mdstat")  # the mirror runs with both disks
