"""Preflight checks on structured role settings that argument specs cannot express.

python_env_environments (names that become directories, unique names and directories, paths the
role creates, hands over and deletes, profiles), the JupyterLab settings that refer to them,
gpu_verify_pythons and the cloud_vm access settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from file_module import load_file
from hypothesis import given
from hypothesis import strategies as st

from dlstack import inventory_checks as ic
from dlstack import python_env

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = ic.role_defaults(ROOT / "roles")
ENVS = "python_env_environments"


def problems(**variables: Any) -> list[str]:
    return ic.setting_problems(variables, DEFAULTS)


def envs(*entries: dict[str, Any], **variables: Any) -> list[str]:
    return problems(python_env_environments=list(entries), **variables)


def test_role_defaults_are_read_as_written():
    assert DEFAULTS["python_env"]["python_env_envs_dir"] == "/opt/dlstack/envs"
    assert set(DEFAULTS["python_env"]["python_env_profiles"]) == {
        "pytorch",
        "tensorflow",
        "jax",
        "huggingface",
        "vision",
    }


def test_nothing_set_nothing_reported():
    assert problems() == []


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["pytorch", "tf-2.18", "A_b.c", "x", "a" * 64, "2024.exp"])
def test_directory_names_pass(name):
    assert envs({"name": name}) == []


@pytest.mark.parametrize("name", ["../etc", "..", ".hidden", "a/b", "", None, "-x", "my env", "a" * 65, 7, "é"])
def test_unsafe_names_are_refused(name):
    (message,) = envs({"name": name})
    assert message == (
        f"{ENVS}[0].name = {name!r} is not valid: expected a directory name of 1-64 letters, digits, '.', '_' or "
        "'-' that starts with a letter or digit"
    )


def test_a_missing_name_is_refused():
    assert envs({"profile": "pytorch"})[0].startswith(f"{ENVS}[0].name = None is not valid")


def _role_accepts(name: str) -> bool:
    """What the role's own plan (dlstack/python_env.py) says about an entry with this name."""
    try:
        python_env.plan_environments([{"name": name, "state": "absent"}], {}, {}, {"envs_dir": "/opt/dlstack/envs"})
    except python_env.PlanError:
        return False
    return True


@given(st.text(alphabet="aZ09._-/ \\é", max_size=70))
def test_preflight_accepts_exactly_the_names_the_role_accepts(name):
    assert (envs({"name": name}) == []) == _role_accepts(name)


def test_a_name_given_twice_is_refused():
    assert envs({"name": "pytorch"}, {"name": "tf"}, {"name": "pytorch", "profile": "tensorflow"}) == [
        f"{ENVS}: the name 'pytorch' is given by entries 0 and 2: expected each environment to have a name of its own"
    ]


def test_names_that_differ_only_in_case_share_a_kernel():
    (message,) = envs({"name": "PyTorch"}, {"name": "pytorch"})
    assert message == (
        f"{ENVS}: the names PyTorch, pytorch (entries 0 and 1) differ only in case, so they share the Jupyter "
        "kernel dlstack-pytorch: expected names that differ in more than case"
    )


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("path", ["/data/envs/torch", "/home/alice/envs/torch", "/srv/ml/tf", "/opt/dlstack/envs/x"])
def test_directories_of_their_own_pass(path):
    assert envs({"name": "a", "path": path}) == []


