"""The daemon.json merge of plugins/modules/dlstack_docker_daemon_json.py (container_runtime role)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from file_module import load_file

ROOT = Path(__file__).resolve().parents[2]
MODULE_PATH = ROOT / "plugins" / "modules" / "dlstack_docker_daemon_json.py"


def load_module():
    # dataclasses look their module up there
    module = load_file("dlstack_docker_daemon_json", MODULE_PATH, register=True)
    return module


dj = load_module()

LOGS = {"log-driver": "json-file", "log-opts": {"max-size": "100m", "max-file": "3"}}
NVIDIA = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}


def params(tmp_path: Path, entries=(), overrides=None, fragments: bool = False, defaults=()) -> dict:
    """Module parameters; entries named in ``defaults`` are dlstack defaults (default: true)."""
    return {
        "path": str(tmp_path / "daemon.json"),
        "entries": [{"name": n, "config": c, "default": n in defaults} for n, c in entries],
        "fragments_dir": str(tmp_path / "daemon.json.d") if fragments else "",
        "overrides": overrides or {},
        "state_file": str(tmp_path / "state.json"),
    }


def commit(tmp_path: Path, result: dict) -> None:
    """What the module does after planning (minus validation): write the file and the state."""
    (tmp_path / "daemon.json").write_text(dj.render(result["config"]), encoding="utf-8")
    (tmp_path / "state.json").write_text(dj.render(result["state"]), encoding="utf-8")


# ----------------------------------------------------------------------------- pure functions


def test_leaf_paths_descend_into_dicts_only():
    leaves = dj.leaf_paths({"a": {"b": 1, "c": [1, 2]}, "d": {}, "e": "x"})
    assert leaves == {("a", "b"): 1, ("a", "c"): [1, 2], ("d",): {}, ("e",): "x"}


def test_later_entry_wins_and_is_reported():
    leaves, sources, overridden = dj.merge_entries(
        [("logs", LOGS), ("site", {"log-opts": {"max-size": "1g"}})],
    )
    assert leaves[("log-opts", "max-size")] == "1g"
    assert leaves[("log-opts", "max-file")] == "3"
    assert sources["log-opts.max-size"] == "site"
    assert overridden == ["log-opts.max-size: logs -> site"]


def test_same_value_from_two_entries_is_not_an_override():
    _, _, overridden = dj.merge_entries([("a", {"debug": True}), ("b", {"debug": True})])
    assert overridden == []


def test_value_replacing_a_dict_drops_the_dict_leaves():
    leaves, _, _ = dj.merge_entries([("a", {"x": {"y": 1, "z": 2}}), ("b", {"x": "flat"})])
    assert leaves == {("x",): "flat"}


def test_duplicate_entry_names_are_rejected():
    with pytest.raises(dj.DaemonJsonError, match="repeated: logs"):
        dj.merge_entries([("logs", LOGS), ("logs", {})])


@pytest.mark.parametrize(
    ("name", "config", "message"), [("bad name", {}, "not valid"), ("ok", [1], "expected a mapping")]
)
def test_bad_entries_name_the_problem(name, config, message):
    with pytest.raises(dj.DaemonJsonError, match=message):
        dj.check_entry(name, config, "entries[0]")


def test_delete_path_prunes_empty_parents_only():
    config = {"runtimes": {"nvidia": {"path": "x"}, "other": {"path": "y"}}}
    assert dj.delete_path(config, ("runtimes", "nvidia", "path"))
    assert config == {"runtimes": {"other": {"path": "y"}}}
    assert dj.delete_path(config, ("runtimes", "other", "path"))
    assert config == {}
    assert not dj.delete_path(config, ("runtimes", "missing"))


def test_apply_keeps_foreign_keys_and_removes_only_stale_owned_ones():
    existing = {"registry-mirrors": ["https://m"], "runtimes": {"mine": {"path": "/x"}, "nvidia": {"path": "n"}}}
    state = dj.State(owned=[("runtimes", "nvidia", "path")])
    outcome = dj.apply(existing, state, {("debug",): True})
    assert outcome.config == {"registry-mirrors": ["https://m"], "runtimes": {"mine": {"path": "/x"}}, "debug": True}
    assert outcome.removed == ["runtimes.nvidia.path"]
    assert existing["runtimes"]["nvidia"] == {"path": "n"}, "the input must not be modified"


# ----------------------------------------------------------------------------- plan over files


def test_first_run_keeps_the_users_file_and_takes_ownership_of_its_keys(tmp_path):
    (tmp_path / "daemon.json").write_text('{"registry-mirrors": ["https://mirror.lab"]}', encoding="utf-8")
    result = dj.plan(params(tmp_path, [("logs", LOGS), ("nvidia", NVIDIA)]))
    assert result["config"]["registry-mirrors"] == ["https://mirror.lab"]
    assert result["config"]["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert "registry-mirrors" not in result["owned"]
    assert result["file_changed"]
    assert result["state_changed"]


def test_second_run_changes_nothing(tmp_path):
    p = params(tmp_path, [("logs", LOGS)], overrides={"data-root": "/srv/docker"})
    commit(tmp_path, dj.plan(p))
    again = dj.plan(p)
    assert not again["file_changed"]
    assert not again["state_changed"]


def test_removing_an_entry_removes_only_its_keys(tmp_path):
    (tmp_path / "daemon.json").write_text('{"registry-mirrors": ["https://mirror.lab"]}', encoding="utf-8")
    commit(tmp_path, dj.plan(params(tmp_path, [("logs", LOGS), ("nvidia", NVIDIA)])))
    # The user edits the file by hand between runs: their key stays.
    edited = json.loads((tmp_path / "daemon.json").read_text(encoding="utf-8"))
    edited["runtimes"]["crun"] = {"path": "/usr/bin/crun"}
    (tmp_path / "daemon.json").write_text(json.dumps(edited), encoding="utf-8")
    result = dj.plan(params(tmp_path, [("logs", LOGS)]))
    assert result["removed"] == ["runtimes.nvidia.args", "runtimes.nvidia.path"]
    assert result["config"]["runtimes"] == {"crun": {"path": "/usr/bin/crun"}}
    assert result["config"]["registry-mirrors"] == ["https://mirror.lab"]
    assert result["config"]["log-opts"] == LOGS["log-opts"]


def test_reformatted_but_equal_file_is_left_alone(tmp_path):
    p = params(tmp_path, [("logs", LOGS)])
    commit(tmp_path, dj.plan(p))
    (tmp_path / "daemon.json").write_text(json.dumps(LOGS), encoding="utf-8")
    assert not dj.plan(p)["file_changed"]


def test_drop_ins_merge_after_entries_and_before_overrides(tmp_path):
    fragments = tmp_path / "daemon.json.d"
    fragments.mkdir()
    (fragments / "b-cache.json").write_text('{"registry-mirrors": ["https://cache"], "debug": true}', encoding="utf-8")
    (fragments / "notes.txt").write_text("ignored", encoding="utf-8")
    p = params(tmp_path, [("logs", {"debug": False})], overrides={"debug": False}, fragments=True)
    result = dj.plan(p)
    assert result["sources"]["registry-mirrors"] == "b-cache"
    assert result["sources"]["debug"] == "container_runtime_daemon_config"
    assert result["config"]["debug"] is False


def test_removing_a_drop_in_removes_its_keys(tmp_path):
    fragments = tmp_path / "daemon.json.d"
    fragments.mkdir()
    (fragments / "cache.json").write_text('{"max-concurrent-downloads": 10}', encoding="utf-8")
    p = params(tmp_path, [("logs", LOGS)], fragments=True)
    commit(tmp_path, dj.plan(p))
    (fragments / "cache.json").unlink()
    result = dj.plan(p)
    assert "max-concurrent-downloads" not in result["config"]
    assert result["removed"] == ["max-concurrent-downloads"]


@pytest.mark.parametrize(("text", "message"), [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")])
def test_broken_existing_file_is_reported_not_overwritten(tmp_path, text, message):
    (tmp_path / "daemon.json").write_text(text, encoding="utf-8")
    with pytest.raises(dj.DaemonJsonError, match=message):
        dj.plan(params(tmp_path, [("logs", LOGS)]))


# ----------------------------------------------------------------------------- defaults versus explicit settings
# The container_runtime role passes its own choices (log rotation, live-restore, data-root when it
# picked one) as default entries; variables the user set, contributed entries, drop-ins and
# container_runtime_daemon_config are explicit.

LIVE = {"live-restore": True}


def write(tmp_path: Path, config: dict) -> None:
    (tmp_path / "daemon.json").write_text(json.dumps(config), encoding="utf-8")


def read(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "daemon.json").read_text(encoding="utf-8"))


def run(tmp_path: Path, p: dict) -> dict:
    """Plan and commit, as one module run does."""
    result = dj.plan(p)
    commit(tmp_path, result)
    return result


def test_default_applies_on_a_file_without_the_key(tmp_path):
    result = dj.plan(params(tmp_path, [("logs", LOGS), ("live", LIVE)], defaults={"logs", "live"}))
    assert result["config"] == {**LOGS, **LIVE}
    assert result["yielded"] == []
    assert "log-opts.max-size" in result["owned"]


def test_default_never_overwrites_a_hand_written_key(tmp_path):
    mine = {"log-driver": "local", "log-opts": {"max-size": "20m"}, "data-root": "/srv/own"}
    write(tmp_path, mine)
    entries = [("logs", LOGS), ("data-root", {"data-root": "/fast/docker"}), ("live", LIVE)]
    p = params(tmp_path, entries, defaults={"logs", "data-root", "live"})
    result = run(tmp_path, p)
    assert result["config"] == {**mine, **LIVE}
    assert sorted(result["yielded"]) == [
        "data-root: data-root written by hand",
        "logs: log-driver, log-opts written by hand",
    ]
    assert "data-root" not in result["owned"]
    assert not dj.plan(p)["file_changed"], "the second run must change nothing"


def test_default_is_all_or_nothing(tmp_path):
    # Only log-opts is the user's: the default's log-driver must not be added next to it either.
    write(tmp_path, {"log-opts": {"tag": "{{.Name}}"}})
    result = dj.plan(params(tmp_path, [("logs", LOGS)], defaults={"logs"}))
    assert result["config"] == {"log-opts": {"tag": "{{.Name}}"}}
    assert result["yielded"] == ["logs: log-opts written by hand"]


def test_default_yields_to_an_explicit_setting_of_one_of_its_keys(tmp_path):
    # journald rejects json-file's max-size/max-file: the default log rotation must go as a whole.
    result = dj.plan(params(tmp_path, [("logs", LOGS)], overrides={"log-driver": "journald"}, defaults={"logs"}))
    assert result["config"] == {"log-driver": "journald"}
    assert result["yielded"] == ["logs: log-driver set explicitly"]


def test_explicit_setting_wins_over_a_hand_written_key_and_gives_it_back(tmp_path):
    write(tmp_path, {"data-root": "/srv/own", "debug": True})
    explicit = params(tmp_path, [("data-root", {"data-root": "/fast/docker"})])
    first = run(tmp_path, explicit)
    assert first["config"]["data-root"] == "/fast/docker"
    assert first["taken_over"] == ['data-root: "/srv/own" -> data-root="/fast/docker" (data-root)']
    assert not dj.plan(explicit)["file_changed"]
    # The variable is removed again: the hand-written value comes back instead of the key vanishing.
    after = run(tmp_path, params(tmp_path, []))
    assert after["config"] == {"data-root": "/srv/own", "debug": True}
    assert after["restored"] == ["data-root"]
    assert after["removed"] == []
    assert not dj.plan(params(tmp_path, []))["file_changed"]


def test_explicit_setting_equal_to_the_hand_written_value_keeps_it_when_dropped(tmp_path):
    write(tmp_path, {"storage-driver": "vfs"})
    adopt = run(tmp_path, params(tmp_path, [("sandbox", {"storage-driver": "vfs"})]))
    assert adopt["taken_over"] == []
    assert adopt["owned"] == ["storage-driver"]
    dropped = run(tmp_path, params(tmp_path, []))
    assert dropped["config"] == {"storage-driver": "vfs"}, "a key the user wrote first is never removed"


def test_hand_edit_of_a_default_key_is_kept_and_the_rest_of_the_default_goes(tmp_path):
    p = params(tmp_path, [("logs", LOGS)], defaults={"logs"})
    run(tmp_path, p)
    edited = read(tmp_path)
    edited["log-driver"] = "journald"  # the admin switches logging by hand
    write(tmp_path, edited)
    result = run(tmp_path, p)
    assert result["config"] == {"log-driver": "journald"}, "json-file's options must not stay next to journald"
    assert result["released"] == ["log-driver"]
    assert result["removed"] == ["log-opts.max-file", "log-opts.max-size"]
    assert result["yielded"] == ["logs: log-driver written by hand"]
    assert not dj.plan(p)["file_changed"]


def test_hand_deleted_default_key_comes_back_once_and_then_stays(tmp_path):
    # Deleting is not writing: the default fills the key in again (its variable turns it off), and
    # the runs after that agree, rather than flipping between two files.
    p = params(tmp_path, [("live", LIVE)], defaults={"live"})
    run(tmp_path, p)
    write(tmp_path, {})
    result = run(tmp_path, p)
    assert result["config"] == LIVE
    assert result["yielded"] == []
    assert not dj.plan(p)["file_changed"]


def test_hand_edit_of_an_explicit_key_is_overwritten_and_reported(tmp_path):
    p = params(tmp_path, [("nvidia", NVIDIA)])
    run(tmp_path, p)
    edited = read(tmp_path)
    edited["runtimes"]["nvidia"]["path"] = "/opt/bin/nvidia-container-runtime"
    write(tmp_path, edited)
    result = run(tmp_path, p)
    assert result["config"]["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert result["taken_over"] == [
        'runtimes.nvidia.path: "/opt/bin/nvidia-container-runtime" -> '
        'runtimes.nvidia.path="nvidia-container-runtime" (nvidia)'
    ]
    # Disabling the toolkit later gives the admin's path back rather than deleting it.
    dropped = run(tmp_path, params(tmp_path, []))
    assert dropped["config"] == {"runtimes": {"nvidia": {"path": "/opt/bin/nvidia-container-runtime"}}}


def test_state_of_an_older_version_is_read_and_upgraded(tmp_path):
    write(tmp_path, LOGS)
    (tmp_path / "state.json").write_text(
        json.dumps({"owned": [["log-driver"], ["log-opts", "max-file"], ["log-opts", "max-size"]], "sources": {}}),
        encoding="utf-8",
    )
    p = params(tmp_path, [("logs", LOGS)], defaults={"logs"})
    result = dj.plan(p)
    assert result["yielded"] == [], "keys an older dlstack owned are still dlstack's"
    assert not result["file_changed"]
    assert result["state_changed"]
    commit(tmp_path, result)
    assert not dj.plan(p)["state_changed"]


def test_changed_keys_name_added_removed_and_changed_top_level_keys():
    before = {"a": 1, "b": {"x": 1}, "c": True}
    after = {"a": 1, "b": {"x": 2}, "d": None}
    assert dj.changed_keys(before, after) == ["b", "c", "d"]


@pytest.mark.parametrize("flag", ["yes", 1])
def test_default_flag_must_be_a_boolean(tmp_path, flag):
    p = params(tmp_path, [("logs", LOGS)])
    p["entries"][0]["default"] = flag
    with pytest.raises(dj.DaemonJsonError, match=r"default=.*expected true or false"):
        dj.plan(p)


# ----------------------------------------------------------------------------- the module through Ansible


def run_module(tmp_path: Path, args: dict, *, check: bool = False) -> dict:
    """Run the module with ansible's ad-hoc command on localhost; return its JSON result."""
    env = dict(
        os.environ,
        ANSIBLE_LIBRARY=str(MODULE_PATH.parent),
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    ansible = Path(sys.executable).parent / "ansible"
    command = [str(ansible), "localhost", "-c", "local", "-m", "dlstack_docker_daemon_json", "-a", json.dumps(args)]
    if check:
        command.append("--check")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, check=False)
    output = json.loads(proc.stdout)
    return output["plays"][0]["tasks"][0]["hosts"]["localhost"]


