"""plugins/modules/dlstack_md_array.py: which disks become an array, and which are refused.

The decision is a pure function of what the host says about each disk (blkid -p, /sys, mounts);
the VM tier runs the module against real disks on Ubuntu's kernel (tests/vm/test_storage_vm.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from file_module import load_file
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
mod = load_file("dlstack_md_array", ROOT / "plugins" / "modules" / "dlstack_md_array.py", register=True)

WHERE = "storage_volumes[0] (scratch)"
MEMBER = {"TYPE": "linux_raid_member", "LABEL": "ws1:scratch", "UUID": "8c1e2f3a-1111-2222-3333-444455556666"}


def disk(name: str, signature: dict[str, str] | None = None, **kwargs) -> mod.Disk:
    return mod.Disk(f"/dev/{name}", name, True, signature or {}, **kwargs)


def plan(disks, running=None, level=0):
    return mod.plan(WHERE, "scratch", level, disks, running)


def test_blank_disks_are_made_into_an_array():
    assert plan([disk("vdb"), disk("vdc")]) == mod.Plan("create")


def test_the_arrays_own_members_are_assembled_when_it_is_not_running():
    assert plan([disk("vdb", MEMBER), disk("vdc", MEMBER)]) == mod.Plan("assemble")


def test_a_running_array_with_the_same_level_and_members_is_left_alone():
    running = mod.Running("md127", 0, frozenset({"vdb", "vdc"}))
    assert plan([disk("vdb", MEMBER), disk("vdc", MEMBER)], running) == mod.Plan("none")


@pytest.mark.parametrize(
    ("signature", "shown"),
    [
        ({"TYPE": "ext4", "LABEL": "thesis"}, "TYPE=ext4, LABEL=thesis"),
        ({"PTTYPE": "gpt"}, "PTTYPE=gpt"),
        (
            {"TYPE": "linux_raid_member", "LABEL": "ws1:other", "UUID": "1"},
            "TYPE=linux_raid_member, LABEL=ws1:other, UUID=1",
        ),
        ({"TYPE": "LVM2_member"}, "TYPE=LVM2_member"),
    ],
)
def test_a_disk_with_any_other_signature_is_refused_with_the_way_out(signature, shown):
    decided = plan([disk("vdb"), disk("vdc", signature)])
    assert decided.action == "none"
    (problem,) = decided.problems
    assert problem.startswith(f"{WHERE}: /dev/vdc is not blank ({shown})")
    assert "never erases" in problem and "wipefs -a /dev/vdc" in problem


def test_a_missing_disk_is_refused():
    decided = plan([disk("vdb"), mod.Disk("/dev/disk/by-id/nvme-gone")])
    assert decided.problems == (f"{WHERE}: /dev/disk/by-id/nvme-gone does not exist or is not a block device "
                                "(devices: whole disks such as /dev/nvme1n1)",)  # fmt: skip


def test_a_disk_in_use_is_refused():
    decided = plan([disk("vdb", mounted=True), disk("vdc", holders=("vdc1",))])
    assert decided.problems == (f"{WHERE}: /dev/vdb is in use (mounted)", f"{WHERE}: /dev/vdc is in use (held by vdc1)")


def test_one_disk_or_the_same_disk_twice_is_refused():
    assert "needs at least two devices" in plan([disk("vdb")]).problems[0]
    twice = mod.Disk("/dev/disk/by-id/virtio-a", "vdb", True)
    assert "listed twice" in plan([disk("vdb"), twice]).problems[0]


def test_a_degraded_set_is_not_completed():
    decided = plan([disk("vdb", MEMBER), disk("vdc")])
    assert decided.action == "none"
    assert "does not complete a degraded array" in decided.problems[0]


def test_a_running_array_is_never_reshaped_or_given_other_disks():
    running = mod.Running("md127", 1, frozenset({"vdb", "vdd"}))
    problems = plan([disk("vdb", MEMBER), disk("vdc", MEMBER)], running).problems
    assert "running as RAID 1, the setting asks for level 0" in problems[0]
    assert "runs on vdb, vdd, the setting lists vdb, vdc" in problems[1]


_signatures = st.one_of(
    st.just({}),
    st.just(MEMBER),
    st.fixed_dictionaries({"TYPE": st.sampled_from(["ext4", "xfs", "swap", "linux_raid_member", "crypto_LUKS"])}),
    st.fixed_dictionaries({"PTTYPE": st.sampled_from(["gpt", "dos"])}),
)


@given(st.lists(_signatures, min_size=2, max_size=4), st.booleans())
def test_nothing_but_blank_disks_or_the_arrays_own_members_is_ever_written(signatures, mounted):
    disks = [disk(f"vd{chr(98 + i)}", sig, mounted=mounted and i == 0) for i, sig in enumerate(signatures)]
    decided = plan(disks)
    if decided.action == "create":
        assert all(not d.signature and not d.mounted for d in disks)
    if decided.action == "assemble":
        assert all(d.array_name == "scratch" for d in disks)
    if any(d.signature and d.array_name != "scratch" for d in disks):
        assert decided.action == "none" and decided.problems


def test_blkid_and_mdadm_spell_the_same_uuid_alike(tmp_path):
    conf = tmp_path / "mdadm.conf"
    conf.write_text(
        "HOMEHOST <system>\n"
        "ARRAY /dev/md/scratch metadata=1.2 name=ws1:scratch UUID=8c1e2f3a:11112222:33334444:55556666\n"
    )
    assert mod.conf_has(str(conf), MEMBER["UUID"])
    assert not mod.conf_has(str(conf), "00000000-1111-2222-3333-444455556666")
    assert not mod.conf_has(str(tmp_path / "missing.conf"), MEMBER["UUID"])


def test_blkid_export_is_parsed():
    assert mod.parse_export("DEVNAME=/dev/vdb\nTYPE=ext4\nLABEL=a=b\n") == {
        "DEVNAME": "/dev/vdb",
        "TYPE": "ext4",
        "LABEL": "a=b",
    }
