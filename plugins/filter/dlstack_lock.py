"""Ansible filters over the stack lock (thin adapter: the logic lives in ``dlstack.lock``).

{{ constraints | dlstack_resolve_locked(locked_entry) }}  -> {"stack": {...}, "locked": true, "newer": [...]}
{{ lock_text | dlstack_lock_entry('gpu01') }}             -> the host's entry or None
{{ lock_text | dlstack_lock_update({'gpu01': stack}) }}   -> the lock file's new text
{{ stack | dlstack_lock_entry_from_stack }}               -> what the lock records for a stack
{{ new_entry | dlstack_lock_differences(old_entry) }}     -> ["driver 580 -> 595", ...]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    import dlstack  # noqa: F401 - probe whether the package is importable
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dlstack import lock
from dlstack.resolver import ResolutionError


def _adapt(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (lock.LockError, ResolutionError) as exc:
            raise AnsibleFilterError(str(exc)) from exc

    return wrapper


def _differences(new: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> list[str]:
    return lock.differences(old or {}, new or {})


def _resolve_locked(constraints: Mapping[str, Any], locked: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return lock.resolve_locked(constraints, locked or None)


class FilterModule:
    """dlstack stack lock filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "dlstack_resolve_locked": _adapt(_resolve_locked),
            "dlstack_lock_entry": _adapt(lock.host_entry),
            "dlstack_lock_update": _adapt(lock.update_lock),
            "dlstack_lock_entry_from_stack": _adapt(lock.entry_from_stack),
            "dlstack_lock_differences": _adapt(_differences),
            "dlstack_lock_host_inputs": _adapt(lock.host_inputs),
        }
