"""Preflight checks on the stack variables (``dlstack_*``): a closed list of names, a rule per value.

The list is dlstack/data/stack_variables.yml; these tests also keep it in step with what the
playbooks, roles, inventories and README read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from dlstack import inventory_checks as ic

ROOT = Path(__file__).resolve().parents[2]
KNOWN = ic.stack_variables()
# Read by the preflight and workstation plays (the PCI-id check, the stack lock, all-or-nothing runs).
ANNOUNCED = ("dlstack_compute_capability", "dlstack_lock_file", "dlstack_all_or_nothing")


def problems(**variables: Any) -> list[str]:
    return ic.stack_problems(variables)


# ----------------------------------------------------------------------------- the list


def test_every_entry_names_a_rule():
    assert KNOWN
    assert set(KNOWN.values()) <= set(ic.STACK_RULES)


def test_a_rule_the_code_does_not_have_is_refused():
    with pytest.raises(ValueError, match=r"stack_variables.yml: variables.dlstack_x: .* got accepts 'colour'"):
        ic.stack_variables({"variables": {"dlstack_x": {"accepts": "colour"}}})


def test_a_name_without_the_prefix_is_refused():
    with pytest.raises(ValueError, match=r"variables.cuda: expected a dlstack_\* name"):
        ic.stack_variables({"variables": {"cuda": {"accepts": "cuda"}}})


@pytest.mark.parametrize("name", ANNOUNCED)
def test_announced_variables_are_listed(name):
    assert name in KNOWN


def _read_in(paths: list[Path], pattern: str) -> set[str]:
    return {m for path in paths for m in re.findall(pattern, path.read_text(encoding="utf-8"))}


def test_variables_the_plays_and_roles_read_are_listed():
    # An optional variable is read with `| default(...)` or `is defined`; `__dlstack_*` are internal.
    files = [*ROOT.glob("playbooks/**/*.yml"), *ROOT.glob("roles/*/*/*.yml"), *ROOT.glob("roles/*/templates/*")]
    read = _read_in(files, r"\b(dlstack_[a-z0-9_]+)\s*(?:\|\s*default|is\s+(?:not\s+)?defined)")
    assert read >= {"dlstack_gpu", "dlstack_cuda", "dlstack_target_hosts"}
    assert read <= set(KNOWN)


def test_variables_the_readme_documents_are_listed():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(dlstack_[a-z0-9_]+)` \|", text, flags=re.MULTILINE))
    assert len(documented) >= 6
    assert documented <= set(KNOWN)


def test_variables_the_cloud_inventories_and_role_set_are_listed():
    composed = set()
    for path in ROOT.glob("inventories/cloud/*.yml"):
        composed |= {k for k in (yaml.safe_load(path.read_text(encoding="utf-8")).get("compose") or {})}
    added = _read_in([ROOT / "roles/cloud_vm/tasks/hosts.yml"], r"(?m)^\s+(dlstack_[a-z0-9_]+):")
    assert {"dlstack_cloud_provider", "dlstack_cloud_gpu_count"} <= added
    assert {k for k in composed | added if k.startswith("dlstack_")} <= set(KNOWN)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("dlstack_driver", "dlstack_driver_branch"),
        ("dlstack_driver_version", "dlstack_driver_branch"),
        ("dlstack_cuda_version", "dlstack_cuda"),
        ("dlstack_framework", "dlstack_frameworks"),
        ("dlstack_kernel_module", "dlstack_kernel_modules"),
        ("dlstack_lockfile", "dlstack_lock_file"),
        ("dlstack_gpus", "dlstack_gpu"),
        ("dlstack_target_host", "dlstack_target_hosts"),
    ],
)
def test_a_misspelled_stack_variable_gets_a_suggestion(typo, meant):
    (message,) = problems(**{typo: "x"})
    assert message.startswith(f"variable {typo} is not a dlstack stack variable; did you mean ")
    assert meant in message.split("did you mean ", 1)[1]


def test_the_issue_example_names_its_fix():
    assert problems(dlstack_driver=580) == [
        "variable dlstack_driver is not a dlstack stack variable; did you mean dlstack_driver_branch?"
    ]


def test_a_name_like_no_other_gets_the_whole_list():
    (message,) = problems(dlstack_torch="2.9")
    assert message.startswith("variable dlstack_torch is not a dlstack stack variable; the stack variables are ")
    assert all(name in message for name in KNOWN)


def test_internal_and_other_names_are_not_stack_variables():
    assert problems(__dlstack_runfile_driver={}, common_timezone="UTC", ansible_host="h", dlstack=1) == []


def test_every_problem_is_reported_at_once():
    found = problems(dlstack_framework=["torch"], dlstack_cuda="twelve", dlstack_kernel_modules="opn")
    assert [m.split(" ", 2)[:2] for m in found] == [
        ["variable", "dlstack_framework"],
        ["dlstack_cuda", "="],
        ["dlstack_kernel_modules", "="],
    ]


def _one_slip(name: str) -> set[str]:
    """Every ``name`` with one letter of its suffix deleted, doubled, swapped with the next or replaced."""
    suffix = name.removeprefix(ic.STACK_PREFIX)
    slips = set()
    for at in range(len(suffix)):
        head, letter, tail = suffix[:at], suffix[at], suffix[at + 1 :]
        slips |= {head + tail, head + letter + letter + tail, head + tail[:1] + letter + tail[1:]}
        slips |= {head + other + tail for other in "abcdefghijklmnopqrstuvwxyz_"}
    return {ic.STACK_PREFIX + slip for slip in slips if slip} - set(KNOWN)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_every_slip_of_the_keyboard_suggests_the_variable(name):
    for typo in _one_slip(name):
        (message,) = ic.unknown_stack_variables([typo], KNOWN)
        assert "did you mean" in message, message
        assert name in message.split("did you mean ", 1)[1].rstrip("?").split(" or "), message


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", max_size=30))
def test_names_without_the_prefix_are_never_reported(name):
    assume(not name.startswith(ic.STACK_PREFIX))
    assert ic.unknown_stack_variables([name], KNOWN) == []


@given(st.sets(st.sampled_from(sorted(KNOWN))))
def test_listed_names_are_never_reported(names):
    assert ic.unknown_stack_variables(names, KNOWN) == []


# ----------------------------------------------------------------------------- values

GOOD = [
    ("dlstack_gpu", "NVIDIA RTX 6000 Ada Generation"),
    ("dlstack_compute_capability", "8.6"),
    ("dlstack_compute_capability", "12.0"),
    ("dlstack_compute_capability", 8.6),  # one minor digit: the number reads back the same
    ("dlstack_driver_branch", "580"),
    ("dlstack_driver_branch", 580),
    ("dlstack_driver_branch", "580.65.06"),
    ("dlstack_driver_branch", "580.95"),
    ("dlstack_kernel_modules", "open"),
    ("dlstack_kernel_modules", "proprietary"),
    ("dlstack_cuda", "12.8"),
    ("dlstack_cuda", "13.0"),
    ("dlstack_frameworks", []),
    ("dlstack_frameworks", ["torch==2.9.*", "tensorflow>=2.18"]),
    ("dlstack_frameworks", ["torch==2.14.1+cu126", "pytorch", "tensorflow-gpu"]),
    ("dlstack_stack", {"cuda": "12.8"}),
    ("dlstack_target_hosts", "dlstack_cloud_new"),
    ("dlstack_target_hosts", ["gpu1", "gpu2"]),
    ("dlstack_proxy_env", {}),
    ("dlstack_proxy_env", {"http_proxy": "http://proxy.lab:3128", "no_proxy": "localhost,.lab"}),
    ("dlstack_cuda_toolkit", False),
    ("dlstack_cuda_toolkit", "false"),  # -e dlstack_cuda_toolkit=false
    ("dlstack_all_or_nothing", "yes"),
    ("dlstack_verify", "changed"),
    ("dlstack_verify", "never"),
    ("dlstack_lock_file", "files/stack.lock"),
    ("dlstack_cloud_provider", "gcp"),
    ("dlstack_cloud_instance_type", "g5.xlarge"),
    ("dlstack_cloud_gpu_model", ""),
    ("dlstack_cloud_gpu_count", 4),
    ("dlstack_cloud_gpu_count", "0"),
]


@pytest.mark.parametrize(("name", "value"), GOOD)
def test_accepted_values_pass(name, value):
    assert problems(**{name: value}) == []


BAD = [
    ("dlstack_gpu", "", "a non-empty GPU model name"),
    ("dlstack_gpu", ["A100"], "a non-empty GPU model name"),
    ("dlstack_compute_capability", "8", "a compute capability MAJOR.MINOR such as '8.6'"),
    ("dlstack_compute_capability", "sm_86", "a compute capability MAJOR.MINOR"),
    ("dlstack_compute_capability", True, "a compute capability MAJOR.MINOR"),
    ("dlstack_driver_branch", "r580", "a driver branch of three digits such as '580' or a driver version"),
    ("dlstack_driver_branch", 58, "a driver branch of three digits"),
    ("dlstack_driver_branch", 580.65, "or a driver version such as '580.65.06', quoted"),
    ("dlstack_kernel_modules", "opn", "open or proprietary (leave it unset to let the resolver choose)"),
    ("dlstack_kernel_modules", "auto", "open or proprietary"),
    ("dlstack_cuda", "twelve", "a CUDA version MAJOR.MINOR such as '12.8'"),
    ("dlstack_cuda", 12.8, "quoted, since YAML reads an unquoted 12.10 as the number 12.1"),
    ("dlstack_frameworks", "torch", "a list of pip requirements for torch, tensorflow or jax"),
    ("dlstack_frameworks", ["torch=2.9"], "'torch=2.9' is not a pip requirement (Expected"),
    ("dlstack_frameworks", ["mxnet"], "'mxnet' names 'mxnet', not a framework dlstack resolves"),
    ("dlstack_frameworks", [2.9], "2.9 is not a string"),
    ("dlstack_stack", "resolved", "a mapping (the preflight play sets it"),
    ("dlstack_target_hosts", "", "a host pattern"),
    ("dlstack_target_hosts", [], "a host pattern"),
    ("dlstack_proxy_env", "http://proxy:3128", "a mapping of environment variable names to strings"),
    ("dlstack_proxy_env", {"http proxy": "x"}, "a mapping of environment variable names to strings"),
    ("dlstack_proxy_env", {"no_proxy": ["a", "b"]}, "a mapping of environment variable names to strings"),
    ("dlstack_cuda_toolkit", "maybe", "true or false"),
    ("dlstack_all_or_nothing", None, "true or false"),
    ("dlstack_verify", "sometimes", "one of changed, always, never"),
    ("dlstack_lock_file", "", "a non-empty path"),
    ("dlstack_cloud_provider", "azure", "aws or gcp"),
    ("dlstack_cloud_instance_type", " ", "a non-empty string"),
    ("dlstack_cloud_gpu_model", None, "a string"),
    ("dlstack_cloud_gpu_count", -1, "a number of 0 or more"),
    ("dlstack_cloud_gpu_count", "two", "a number of 0 or more"),
]


@pytest.mark.parametrize(("name", "value", "accepted"), BAD)
def test_refused_values_name_the_variable_the_value_and_what_is_accepted(name, value, accepted):
    (message,) = problems(**{name: value})
    assert message.startswith(f"{name} = {value!r} is not valid: expected ")
    assert accepted in message


def test_every_rule_is_exercised():
    used = {KNOWN[name] for name, _, _ in BAD} & {KNOWN[name] for name, _ in GOOD}
    assert used == set(ic.STACK_RULES)


def _uncommented(path: Path) -> str:
    """The dlstack_* examples of a commented inventory file, uncommented (with their indented lines)."""
    lines, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        inside = line.startswith("# dlstack_") or (inside and line.startswith("#   "))
        if inside:
            lines.append(line[2:])
    return "\n".join(lines)


@pytest.mark.parametrize("path", sorted(ROOT.glob("inventories/*/group_vars/all/*.yml")), ids=lambda p: p.name)
def test_the_example_inventories_pass(path):
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values |= yaml.safe_load(_uncommented(path)) or {}
    assert ic.stack_problems(values) == []