@pytest.mark.parametrize(
    ("path", "accepted"),
    [
        ("envs/torch", "an absolute path of letters, digits"),
        ("/opt/../etc", "no '.' or '..' parts"),
        ("/opt/my env", "no spaces"),
        ("/", "a directory of its own, not the system directory or home directory /"),
        ("/usr", "not the system directory or home directory /usr"),
        ("/usr/local/", "not the system directory or home directory /usr/local"),
        ("/var/lib", "not the system directory or home directory /var/lib"),
        ("/home/alice", "not the system directory or home directory /home/alice"),
        ("/proc/envs", "a directory outside /proc"),
        ("/boot/efi/x", "a directory outside /boot"),
        ("/etc/dlstack", "a directory that does not contain the role's own python_env_state_dir"),
        ("/opt/dlstack/envs", "does not contain the role's own python_env_envs_dir"),
        ("/opt/miniforge3", "does not contain the role's own python_env_conda_prefix"),
        ("/usr/local/share/jupyter", "does not contain the role's own python_env_kernels_dir"),
    ],
)
def test_unsafe_directories_are_refused(path, accepted):
    (message,) = envs({"name": "a", "path": path})
    assert message.startswith(f"{ENVS}[0].path = {path!r} is not valid: expected ")
    assert accepted in message


def test_the_role_directories_follow_the_inventory():
    assert envs({"name": "a", "path": "/srv/envs"}, python_env_envs_dir="/srv/envs/all")[0].endswith(
        "does not contain the role's own python_env_envs_dir"
    )
    assert envs({"name": "a", "path": "/opt/dlstack/envs"}, python_env_envs_dir="/srv/envs") == []


def test_an_explicit_path_may_not_be_another_environments_directory():
    assert envs({"name": "a"}, {"name": "b", "path": "/opt/dlstack/envs/a"}) == [
        f"{ENVS}: entries 0 and 1 have the directory /opt/dlstack/envs/a: expected each environment to have a "
        "directory of its own"
    ]


def test_an_environment_may_not_contain_another():
    assert envs({"name": "a", "path": "/data/envs"}, {"name": "b", "path": "/data/envs/b"}) == [
        f"{ENVS}[1] has the directory /data/envs/b, inside /data/envs of {ENVS}[0]: expected environments that "
        "do not contain one another"
    ]


def test_a_repeated_name_is_reported_once_not_again_as_a_shared_directory():
    assert len(envs({"name": "a"}, {"name": "a"})) == 1


# ----------------------------------------------------------------------------- other keys


def test_an_unknown_profile_gets_a_suggestion():
    assert envs({"name": "a", "profile": "pytroch"}) == [
        f"{ENVS}[0].profile = 'pytroch' is not valid: expected a profile of python_env_profiles: huggingface, "
        "jax, pytorch, tensorflow, vision (did you mean pytorch?)"
    ]


def test_profiles_of_the_inventory_count():
    custom = {"vision": {"frameworks": ["torch"], "packages": ["timm"]}}
    assert envs({"name": "a", "profile": "vision"}, python_env_profiles=custom) == []
    (message,) = envs({"name": "a", "profile": "pytorch"}, python_env_profiles=custom)
    assert "expected a profile of python_env_profiles: vision" in message


@pytest.mark.parametrize("python", ["3.12", "3.9", None, ""])
def test_python_versions_pass(python):
    assert envs({"name": "a", "python": python}) == []


@pytest.mark.parametrize("python", [3.1, "3", "python3.12", "2.7"])
def test_python_versions_must_be_quoted_3_x(python):
    (message,) = envs({"name": "a", "python": python})
    assert message == (
        f"{ENVS}[0].python = {python!r} is not valid: expected a Python version 3.X such as '3.12', quoted, since "
        "YAML reads an unquoted 3.10 as the number 3.1"
    )


def test_frameworks_are_torch_tensorflow_or_jax():
    assert envs({"name": "a", "frameworks": ["torch", "jax"]}) == []
    assert envs({"name": "a", "frameworks": ["torch", "mxnet"]}) == [
        f"{ENVS}[0].frameworks = ['torch', 'mxnet'] is not valid: expected a list of torch, tensorflow, jax"
    ]


def test_entries_of_the_wrong_type_are_left_to_the_type_check():
    assert envs("pytorch", {"name": "a"}) == []
    assert problems(python_env_environments="pytorch") == []


# ----------------------------------------------------------------------------- JupyterLab


