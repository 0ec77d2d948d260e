#!/usr/bin/python
"""Merge named entries into Docker's daemon.json without clobbering keys dlstack does not own."""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
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
  - Reads the existing daemon.json and keeps every key dlstack did not write (for example a
    C(registry-mirrors) list a user added by hand).
  - Records which keys (leaf paths such as C(log-opts.max-size)) dlstack owns in O(state_file); a key
    that an entry no longer sets is removed on the next run, and only that key.
  - The merged file is written once, atomically, after O(validate) accepted it.
  - Standard library only; supports check mode and diff mode.
options:
  path:
    description: The daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  entries:
    description: Ordered list of C({name, config}) entries; C(config) is a dictionary of daemon.json keys.
    type: list
    elements: dict
    default: []
  fragments_dir:
    description:
      - Directory of C(<name>.json) drop-ins (each a JSON object) contributed by other roles; merged
        after O(entries) in file name order. Empty string disables it; a missing directory is fine.
    type: path
    default: /etc/docker/daemon.json.d
  overrides:
    description: Settings merged last (the user's own C(container_runtime_daemon_config)).
    type: dict
    default: {}
  state_file:
    description: JSON file recording the leaf paths dlstack owns in O(path).
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


def merge_entries(entries: list[Entry]) -> tuple[dict[Path_, Any], dict[str, str], list[str]]:
    """Merge entries in order: returns leaves, the entry that set each leaf, and the overrides seen."""
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
            clashing = [p for p in leaves if p == path or p[: len(path)] == path or path[: len(p)] == p]
            for old in clashing:
                if leaves[old] != value or old != path:
                    overridden.append(f"{dotted(old)}: {sources[old]} -> {name}")
                del leaves[old]
                del sources[old]
            leaves[path] = value
            sources[path] = name
    return leaves, {dotted(p): s for p, s in sources.items()}, overridden


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


def apply(existing: dict[str, Any], previously_owned: list[Path_], desired: dict[Path_, Any]) -> tuple[dict, list]:
    """The new file content: existing keys kept, stale owned keys removed, desired leaves set."""
    result = copy.deepcopy(existing)
    removed = []
    for path in previously_owned:
        if path not in desired and delete_path(result, path):
            removed.append(dotted(path))
    for path, value in desired.items():
        set_path(result, path, value)
    return result, sorted(removed)


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


def read_owned(state_file: str) -> list[Path_]:
    state = read_json_object(state_file, "state file", missing={})
    owned = state.get("owned", [])
    if not isinstance(owned, list) or not all(isinstance(p, list) and p for p in owned):
        raise DaemonJsonError(f"state file {state_file}: 'owned' must be a list of key paths; remove the file")
    return [tuple(str(k) for k in p) for p in owned]


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
    entries = [
        check_entry(item.get("name"), item.get("config"), f"entries[{index}]")
        for index, item in enumerate(params["entries"])
    ]
    entries += read_fragments(params["fragments_dir"])
    if params["overrides"]:
        entries.append(check_entry("container_runtime_daemon_config", params["overrides"], "overrides"))
    desired, sources, overridden = merge_entries(entries)
    existing = read_json_object(params["path"], "daemon configuration", missing=None)
    previously_owned = read_owned(params["state_file"])
    config, removed = apply(existing or {}, previously_owned, desired)
    owned = sorted(desired)
    state = {"owned": [list(p) for p in owned], "sources": sources}
    old_state = read_json_object(params["state_file"], "state file", missing=None)
    return {
        "existing": existing,
        "config": config,
        "state": state,
        "file_changed": existing != config or existing is None,
        "state_changed": old_state != state,
        "owned": [dotted(p) for p in owned],
        "removed": removed,
        "sources": sources,
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
