"""The stack lock: what each host was given, so that newer data never changes a host by itself.

The first converge of a host records its resolved stack twice: on the host (the local fact
``/etc/ansible/facts.d/dlstack_stack.fact``) and in a lock file beside the inventory
(``dlstack.lock.yml``) that users commit, like any lockfile. Later runs resolve with the locked
versions as constraints: a ``git pull`` that brings newer driver branches or frameworks in
``dlstack/data`` changes nothing on a locked host; the preflight play only says what newer stack
the data offers. A host changes on purpose: a new pin in the inventory (it wins over the lock for
what it pins), or ``playbooks/upgrade.yml`` (which resolves without the lock).

Pure functions; the Ansible adapter is ``plugins/filter/dlstack_lock.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from dlstack.resolver import ResolutionError, resolve_mapping

LOCK_VERSION = 1
HEADER = """\
---
# dlstack stack lock: the driver, CUDA and framework versions each host was given.
# Written by dlstack after a successful converge (playbooks/workstation.yml, playbooks/upgrade.yml);
# commit it with your inventory. Later runs keep these versions although dlstack/data moves on;
# change a host with a pin in the inventory or with playbooks/upgrade.yml. See README "A lab you
# can run for years".
"""
# Inputs of the resolver a lock entry fills in when the inventory does not pin them.
LOCKABLE = ("driver", "kernel_modules", "cuda", "frameworks")
# Framework variants that are pip local versions (torch==2.9.1+cu126); others are extras.
_LOCAL_VARIANTS = ("cu", "cpu", "rocm", "xpu")


class LockError(ValueError):
    """A lock file or entry that cannot be used; the message says which and why."""


# ------------------------------------------------------------------------------ entries


def entry_from_stack(stack: Mapping[str, Any]) -> dict[str, Any]:
    """What the lock records for one host: the resolver's answer without its explanations."""
    driver = stack.get("driver") or {}
    frameworks = {
        name: {"version": str(info["version"]), "variant": str(info.get("variant") or "")}
        for name, info in sorted((stack.get("frameworks") or {}).items())
    }
    return {
        "os": stack.get("os"),
        "gpu": stack.get("gpu"),
        "driver": {"branch": str(driver.get("branch", "")), "kernel_modules": str(driver.get("kernel_modules", ""))},
        "cuda": stack.get("cuda"),
        "cudnn": stack.get("cudnn"),
        "nccl": stack.get("nccl"),
        "frameworks": frameworks,
    }


def framework_spec(name: str, info: Mapping[str, Any]) -> str:
    """A locked framework as a pip requirement the resolver takes (``torch==2.9.1+cu126``)."""
    version, variant = str(info["version"]), str(info.get("variant") or "")
    if variant.startswith(_LOCAL_VARIANTS):
        return f"{name}=={version}+{variant}"
    return f"{name}=={version}"


