"""Choosing the data directory from gathered mounts and devices."""

from hypothesis import given
from hypothesis import strategies as st

from dlstack import hostfacts


def mount(path, device, fstype="ext4", free=10**9):
    return {"mount": path, "device": device, "fstype": fstype, "size_available": free}


def test_disk_of_partitions():
    assert hostfacts.disk_of("/dev/nvme0n1p2") == "nvme0n1"
    assert hostfacts.disk_of("/dev/sda1") == "sda"
    assert hostfacts.disk_of("/dev/vdb") == "vdb"
    assert hostfacts.disk_of("/dev/mmcblk0p1") == "mmcblk0"


def test_nvme_beats_bigger_hdd_and_ssd():
    mounts = [
        mount("/", "/dev/sda1", free=50 * 10**9),
        mount("/bulk", "/dev/sdb1", free=8000 * 10**9),
        mount("/scratch", "/dev/nvme0n1p1", free=900 * 10**9),
    ]
    devices = {"sda": {"rotational": "0"}, "sdb": {"rotational": "1"}, "nvme0n1": {"rotational": "0"}}
    assert hostfacts.fastest_mount(mounts, devices) == "/scratch"
    assert hostfacts.data_dir("auto", mounts, devices) == "/scratch/dlstack"


def test_ssd_beats_hdd():
    mounts = [mount("/", "/dev/sda1"), mount("/fast", "/dev/sdb1", free=1)]
    devices = {"sda": {"rotational": "1"}, "sdb": {"rotational": "0"}}
    assert hostfacts.fastest_mount(mounts, devices) == "/fast"


def test_root_on_fastest_disk_gives_slash_data():
    mounts = [mount("/", "/dev/nvme0n1p2"), mount("/boot/efi", "/dev/nvme0n1p1", fstype="vfat")]
    assert hostfacts.data_dir("auto", mounts, {}) == "/data"


def test_container_mounts_are_ignored():
    # Docker bind-mounts single files from the host's disk; the root is overlay.
    mounts = [
        mount("/", "overlay", fstype="overlay"),
        mount("/etc/hostname", "/dev/vda"),
        mount("/etc/hosts", "/dev/vda"),
        mount("/etc/resolv.conf", "/dev/vda"),
    ]
    assert hostfacts.fastest_mount(mounts, {"vda": {"rotational": "0"}}) is None
    assert hostfacts.data_dir("auto", mounts, {}) == "/data"


def test_explicit_setting_is_kept():
    assert hostfacts.data_dir("/srv/ml", [mount("/x", "/dev/nvme0n1p1")], {}) == "/srv/ml"


paths = st.sampled_from(["/", "/data", "/scratch", "/mnt/a", "/etc/hosts", "/boot", "/srv"])
devs = st.sampled_from(["/dev/sda1", "/dev/sdb", "/dev/nvme0n1p1", "/dev/nvme1n1", "overlay", "tmpfs"])
fstypes = st.sampled_from(["ext4", "xfs", "overlay", "tmpfs", "vfat"])


@given(st.lists(st.builds(mount, paths, devs, fstypes, st.integers(0, 10**13)), max_size=8))
def test_choice_is_always_a_real_data_mount(mounts):
    chosen = hostfacts.fastest_mount(mounts, {"sda": {"rotational": "1"}, "sdb": {"rotational": "0"}})
    eligible = [
        m
        for m in mounts
        if m["fstype"] in hostfacts.DATA_FILESYSTEMS
        and m["device"].startswith("/dev/")
        and not hostfacts.is_system_mount(m["mount"])
    ]
    if not eligible:
        assert chosen is None
    else:
        assert chosen in {m["mount"] for m in eligible}
        best_rank = min(
            hostfacts.disk_rank(hostfacts.disk_of(m["device"]), {"sdb": {"rotational": "0"}}) for m in eligible
        )
        chosen_ranks = {
            hostfacts.disk_rank(hostfacts.disk_of(m["device"]), {"sdb": {"rotational": "0"}})
            for m in eligible
            if m["mount"] == chosen
        }
        assert best_rank in chosen_ranks


def test_var_trees_are_not_data_disks():
    # e.g. a download cache bind-mounted into a test container, or /var/lib/docker on its own disk
    mounts = [mount("/var/cache/dlstack-host", "/dev/vda"), mount("/var/lib/docker", "/dev/nvme0n1")]
    assert hostfacts.fastest_mount(mounts, {}) is None