def module_args(tmp_path: Path, validate: str) -> dict:
    return {
        "path": str(tmp_path / "etc" / "daemon.json"),
        "state_file": str(tmp_path / "state" / "owned.json"),
        "fragments_dir": "",
        "entries": [{"name": "logs", "config": LOGS}],
        "validate": validate,
    }


def test_module_writes_validates_and_is_idempotent(tmp_path):
    validate = f"{sys.executable} -c 'import json,sys; json.load(open(sys.argv[1]))' %s"
    args = module_args(tmp_path, validate)
    checked = run_module(tmp_path, args, check=True)
    assert checked["changed"]
    assert not (tmp_path / "etc" / "daemon.json").exists(), "check mode must not write"
    first = run_module(tmp_path, args)
    assert first["changed"], first
    assert first["validated"]
    assert json.loads((tmp_path / "etc" / "daemon.json").read_text(encoding="utf-8")) == LOGS
    assert run_module(tmp_path, args)["changed"] is False


def test_module_keeps_the_old_file_when_validation_fails(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "daemon.json").write_text('{"debug": true}\n', encoding="utf-8")
    result = run_module(tmp_path, module_args(tmp_path, "false %s"))
    assert result.get("failed"), result
    assert "rejected the merged configuration" in result["msg"]
    assert (tmp_path / "etc" / "daemon.json").read_text(encoding="utf-8") == '{"debug": true}\n'
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["daemon.json"], "temporary file left behind"
