#!/usr/bin/python
"""Merge named entries into Docker's daemon.json without clobbering keys dlstack does not own."""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: dlstack_docker_daemon_json
short_description: Build Docker's daemon.json from named entries, keeping the keys dlstack does not own
description:
  - Merges named entries (dictionaries of daemon.json settings) in order, then drop-in files from
    O(fragments_dir) (name order), then O(overrides); a later entry wins a key an earlier one set.
  - An entry is either B(explicit) (the default; something the user asked for) or a B(default)
    (C(default=true); a value dlstack picks when nobody said anything). A default entry is
    all-or-nothing and yields to the user - it is left out entirely when any of its top-level keys
    was written by hand in the existing file (a key dlstack does not own, or one it owns whose value
    was changed by hand since dlstack wrote it), or is set by an explicit entry in this run. A key
    the user deleted is filled in again by its default.
  - An explicit entry wins over a hand-written value; the value it replaced is remembered in
    O(state_file) and put back when no entry sets that key any more (reported as C(restored)).
  - Reads the existing daemon.json and keeps every key dlstack did not write (for example a
    C(registry-mirrors) list a user added by hand).
  - Records which keys (leaf paths such as C(log-opts.max-size)) dlstack owns, and the values it
    wrote, in O(state_file); a key that an entry no longer sets is removed on the next run, and only
    that key. A key dlstack owns but the user changed by hand is the user's from then on: it is
    never removed, only released (reported as C(released)).
  - The merged file is written once, atomically, after O(validate) accepted it.
  - Standard library only; supports check mode and diff mode.
options:
  path:
    description: The daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  entries:
    description:
      - Ordered list of C({name, config, default}) entries; C(config) is a dictionary of daemon.json
        keys; C(default=true) makes the entry a dlstack default that yields to the user (see above).
    type: list
    elements: dict
    default: []
  fragments_dir:
    description:
      - Directory of C(<name>.json) drop-ins (each a JSON object) contributed by other roles; merged
        after O(entries) in file name order, as explicit entries. Empty string disables it; a missing
        directory is fine.
    type: path
    default: /etc/docker/daemon.json.d
  overrides:
    description: Settings merged last, as an explicit entry (the user's own C(container_runtime_daemon_config)).
    type: dict
    default: {}
  state_file:
    description: JSON file recording the leaf paths dlstack owns in O(path), their values, and the values they replaced.
    type: path
    default: /var/lib/dlstack/container_runtime/daemon-json-owned.json
  validate:
    description: Command run on the candidate file before it replaces O(path); C(%s) is the file name.
    type: str
  mode:
    description: Permissions of O(path).
    type: str
    default: "0644"
author: dlstack
"""

EXAMPLES = r"""
- name: Write daemon.json
  dlstack_docker_daemon_json:
    entries:
      - name: log-rotation
        default: true
        config: {log-driver: json-file, log-opts: {max-size: 100m, max-file: "3"}}
    overrides: {registry-mirrors: ["https://mirror.lab"]}
    validate: dockerd --validate --config-file %s
"""

RETURN = r"""
config:
  description: The merged configuration as written.
  type: dict
  returned: always
owned:
  description: Leaf paths dlstack owns now, dotted (C(log-opts.max-size)).
  type: list
  returned: always
removed:
  description: Leaf paths dlstack owned before, no entry sets any more, and that were removed.
  type: list
  returned: always
restored:
  description: Hand-written values an explicit entry had replaced, put back because no entry sets them any more.
  type: list
  returned: always
released:
  description: Leaf paths dlstack owned but the user changed by hand; kept as they are and no longer owned.
  type: list
  returned: always
yielded:
  description: Default entries left out, as C(name: keys (reason)).
  type: list
  returned: always
taken_over:
  description: Hand-written values an explicit entry replaced, as C(path: old -> new (entry)).
  type: list
  returned: always
changed_keys:
  description: Top-level keys whose value differs between the old and the new file.
  type: list
  returned: always
sources:
  description: For each owned leaf path, the entry that set it.
  type: dict
  returned: always
overridden:
  description: Keys set by several entries, as C(key: first -> winner).
  type: list
  returned: always
validated:
  description: Whether O(validate) ran on the written content.
  type: bool
  returned: always
"""


Path_ = tuple[str, ...]
Entry = tuple[str, dict[str, Any]]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DaemonJsonError(ValueError):
    """An entry, a drop-in or the existing file is not usable; the message says what to fix."""


@dataclass
class State:
    """What dlstack recorded about daemon.json on its last run."""

    owned: list[Path_] = field(default_factory=list)
    # The value dlstack wrote at each owned path (absent for state files of older versions).
    values: dict[Path_, Any] = field(default_factory=dict)
    # The entry that set each owned path.
    entries: dict[Path_, str] = field(default_factory=dict)
    # Hand-written values an explicit entry replaced, to put back when it stops setting them.
    displaced: dict[Path_, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    config: dict[str, Any]
    removed: list[str]
    restored: list[str]
    released: list[str]
    taken_over: list[str]
    displaced: dict[Path_, Any]


# ----------------------------------------------------------------------------- pure merge logic


def leaf_paths(config: dict[str, Any], prefix: Path_ = ()) -> dict[Path_, Any]:
    """Every leaf of a nested dict keyed by its path; lists, scalars and empty dicts are leaves."""
    leaves: dict[Path_, Any] = {}
    for key, value in config.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            leaves.update(leaf_paths(value, path))
        else:
            leaves[path] = value
    return leaves


def dotted(path: Path_) -> str:
    return ".".join(path)


def clashes(a: Path_, b: Path_) -> bool:
    """Whether writing one path replaces the other: the same path, or one is a prefix of the other."""
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def check_entry(name: Any, config: Any, where: str) -> Entry:
    """Validate one named entry; raise naming it, the bad value and what is accepted."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DaemonJsonError(
            f"{where}: entry name {name!r} is not valid: use letters, digits, '_', '.', '-' (e.g. 'log-rotation')"
        )
    if not isinstance(config, dict):
        raise DaemonJsonError(
            f"{where}: entry {name!r} has config {config!r} ({type(config).__name__}); "
            "expected a mapping of daemon.json keys"
        )
    return name, config