def constraints_from_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Resolver inputs that reproduce a locked stack."""
    driver = entry.get("driver") or {}
    return {
        "driver": driver.get("branch") or None,
        "kernel_modules": driver.get("kernel_modules") or None,
        "cuda": entry.get("cuda") or None,
        "frameworks": [framework_spec(n, i) for n, i in sorted((entry.get("frameworks") or {}).items())],
    }


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != ()


def merged_constraints(constraints: Mapping[str, Any], locked: Mapping[str, Any] | None) -> dict[str, Any]:
    """The inventory's constraints, with every lockable input it leaves open taken from the lock.

    A framework named without a version (``torch``) takes the locked version; a requirement with a
    version (``torch==2.9.*``) is a pin: it wins unless the locked version already satisfies it.
    """
    merged = dict(constraints)
    if not locked:
        return merged
    from_lock = constraints_from_entry(locked)
    for key in ("driver", "kernel_modules", "cuda"):
        if not _present(merged.get(key)) and _present(from_lock[key]):
            merged[key] = from_lock[key]
    locked_specs = {_requirement(s).name.lower(): s for s in from_lock["frameworks"]}
    frameworks = []
    for spec in [str(s) for s in (merged.get("frameworks") or [])]:
        own = _requirement(spec)
        locked_spec = locked_specs.pop(own.name.lower(), None)
        if locked_spec and (not own.specifier or _satisfies(own, _locked_version(locked_spec))):
            frameworks.append(locked_spec)
        else:
            frameworks.append(spec)
    merged["frameworks"] = frameworks + list(locked_specs.values())
    return merged


def _requirement(spec: str) -> Requirement:
    try:
        return Requirement(spec)
    except InvalidRequirement as exc:
        raise LockError(f"{spec!r} is not a pip requirement: {exc}") from exc


def _locked_version(spec: str) -> str:
    """``torch==2.9.1+cu126`` -> ``2.9.1+cu126``."""
    return str(next(iter(_requirement(spec).specifier)).version)


def _satisfies(requirement: Requirement, version: str) -> bool:
    return requirement.specifier.contains(version, prereleases=True)


def host_inputs(constraints: Mapping[str, Any]) -> dict[str, Any]:
    """The constraints without what a lock decides: the host's own inputs (GPU, release, line)."""
    return {key: value for key, value in constraints.items() if key not in LOCKABLE}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two lock entries, in words (``driver 580 -> 595``)."""
    changes = []
    for key, label in (("driver", "driver"), ("cuda", "CUDA"), ("cudnn", "cuDNN"), ("nccl", "NCCL")):
        before = old.get(key, {}).get("branch") if key == "driver" else old.get(key)
        after = new.get(key, {}).get("branch") if key == "driver" else new.get(key)
        if _present(after) and before != after:
            changes.append(f"{label} {before or '-'} -> {after}")
    old_fw, new_fw = old.get("frameworks") or {}, new.get("frameworks") or {}
    for name in sorted(set(old_fw) | set(new_fw)):
        before = framework_spec(name, old_fw[name]) if name in old_fw else "-"
        after = framework_spec(name, new_fw[name]) if name in new_fw else "-"
        if before != after:
            changes.append(f"{before} -> {after}")
    return changes


def resolve_locked(constraints: Mapping[str, Any], locked: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve a host's stack with its lock; say what newer stack the data offers.

    Returns ``{"stack": <resolver dict>, "locked": bool, "newer": [...], "newest": <entry>}``.
    cuDNN and NCCL keep their locked versions while CUDA stays (the resolver picks the newest for a
    CUDA release, which new data would move).
    """
    try:
        stack = resolve_mapping(merged_constraints(constraints, locked)).to_dict()
    except ResolutionError as exc:
        if not locked:
            raise
        raise LockError(
            f"the locked stack ({', '.join(differences({}, locked))}) no longer fits together with the inventory's "
            f"settings: {exc}. Change the pins in the inventory, or move the host with playbooks/upgrade.yml."
        ) from exc
    if locked and stack.get("cuda") == locked.get("cuda"):
        for key in ("cudnn", "nccl"):
            if _present(locked.get(key)):
                stack[key] = locked[key]
    newest = entry_from_stack(resolve_mapping(constraints).to_dict())
    newer = differences(entry_from_stack(stack), newest) if locked else []
    return {"stack": stack, "locked": bool(locked), "newer": newer, "newest": newest}


# ------------------------------------------------------------------------------ the lock file


def parse_lock(text: str | None, path: str = "dlstack.lock.yml") -> dict[str, Any]:
    """The lock file's ``hosts`` mapping; {} for a missing or empty file."""
    if not text or not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LockError(f"{path} is not valid YAML ({exc}); fix it or delete it to lock the hosts anew") from exc
    if not isinstance(data, dict) or not isinstance(data.get("hosts", {}), dict):
        raise LockError(f"{path}: expected a mapping with 'version' and 'hosts'; delete it to lock the hosts anew")
    if data.get("version", LOCK_VERSION) != LOCK_VERSION:
        raise LockError(f"{path} has lock format version {data.get('version')!r}; this dlstack reads {LOCK_VERSION}")
    return dict(data.get("hosts") or {})


def render_lock(hosts: Mapping[str, Any]) -> str:
    """The lock file's text: hosts sorted, stable, so that an unchanged lock is an unchanged file."""
    body = yaml.safe_dump({"version": LOCK_VERSION, "hosts": dict(sorted(hosts.items()))}, sort_keys=True, width=120)
    return HEADER + body


def update_lock(text: str | None, stacks: Mapping[str, Mapping[str, Any]], path: str = "dlstack.lock.yml") -> str:
    """The lock file with the given hosts' stacks recorded; other hosts' entries are kept."""
    hosts = parse_lock(text, path)
    for host, stack in stacks.items():
        hosts[str(host)] = entry_from_stack(stack)
    return render_lock(hosts)


def host_entry(text: str | None, host: str, path: str = "dlstack.lock.yml") -> dict[str, Any] | None:
    """One host's lock entry, or None."""
    entry = parse_lock(text, path).get(host)
    return dict(entry) if isinstance(entry, dict) else None