def test_jupyterlab_must_run_from_a_present_environment():
    on = {"python_env_jupyterlab_enabled": True, "python_env_jupyterlab_environment": "lab"}
    assert envs({"name": "lab"}, **on) == []
    assert envs({"name": "lab", "state": "absent"}, {"name": "tf"}, **on) == [
        "python_env_jupyterlab_environment = 'lab' is not valid: expected the name of a present environment of "
        f"{ENVS} (tf)"
    ]
    assert envs({"name": "other"}, **(on | {"python_env_jupyterlab_enabled": "false"})) == []


def test_jupyterlab_users_need_a_user_and_a_port_of_their_own():
    users = [{"user": "alice", "port": 8888}, {"user": "bob", "port": 8888}, {"user": "alice", "port": 70000}]
    assert problems(python_env_jupyterlab_users=users) == [
        "python_env_jupyterlab_users[2] = {'user': 'alice', 'port': 70000} is not valid: expected {user: a user "
        "name, port: a number 1-65535}",
        "python_env_jupyterlab_users: entries 0 and 2 have the user alice: expected each JupyterLab service to have "
        "a user of its own",
        "python_env_jupyterlab_users: entries 0 and 1 have the port 8888: expected each JupyterLab service to have "
        "a port of its own",
    ]


# ----------------------------------------------------------------------------- gpu_verify_pythons


def test_the_gpu_verify_name_rule_is_the_roles():
    tasks = (ROOT / "roles/gpu_verify/tasks/main.yml").read_text(encoding="utf-8")
    assert f"is match('{ic.GPU_VERIFY_NAME_RE.pattern}')" in tasks


def test_gpu_verify_entries_pass():
    entries = [
        {"name": "system", "python": "/usr/bin/python3"},
        {"name": "pt", "python": "/e/bin/python", "frameworks": ["torch"]},
    ]
    assert problems(gpu_verify_pythons=entries) == []


@pytest.mark.parametrize(
    "entry",
    [{"name": "a/b", "python": "/usr/bin/python3"}, {"name": "a"}, {"name": "a", "python": "p", "frameworks": ["jax"]}],
)
def test_bad_gpu_verify_entries_are_refused(entry):
    (message,) = problems(gpu_verify_pythons=[entry])
    assert message.startswith(f"gpu_verify_pythons[0] = {entry!r} is not valid: expected {{name: letters, digits")


def test_gpu_verify_names_are_unique():
    entries = [{"name": "pt", "python": "/a/bin/python"}, {"name": "pt", "python": "/b/bin/python"}]
    assert problems(gpu_verify_pythons=entries) == [
        "gpu_verify_pythons: the name 'pt' is given by entries 0 and 1: expected each environment to have a name "
        "of its own (it names its report)"
    ]


# ----------------------------------------------------------------------------- cloud_vm


@pytest.mark.parametrize("cidr", ["", "203.0.113.7/32", "10.0.0.0/8", "0.0.0.0/0"])
def test_ssh_ranges_the_role_accepts_pass(cidr):
    # 0.0.0.0/0 passes: the role accepts it (it has no flag to confirm an open SSH port), and
    # playbooks/cloud.yml runs this play after the role launched the hosts.
    assert problems(cloud_vm_ssh_cidr=cidr) == []


@pytest.mark.parametrize("cidr", ["203.0.113.7/33", "my office", "2001:db8::/32"])
def test_ssh_ranges_the_role_refuses_are_refused(cidr):
    (message,) = problems(cloud_vm_ssh_cidr=cidr)
    assert message.startswith(f"cloud_vm_ssh_cidr: {cidr!r} is ")


def test_run_and_project_names_follow_the_role():
    assert problems(cloud_vm_run="demo", cloud_vm_project="dlstack") == []
    assert problems(cloud_vm_run="Demo_1") == [
        "cloud_vm_run: 'Demo_1' is not accepted; use 1-30 lowercase letters, digits or dashes, starting with a letter"
    ]


