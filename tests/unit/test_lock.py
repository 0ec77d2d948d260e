"""dlstack.lock: a host keeps its stack when dlstack/data moves on; pins and upgrades move it."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlstack import lock

BASE = {"os": "24.04", "frameworks": ["torch"], "driver_line": "server"}


def older_entry() -> dict:
    """A stack an earlier data snapshot resolved: an older branch, CUDA and torch than today's."""
    constraints = dict(BASE, frameworks=["torch==2.9.1+cu126"], driver="580")
    return lock.entry_from_stack(lock.resolve_locked(constraints)["stack"])


def test_entry_records_versions_not_explanations():
    entry = lock.entry_from_stack(lock.resolve_locked(BASE)["stack"])
    assert set(entry) == {"os", "gpu", "driver", "cuda", "cudnn", "nccl", "frameworks"}
    assert set(entry["driver"]) == {"branch", "kernel_modules"}
    assert set(entry["frameworks"]["torch"]) == {"version", "variant"}


def test_locked_host_keeps_its_stack_although_newer_is_offered():
    locked = older_entry()
    result = lock.resolve_locked(BASE, locked)
    assert lock.entry_from_stack(result["stack"]) == locked
    newest = lock.resolve_locked(BASE)["stack"]
    assert result["newer"] == lock.differences(locked, lock.entry_from_stack(newest))
    assert result["newer"], "today's data offers a newer stack than the locked one"


def test_locked_cudnn_and_nccl_stay_while_cuda_stays():
    locked = older_entry()
    locked["cudnn"], locked["nccl"] = "9.10.2", "2.27.5"
    stack = lock.resolve_locked(BASE, locked)["stack"]
    assert (stack["cudnn"], stack["nccl"]) == ("9.10.2", "2.27.5")


def test_a_pin_in_the_inventory_wins_for_what_it_pins():
    locked = older_entry()
    stack = lock.resolve_locked(dict(BASE, driver="595"), locked)["stack"]
    assert stack["driver"]["branch"] == "595"
    assert stack["frameworks"]["torch"]["version"] == locked["frameworks"]["torch"]["version"]


def test_a_framework_range_the_locked_version_satisfies_keeps_it():
    locked = older_entry()
    version = locked["frameworks"]["torch"]["version"]
    stack = lock.resolve_locked(dict(BASE, frameworks=[f"torch>={version}"]), locked)["stack"]
    assert stack["frameworks"]["torch"]["version"] == version


def test_a_framework_pin_the_lock_does_not_satisfy_moves_it():
    locked = older_entry()
    stack = lock.resolve_locked(dict(BASE, frameworks=["torch==2.10.*"]), locked)["stack"]
    assert stack["frameworks"]["torch"]["version"].startswith("2.10.")


def test_without_a_lock_the_newest_stack_and_nothing_newer():
    result = lock.resolve_locked(BASE)
    assert result["locked"] is False
    assert result["newer"] == []


def test_a_lock_that_no_longer_fits_the_pins_says_what_to_do():
    locked = older_entry()
    locked["driver"]["branch"] = "470"  # too old for the locked CUDA
    with pytest.raises(lock.LockError, match=r"upgrade\.yml"):
        lock.resolve_locked(BASE, locked)


def test_lock_file_round_trip_keeps_other_hosts_and_is_stable():
    stack = lock.resolve_locked(BASE)["stack"]
    text = lock.update_lock(None, {"gpu02": stack})
    text = lock.update_lock(text, {"gpu01": stack})
    assert list(lock.parse_lock(text)) == ["gpu01", "gpu02"]
    assert lock.update_lock(text, {"gpu01": stack}) == text
    # a YAML document users commit: it starts as yamllint and ansible-lint expect
    assert text.startswith("---\n# dlstack stack lock")
    assert lock.host_entry(text, "gpu02") == lock.entry_from_stack(stack)
    assert lock.host_entry(text, "gpu03") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts: [a, b]\n", "expected a mapping"),
        ("version: 7\nhosts: {}\n", "format version 7"),
        ("hosts: {a: [\n", "not valid YAML"),
    ],
)
def test_broken_lock_files_are_named(text, message):
    with pytest.raises(lock.LockError, match=message):
        lock.parse_lock(text, "inventories/lab/dlstack.lock.yml")


def test_differences_in_words():
    old = older_entry()
    new = copy.deepcopy(old)
    new["driver"]["branch"] = "595"
    assert lock.differences(old, new) == ["driver 580 -> 595"]
    assert lock.differences(old, old) == []


@given(st.from_regex(r"\A[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}\Z"), st.sampled_from(["cu126", "cu132", "cpu", "rocm6.4"]))
def test_framework_spec_reproduces_the_variant(version, variant):
    spec = lock.framework_spec("torch", {"version": version, "variant": variant})
    assert spec == f"torch=={version}+{variant}"
    assert lock._locked_version(spec) == f"{version}+{variant}"
    assert lock.framework_spec("tensorflow", {"version": version, "variant": "and-cuda"}) == f"tensorflow=={version}"