def check_default_flag(value: Any, name: str, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise DaemonJsonError(f"{where}: entry {name!r} has default={value!r}; expected true or false")
    return value


def merge_entries(entries: list[Entry]) -> tuple[dict[Path_, Any], dict[str, str], list[str]]:
    """Merge entries in order: returns leaves, the entry that set each leaf, and the overrides seen."""
    leaves, sources, overridden = merge_entries_by_path(entries)
    return leaves, {dotted(p): s for p, s in sources.items()}, overridden


def merge_entries_by_path(entries: list[Entry]) -> tuple[dict[Path_, Any], dict[Path_, str], list[str]]:
    names = [name for name, _ in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DaemonJsonError(f"entry names must be unique; repeated: {', '.join(duplicates)}")
    leaves: dict[Path_, Any] = {}
    sources: dict[Path_, str] = {}
    overridden: list[str] = []
    for name, config in entries:
        for path, value in leaf_paths(config).items():
            # A new leaf replaces any leaf at a prefix of it or below it (a dict replaced by a value or back).
            for old in [p for p in leaves if clashes(p, path)]:
                if leaves[old] != value or old != path:
                    overridden.append(f"{dotted(old)}: {sources[old]} -> {name}")
                del leaves[old]
                del sources[old]
            leaves[path] = value
            sources[path] = name
    return leaves, sources, overridden


def hand_edited(current: dict[str, Any], state: State) -> set[Path_]:
    """Owned paths whose value the user changed or deleted by hand since dlstack wrote it."""
    leaves = leaf_paths(current)
    owned = set(state.owned)
    return {
        path for path, value in state.values.items() if path in owned and (path not in leaves or leaves[path] != value)
    }


def user_keys(current: dict[str, Any], state: State, edited: set[Path_]) -> set[str]:
    """Top-level keys the user wrote or changed by hand (dlstack defaults yield to them).

    A key dlstack wrote and the user deleted is not one: a default fills it in again (its variable
    is how to turn it off), so that runs do not flip between two states.
    """
    owned = set(state.owned)
    return {path[0] for path in leaf_paths(current) if path not in owned or path in edited}


def select_entries(
    entries: list[Entry], defaults: set[str], hand_written: set[str]
) -> tuple[list[Entry], list[str], set[str]]:
    """Leave out default entries that touch a hand-written key or a key an explicit entry sets."""
    explicit = {key for name, config in entries if name not in defaults for key in config}
    kept: list[Entry] = []
    yielded: list[str] = []
    names: set[str] = set()
    for name, config in entries:
        if name in defaults:
            by_hand = sorted(set(config) & hand_written)
            by_setting = sorted((set(config) & explicit) - hand_written)
            if by_hand or by_setting:
                reasons = ([f"{', '.join(by_hand)} written by hand"] if by_hand else []) + (
                    [f"{', '.join(by_setting)} set explicitly"] if by_setting else []
                )
                yielded.append(f"{name}: {'; '.join(reasons)}")
                names.add(name)
                continue
        kept.append((name, config))
    return kept, yielded, names


def delete_path(config: dict[str, Any], path: Path_) -> bool:
    """Remove ``path`` from ``config`` and the dicts it leaves empty; False when it was not there."""
    parents = [config]
    node: Any = config
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
        parents.append(node)
    if not isinstance(node, dict) or path[-1] not in node:
        return False
    del node[path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            break
        del parents[depth - 1][path[depth - 1]]
    return True


def set_path(config: dict[str, Any], path: Path_, value: Any) -> None:
    node = config
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = copy.deepcopy(value)


def apply(
    existing: dict[str, Any],
    state: State,
    desired: dict[Path_, Any],
    sources: dict[Path_, str] | None = None,
) -> Outcome:
    """The new file content from the existing one, what dlstack recorded last time, and the desired leaves.

    Keys dlstack never wrote are kept; owned keys no entry sets any more are removed, unless the
    user changed them by hand (then they are released) or they had replaced a hand-written value
    (then that value is put back); desired leaves are set, remembering hand-written values they replace.
    """
    sources = sources or {}
    result = copy.deepcopy(existing)
    edited = hand_edited(existing, state)
    owned = set(state.owned)
    removed: list[str] = []
    released: list[str] = []
    for path in state.owned:
        if path in desired:
            continue
        if path in edited:
            released.append(dotted(path))
        elif path not in state.displaced and delete_path(result, path):
            removed.append(dotted(path))
    displaced: dict[Path_, Any] = {}
    restored: list[str] = []
    for path, value in state.displaced.items():
        if any(clashes(path, d) for d in desired):
            displaced[path] = value
        elif not any(clashes(path, e) for e in edited):
            # Remove what dlstack wrote there (a structure at or below the path), then put the user's value back.
            for mine in [p for p in state.owned if clashes(p, path) and p not in edited]:
                delete_path(result, mine)
            set_path(result, path, value)
            restored.append(dotted(path))
    taken_over: list[str] = []
    for path, value in desired.items():
        for theirs, old in leaf_paths(result).items():
            if not clashes(path, theirs) or (theirs in owned and theirs not in edited):
                continue
            if theirs not in displaced:
                displaced[theirs] = old
            if theirs != path or old != value:
                entry = sources.get(path, "?")
                new = f"{dotted(path)}={json.dumps(value)}"
                taken_over.append(f"{dotted(theirs)}: {json.dumps(old)} -> {new} ({entry})")
        set_path(result, path, value)
    return Outcome(result, sorted(removed), sorted(restored), sorted(released), taken_over, displaced)


_MISSING = object()


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Top-level keys added, removed or changed (what decides between a reload and a restart)."""
    return sorted(key for key in set(before) | set(after) if before.get(key, _MISSING) != after.get(key, _MISSING))


def render(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


# ----------------------------------------------------------------------------- files


def read_json_object(path: str, what: str, *, missing: Any) -> Any:
    file = Path(path)
    if not file.exists():
        return missing
    text = file.read_text(encoding="utf-8")
    if not text.strip():
        return missing
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DaemonJsonError(f"{what} {path} is not valid JSON ({exc}); fix or remove it") from exc
    if not isinstance(data, dict):
        raise DaemonJsonError(f"{what} {path} holds a {type(data).__name__}; expected a JSON object")
    return data


def read_fragments(directory: str) -> list[Entry]:
    if not directory or not Path(directory).is_dir():
        return []
    entries = []
    for file in sorted(Path(directory).glob("*.json")):
        data = read_json_object(str(file), "drop-in", missing={})
        entries.append(check_entry(file.stem, data, str(file)))
    return entries


def _path_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(k, str) for k in value)


def parse_state(data: dict[str, Any], state_file: str) -> State:
    """The state file's content; files of older versions have only 'owned' (and 'sources')."""
    broken = DaemonJsonError(
        f"state file {state_file} is not in the expected format; remove it "
        "(dlstack then owns no key until it sets it again)"
    )
    owned = data.get("owned", [])
    if not isinstance(owned, list) or not all(_path_list(p) for p in owned):
        raise broken
    state = State(owned=[tuple(p) for p in owned])
    for item in data.get("leaves", []):
        if not isinstance(item, dict) or not _path_list(item.get("path")):
            raise broken
        path = tuple(item["path"])
        state.values[path] = item.get("value")
        state.entries[path] = str(item.get("entry", ""))
    for item in data.get("displaced", []):
        if not isinstance(item, dict) or not _path_list(item.get("path")):
            raise broken
        state.displaced[tuple(item["path"])] = item.get("value")
    return state


def read_state(state_file: str) -> tuple[State, dict[str, Any] | None]:
    data = read_json_object(state_file, "state file", missing=None)
    return parse_state(data or {}, state_file), data


def state_document(desired: dict[Path_, Any], sources: dict[Path_, str], displaced: dict[Path_, Any]) -> dict[str, Any]:
    owned = sorted(desired)
    return {
        "owned": [list(p) for p in owned],
        "sources": {dotted(p): sources[p] for p in owned},
        "leaves": [{"path": list(p), "value": desired[p], "entry": sources[p]} for p in owned],
        "displaced": [{"path": list(p), "value": displaced[p]} for p in sorted(displaced)],
    }


def write_atomic(module: Any, dest: str, content: str, mode: int, validate: str | None) -> bool:
    """Write ``content`` to ``dest`` through a temporary file that ``validate`` must accept first."""
    directory = Path(dest).parent
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".dlstack-", suffix=".json", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        tmp.chmod(mode)
        if validate:
            if "%s" not in validate:
                raise DaemonJsonError(f"validate={validate!r} must contain %s (the candidate file)")
            command = validate.replace("%s", tmp_name)
            rc, out, err = module.run_command(command)
            if rc != 0:
                raise DaemonJsonError(
                    f"{command} rejected the merged configuration (rc={rc}): {(err or out).strip()}\n{content}"
                )
        module.atomic_move(tmp_name, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return bool(validate)


# ----------------------------------------------------------------------------- module


def plan(params: dict[str, Any]) -> dict[str, Any]:
    """Everything the module decides, without writing: the new file, the new state, the changes."""
    entries: list[Entry] = []
    defaults: set[str] = set()
    for index, item in enumerate(params["entries"]):
        where = f"entries[{index}]"
        name, config = check_entry(item.get("name"), item.get("config"), where)
        if check_default_flag(item.get("default"), name, where):
            defaults.add(name)
        entries.append((name, config))
    entries += read_fragments(params["fragments_dir"])
    if params["overrides"]:
        entries.append(check_entry("container_runtime_daemon_config", params["overrides"], "overrides"))
    existing = read_json_object(params["path"], "daemon configuration", missing=None)
    current = existing or {}
    state, old_state = read_state(params["state_file"])
    hand_written = user_keys(current, state, hand_edited(current, state))
    kept, yielded, _ = select_entries(entries, defaults, hand_written)
    desired, by_path, overridden = merge_entries_by_path(kept)
    outcome = apply(current, state, desired, by_path)
    new_state = state_document(desired, by_path, outcome.displaced)
    return {
        "existing": existing,
        "config": outcome.config,
        "state": new_state,
        "file_changed": existing != outcome.config or existing is None,
        "state_changed": old_state != new_state,
        "owned": [dotted(p) for p in sorted(desired)],
        "removed": outcome.removed,
        "restored": outcome.restored,
        "released": outcome.released,
        "yielded": yielded,
        "taken_over": outcome.taken_over,
        "changed_keys": changed_keys(current, outcome.config),
        "sources": {dotted(p): s for p, s in by_path.items()},
        "overridden": overridden,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "entries": {"type": "list", "elements": "dict", "default": []},
            "fragments_dir": {"type": "path", "default": "/etc/docker/daemon.json.d"},
            "overrides": {"type": "dict", "default": {}},
            "state_file": {"type": "path", "default": "/var/lib/dlstack/container_runtime/daemon-json-owned.json"},
            "validate": {"type": "str"},
            "mode": {"type": "str", "default": "0644"},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        mode = int(params["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"mode={params['mode']!r} is not an octal permission string such as '0644'")
    try:
        result = plan(params)
        validated = False
        if result["file_changed"] and not module.check_mode:
            validated = write_atomic(module, params["path"], render(result["config"]), mode, params["validate"])
        if result["state_changed"] and not module.check_mode:
            write_atomic(module, params["state_file"], render(result["state"]), 0o644, None)
    except (DaemonJsonError, OSError) as exc:
        module.fail_json(msg=str(exc))
    before = render(result["existing"]) if result["existing"] is not None else ""
    module.exit_json(
        changed=result["file_changed"] or result["state_changed"],
        config=result["config"],
        owned=result["owned"],
        removed=result["removed"],
        restored=result["restored"],
        released=result["released"],
        yielded=result["yielded"],
        taken_over=result["taken_over"],
        changed_keys=result["changed_keys"],
        sources=result["sources"],
        overridden=result["overridden"],
        validated=validated,
        diff={
            "before": before,
            "after": render(result["config"]),
            "before_header": params["path"],
            "after_header": params["path"],
        },
    )


if __name__ == "__main__":
    main()