# ----------------------------------------------------------------------------- documented examples


def _yaml_blocks(path: Path) -> list[Any]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), re.S)]


def test_the_documented_environments_pass():
    examples = [b for p in ("roles/python_env/README.md", "docs/python_env.md") for b in _yaml_blocks(ROOT / p)]
    declared = [b for b in examples if isinstance(b, dict) and ENVS in b]
    assert declared
    for block in declared:
        variables = {k: v for k, v in block.items() if k.startswith(("python_env_", "gpu_verify_"))}
        assert problems(**variables) == [], block


def test_the_sandbox_inventory_passes():
    variables: dict[str, Any] = {}
    for path in sorted((ROOT / "inventories/sandbox/group_vars/all").glob("*.yml")):
        variables |= yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    assert variables[ENVS]
    assert problems(**variables) == []


# --- package_cache (what argument_specs cannot say)

PACKAGE_CACHE_DEFAULTS = DEFAULTS["package_cache"]


def test_the_package_cache_defaults_pass():
    assert ic.package_cache_problems({}, PACKAGE_CACHE_DEFAULTS) == []


APT_PORT_RANGE = "expected a port from 1 to 32767 (apt-cacher-ng cannot listen above 32767)"
URL = "expected an http:// or https:// index URL"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"package_cache_apt_port": 43142}, f"package_cache_apt_port = 43142 is not valid: {APT_PORT_RANGE}"),
        ({"package_cache_pypi_port": 0}, "package_cache_pypi_port = 0 is not valid: expected a port from 1 to 65535"),
        (
            {"package_cache_pypi_port": "web"},
            "package_cache_pypi_port = 'web' is not valid: expected a port from 1 to 65535",
        ),
        (
            {"package_cache_pypi_port": 3142},
            "package_cache_apt_port and package_cache_pypi_port are both 3142: expected two different ports",
        ),
        (
            {"package_cache_pypi_index_url": "pypi.org/simple"},
            f"package_cache_pypi_index_url = 'pypi.org/simple' is not valid: {URL}",
        ),
        (
            {"package_cache_pypi_extra_index_urls": ["https://ok/", "ftp://x"]},
            f"package_cache_pypi_extra_index_urls[1] = 'ftp://x' is not valid: {URL}",
        ),
    ],
)
def test_package_cache_settings_that_cannot_work_are_named(variables, message):
    assert ic.package_cache_problems(variables, PACKAGE_CACHE_DEFAULTS) == [message]


@pytest.mark.parametrize("size", [0, -1, "big", True])
def test_a_package_cache_size_must_be_above_zero(size):
    assert ic.package_cache_problems({"package_cache_pypi_size_gib": size}, PACKAGE_CACHE_DEFAULTS) == [
        f"package_cache_pypi_size_gib = {size!r} is not valid: expected a number of GiB above 0"
    ]


def test_the_roles_filter_is_the_preflights_check():
    # roles/package_cache/tasks/main.yml asks this filter first, for the role used without the preflight
    plugin = load_file("dlstack_package_cache_filter", ROOT / "plugins/filter/dlstack_package_cache.py")
    check = plugin.FilterModule().filters()["dlstack_package_cache_problems"]
    settings = {**PACKAGE_CACHE_DEFAULTS, "package_cache_apt_port": 43142}
    assert (
        check(settings)
        == ic.package_cache_problems(settings, {})
        == [f"package_cache_apt_port = 43142 is not valid: {APT_PORT_RANGE}"]
    )
    assert check(PACKAGE_CACHE_DEFAULTS) == []


def test_the_same_port_is_fine_when_one_cache_is_off():
    variables = {"package_cache_pypi_port": 3142, "package_cache_pypi": False}
    assert ic.package_cache_problems(variables, PACKAGE_CACHE_DEFAULTS) == []
