"""Inventory checks for the preflight play, run per host before any change.

Role variables are checked against the roles' argument specs (unknown names get a "did you
mean", values their types); the ``dlstack_*`` stack variables against the closed list in
``dlstack/data/stack_variables.yml`` and the rule each entry names; structured role settings
(environments, verification interpreters, cloud access) against what the roles need and argument
specs cannot say. Every message names the variable, the value and what is accepted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from dlstack import cloud, python_env
from dlstack.data import load, ubuntu_releases
from dlstack.hostfacts import is_system_mount
from dlstack.matrix import KERNEL_MODULES, TORCH_COMPANIONS, parse_cc, parse_driver_version, parse_major_minor
from dlstack.resolver import FRAMEWORK_ALIASES

# what scripts/gpu_verify.py checks (--require=); JAX environments are built but not yet verified
VERIFIED_FRAMEWORKS = ("torch", "tensorflow")


def role_specs(roles_dir: Path) -> dict[str, dict[str, Any]]:
    """Map each role name to the options of all entry points in its ``meta/argument_specs.yml``."""
    specs: dict[str, dict[str, Any]] = {}
    for spec_file in sorted(roles_dir.glob("*/meta/argument_specs.yml")):
        data = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        options: dict[str, Any] = {}
        for entry in (data.get("argument_specs") or {}).values():
            options.update((entry or {}).get("options") or {})
        specs[spec_file.parent.parent.name] = options
    return specs


def role_options(roles_dir: Path) -> dict[str, set[str]]:
    """Map each role name to the option names its ``meta/argument_specs.yml`` declares."""
    return {role: set(options) for role, options in role_specs(roles_dir).items()}


def unknown_variables(variables: Iterable[str], options: Mapping[str, set[str]]) -> list[str]:
    """Messages for variables that carry a role's prefix but that no role declares."""
    known = set().union(*options.values()) if options else set()
    messages = []
    for name in sorted(set(variables)):
        role = next((r for r in options if name.startswith(f"{r}_")), None)
        if role is None or name in known or _is_contribution(name, options[role]):
            continue
        close = difflib.get_close_matches(name, sorted(options[role]), n=3, cutoff=0.8)
        hint = (
            f"; did you mean {' or '.join(close)}?"
            if close
            else f"; role {role} accepts: {', '.join(sorted(options[role]))}"
        )
        messages.append(f"variable {name} is not a setting of role {role}{hint}")
    return messages


def _is_contribution(name: str, role_options: set[str]) -> bool:
    """``<option>__<entry>``: a named entry contributed to a role's mergeable setting (DebOps style)."""
    base, sep, entry = name.partition("__")
    return bool(sep and entry) and base in role_options


def check_release(distribution: str, version: str) -> list[str]:
    """Messages when the host is not a supported Ubuntu release."""
    supported = sorted(ubuntu_releases())
    if distribution != "Ubuntu" or version not in supported:
        return [
            f"host runs {distribution} {version}; dlstack supports Ubuntu {', '.join(supported)}. "
            "Upgrade the host or remove it from the inventory."
        ]
    return []


# Keys of an argument_specs option that the validator understands; 'default' and 'required' are
# left out on purpose: a spec's default documents the role's default, and whether a setting is
# required is the role's business when it runs.
_VALIDATOR_KEYS = ("type", "elements", "choices", "options", "no_log", "aliases")


def _validator_option(option: Mapping[str, Any]) -> dict[str, Any]:
    spec = {key: option[key] for key in _VALIDATOR_KEYS if key in option}
    if "options" in spec:
        spec["options"] = {name: _validator_option(sub) for name, sub in spec["options"].items()}
    return spec


def _expected(option: Mapping[str, Any]) -> str:
    kind = option.get("type", "str")
    text = f"a {kind}" + (f" of {option['elements']}" if "elements" in option else "")
    if "choices" in option:
        text += f" among {', '.join(map(str, option['choices']))}"
    return text


def _plain(value: Any) -> Any:
    """The value as plain dicts and lists: the validator deep-copies what it checks, and ansible-core
    2.19's lazy containers copy their whole templating context with them (2.3 s a run, measured)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def type_problems(variables: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Messages for inventory variables whose values do not fit the role's argument spec."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # controller-only import

    messages = []
    for options in specs.values():
        for name, option in options.items():
            if name not in variables:
                continue
            value = _plain(variables[name])
            result = ArgumentSpecValidator({name: _validator_option(option)}).validate({name: value})
            if result.error_messages:
                reason = "; ".join(result.error_messages)
                messages.append(f"{name} = {value!r} is not valid: expected {_expected(option)} ({reason})")
    return messages


# ----------------------------------------------------------------------------- stack variables
# The closed list of dlstack_* variables lives in dlstack/data/stack_variables.yml; each entry
# names one of the rules below. A rule returns None for an accepted value, else what is accepted.

Rule = Callable[[Any], "str | None"]
STACK_PREFIX = "dlstack_"
STACK_DATA = "stack_variables"
# Versions are strings: YAML reads an unquoted 12.10 as the number 12.1.
_QUOTE_HINT = "quoted, since YAML reads an unquoted {} as the number {}"
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _parses(parse: Callable[[str], Any], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _rule_string(value: Any) -> str | None:
    return None if _is_str(value) else "a string"


def _rule_non_empty_string(value: Any) -> str | None:
    return None if _is_str(value) and value.strip() else "a non-empty string"


def _rule_gpu_model(value: Any) -> str | None:
    if _is_str(value) and value.strip():
        return None
    return "a non-empty GPU model name such as 'NVIDIA RTX 6000 Ada Generation' (leave it unset to detect the GPU)"


def _rule_compute_capability(value: Any) -> str | None:
    # A number is fine here: compute capabilities have one minor digit, so 8.6 reads back as "8.6".
    text = str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    return None if _parses(parse_cc, text) else "a compute capability MAJOR.MINOR such as '8.6' or '12.0'"


def _rule_driver(value: Any) -> str | None:
    accepted = "a driver branch of three digits such as '580' or a driver version such as '580.65.06'"
    if isinstance(value, int) and not isinstance(value, bool):
        return None if 100 <= value <= 999 else accepted
    if not _is_str(value):
        return accepted + ", quoted"
    text = value.strip()
    return None if re.fullmatch(r"\d{3}", text) or _parses(parse_driver_version, text) else accepted


def _rule_kernel_modules(value: Any) -> str | None:
    if _is_str(value) and value.strip().lower() in KERNEL_MODULES:  # the resolver's reading
        return None
    return f"{' or '.join(KERNEL_MODULES)} (leave it unset to let the resolver choose)"


def _rule_cuda(value: Any) -> str | None:
    if _is_str(value) and _parses(parse_major_minor, value):
        return None
    return f"a CUDA version MAJOR.MINOR such as '12.8', {_QUOTE_HINT.format('12.10', '12.1')}"


def _requirement_problem(spec: Any) -> str | None:
    if not _is_str(spec):
        return f"{spec!r} is not a string"
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        return f"{spec!r} is not a pip requirement ({str(exc).splitlines()[0]})"
    if requirement.name.lower() not in FRAMEWORK_ALIASES and requirement.name.lower() not in TORCH_COMPANIONS:
        return f"{spec!r} names {requirement.name!r}, not a framework dlstack resolves"
    return None


def _rule_frameworks(value: Any) -> str | None:
    accepted = (
        "a list of pip requirements for torch, tensorflow or jax such as ['torch==2.9.*', 'tensorflow>=2.18', "
        "'jax[cuda13]'], and torchvision or torchaudio (a torch that has one)"
    )
    if not _is_list(value):
        return accepted
    problems = [p for p in map(_requirement_problem, value) if p]
    return f"{accepted} ({'; '.join(problems)})" if problems else None


def _rule_mapping(value: Any) -> str | None:
    return None if isinstance(value, Mapping) else "a mapping (the preflight play sets it; do not set it by hand)"


def _rule_host_pattern(value: Any) -> str | None:
    accepted = "a host pattern (a group or host name, or a list of them)"
    if _is_str(value):
        return None if value.strip() else accepted
    return None if _is_list(value) and value and all(_is_str(v) and v.strip() for v in value) else accepted


def _rule_environment(value: Any) -> str | None:
    accepted = "a mapping of environment variable names to strings, such as {'https_proxy': 'http://proxy.lab:3128'}"
    if not isinstance(value, Mapping):
        return accepted
    fine = all(_is_str(k) and _ENV_NAME_RE.match(k) and _is_str(v) for k, v in value.items())
    return None if fine else accepted


def _rule_boolean(value: Any) -> str | None:
    from ansible.module_utils.parsing.convert_bool import boolean  # controller-only import

    try:
        boolean(value, strict=True)
    except TypeError:
        return "true or false"
    return None


def _rule_path(value: Any) -> str | None:
    fine = _is_str(value) and value.strip() and not any(c in value for c in "\0\n")
    return None if fine else "a non-empty path"


def _rule_cloud_provider(value: Any) -> str | None:
    return None if value in cloud.PROVIDERS else " or ".join(cloud.PROVIDERS)


def _rule_count(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 0 else "a number of 0 or more"
    return None if _is_str(value) and value.strip().isdigit() else "a number of 0 or more"


VERIFY_WHEN = ("changed", "always", "never")


def _rule_verify_when(value: Any) -> str | None:
    return None if value in VERIFY_WHEN else f"one of {', '.join(VERIFY_WHEN)}"


STACK_RULES: dict[str, Rule] = {
    "string": _rule_string,
    "non_empty_string": _rule_non_empty_string,
    "gpu_model": _rule_gpu_model,
    "compute_capability": _rule_compute_capability,
    "driver": _rule_driver,
    "kernel_modules": _rule_kernel_modules,
    "cuda": _rule_cuda,
    "frameworks": _rule_frameworks,
    "mapping": _rule_mapping,
    "host_pattern": _rule_host_pattern,
    "environment": _rule_environment,
    "boolean": _rule_boolean,
    "verify_when": _rule_verify_when,
    "path": _rule_path,
    "cloud_provider": _rule_cloud_provider,
    "count": _rule_count,
}


def stack_variables(data: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The stack variables and the rule each one's value must meet (``dlstack/data/stack_variables.yml``)."""
    entries = (data if data is not None else load(STACK_DATA))["variables"]
    rules: dict[str, str] = {}
    for name, entry in entries.items():
        rule = str((entry or {}).get("accepts", ""))
        if not name.startswith(STACK_PREFIX) or rule not in STACK_RULES:
            raise ValueError(
                f"{STACK_DATA}.yml: variables.{name}: expected a {STACK_PREFIX}* name whose accepts is one of "
                f"{', '.join(sorted(STACK_RULES))}, got accepts {rule!r}"
            )
        rules[name] = rule
    return rules


def _suggestions(name: str, known: Collection[str]) -> list[str]:
    """Known names close to ``name``: similar spelling, or sharing its first word after the prefix."""
    suffix = name.removeprefix(STACK_PREFIX)
    first = suffix.split("_", 1)[0]
    close = set(difflib.get_close_matches(name, known, n=3, cutoff=0.85))
    close |= {k for k in known if difflib.SequenceMatcher(None, suffix, k.removeprefix(STACK_PREFIX)).ratio() >= 0.75}
    close |= {k for k in known if first and k.removeprefix(STACK_PREFIX).split("_", 1)[0] == first}
    return sorted(close, key=lambda k: (-difflib.SequenceMatcher(None, name, k).ratio(), k))[:3]


def unknown_stack_variables(variables: Iterable[str], known: Collection[str]) -> list[str]:
    """Messages for ``dlstack_*`` names that are not stack variables, with a "did you mean"."""
    messages = []
    for name in sorted({v for v in variables if v.startswith(STACK_PREFIX) and v not in known}):
        close = _suggestions(name, known)
        hint = f"did you mean {' or '.join(close)}?" if close else f"the stack variables are {', '.join(sorted(known))}"
        messages.append(f"variable {name} is not a dlstack stack variable; {hint}")
    return messages


def stack_value_problems(variables: Mapping[str, Any], rules: Mapping[str, str]) -> list[str]:
    """Messages for stack variables whose values their rule does not accept."""
    messages = []
    for name, rule in sorted(rules.items()):
        if name not in variables:
            continue
        value = variables[name]
        accepted = STACK_RULES[rule](value)
        if accepted is not None:
            messages.append(f"{name} = {value!r} is not valid: expected {accepted}")
    return messages


def stack_problems(variables: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> list[str]:
    """Unknown ``dlstack_*`` names, then stack values that do not fit: everything to fix, at once."""
    rules = stack_variables(data)
    return unknown_stack_variables(list(variables), rules) + stack_value_problems(variables, rules)


# ----------------------------------------------------------------------------- structured role settings
# What argument_specs cannot say: names that become directory and file names, uniqueness across
# entries, paths the role creates, hands over and deletes, and references between settings.


def role_defaults(roles_dir: Path) -> dict[str, dict[str, Any]]:
    """Each role's ``defaults/main.yml`` as written (a Jinja default stays a string)."""
    return {
        path.parent.parent.name: yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for path in sorted(roles_dir.glob("*/defaults/main.yml"))
    }


def _setting(variables: Mapping[str, Any], defaults: Mapping[str, Any], name: str) -> Any:
    return variables[name] if name in variables else defaults.get(name)


def _entries(value: Any) -> list[tuple[int, Mapping[str, Any]]]:
    """The mapping entries of a list setting (the type check reports the rest)."""
    return [(i, e) for i, e in enumerate(value) if isinstance(e, Mapping)] if _is_list(value) else []


def _duplicates(keys: Sequence[tuple[int, str]]) -> dict[str, list[int]]:
    """Keys given by more than one entry, with the entries' indexes."""
    seen: dict[str, list[int]] = {}
    for index, key in keys:
        seen.setdefault(key, []).append(index)
    return {key: indexes for key, indexes in seen.items() if len(indexes) > 1}


def _entries_text(indexes: Sequence[int]) -> str:
    return " and ".join(str(i) for i in indexes)


# --- python_env_environments

ENVS = python_env.VAR
# Directories an environment's path may never be: the role creates it, gives it (recursively) to
# the entry's owner and group, and deletes it for `state: absent`.
SYSTEM_DIRS = frozenset(
    {
        *("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt"),
        *("/opt", "/proc", "/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/usr", "/var"),
        *("/tmp", "/var/tmp"),  # noqa: S108 - names in a deny list; nothing is written there
        *("/usr/bin", "/usr/include", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local", "/usr/local/bin"),
        *("/usr/local/lib", "/usr/local/share", "/usr/sbin", "/usr/share", "/usr/src"),
        *("/var/cache", "/var/lib", "/var/log", "/var/opt", "/var/spool", "/opt/dlstack"),
    }
)
# Pseudo and boot filesystems: no environment belongs anywhere under them.
NO_ENVS_UNDER = ("/proc", "/sys", "/dev", "/run", "/boot")
# The role's own directories: an environment at or above one of them would swallow it.
PYTHON_ENV_DIRS = (
    "python_env_envs_dir",
    "python_env_state_dir",
    "python_env_tools_dir",
    "python_env_conda_prefix",
    "python_env_kernels_dir",
    "python_env_download_dir",
)
_PATH_PART_RE = re.compile(r"^[A-Za-z0-9_.+@-]+$")
_NAME_ACCEPTED = "a directory name of 1-64 letters, digits, '.', '_' or '-' that starts with a letter or digit"
_PATH_ACCEPTED = "an absolute path of letters, digits, '.', '_', '+', '@' or '-' (no spaces, no '.' or '..' parts)"


def _path_parts(path: str) -> list[str] | None:
    """The parts of an absolute, clean path; None when it is not one."""
    if not path.startswith("/"):
        return None
    parts = path.rstrip("/").split("/")[1:] if path != "/" else []
    if any(p in ("", ".", "..") or not _PATH_PART_RE.match(p) for p in parts):
        return None
    return parts


def _inside(path: str, parent: str) -> bool:
    """``path`` is ``parent`` or below it (both clean absolute paths)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def environment_path_problem(path: str, role_dirs: Mapping[str, str]) -> str | None:
    """What is wrong with an environment directory, or None."""
    parts = _path_parts(path)
    if parts is None:
        return _PATH_ACCEPTED
    clean = "/" + "/".join(parts)
    if clean in SYSTEM_DIRS or (len(parts) == 2 and parts[0] == "home"):
        return f"a directory of its own, not the system directory or home directory {clean}"
    under = next((d for d in NO_ENVS_UNDER if _inside(clean, d)), None)
    if under:
        return f"a directory outside {under}"
    swallowed = [name for name, d in role_dirs.items() if _path_parts(d) is not None and _inside(d, clean)]
    if swallowed:
        return f"a directory that does not contain the role's own {', '.join(swallowed)}"
    return None


def _env_name(value: Any) -> str | None:
    return None if _is_str(value) and python_env._NAME_RE.match(value) else _NAME_ACCEPTED  # the role's own rule


def _env_python(value: Any) -> str | None:
    if value in (None, "") or (_is_str(value) and python_env._PYTHON_RE.match(value)):
        return None
    return f"a Python version 3.X such as '3.12', {_QUOTE_HINT.format('3.10', '3.1')}"


def _env_profile(value: Any, profiles: Sequence[str]) -> str | None:
    if value in (None, "") or value in profiles:
        return None
    close = difflib.get_close_matches(str(value), profiles, n=1, cutoff=0.6)
    return f"a profile of python_env_profiles: {', '.join(profiles)}" + (
        f" (did you mean {close[0]}?)" if close else ""
    )


def _env_frameworks(value: Any) -> str | None:
    if not _is_list(value) or all(f in python_env.FRAMEWORKS for f in value):
        return None  # not a list: the type check says so
    return f"a list of {', '.join(python_env.FRAMEWORKS)}"


def _environment_entry_problems(index: int, env: Mapping[str, Any], profiles: Sequence[str]) -> list[str]:
    checks: dict[str, Rule] = {
        "name": _env_name,
        "python": _env_python,
        "profile": lambda value: _env_profile(value, profiles),
        "frameworks": _env_frameworks,
    }
    return [
        f"{ENVS}[{index}].{key} = {env.get(key)!r} is not valid: expected {accepted}"
        for key, check in checks.items()
        if (accepted := check(env.get(key))) is not None
    ]


def _environment_paths(
    entries: Sequence[tuple[int, Mapping[str, Any]]], envs_dir: str, role_dirs: Mapping[str, str]
) -> list[tuple[int, str]]:
    """The directory of each entry, as the role computes it (``path``, else envs_dir/name).

    Left out: entries whose name or path is already reported, and repeats of a name (reported too).
    """
    paths: dict[str, tuple[int, str]] = {}
    for index, env in entries:
        name, path = env.get("name"), env.get("path")
        if _env_name(name) is not None or name in paths:
            continue
        if path in (None, ""):
            path = f"{envs_dir.rstrip('/')}/{name}"
        elif not _is_str(path) or environment_path_problem(path, role_dirs):
            continue
        paths[name] = (index, path.rstrip("/"))
    return list(paths.values())


def _clashes(setting: str, key: str, values: Sequence[tuple[int, str]], expected: str) -> list[str]:
    """One message for each value of ``key`` that more than one entry of ``setting`` gives."""
    return [
        f"{setting}: the {key} {value!r} is given by entries {_entries_text(indexes)}: {expected}"
        for value, indexes in _duplicates(values).items()
    ]


def _name_clashes(entries: Sequence[tuple[int, Mapping[str, Any]]]) -> list[str]:
    names = [(i, e["name"]) for i, e in entries if _is_str(e.get("name"))]
    messages = _clashes(ENVS, "name", names, "expected each environment to have a name of its own")
    spellings: dict[str, set[str]] = {}
    for _, name in names:
        spellings.setdefault(name.lower(), set()).add(name)
    for kernel, same in spellings.items():
        if len(same) > 1:
            indexes = [i for i, name in names if name in same]
            messages.append(
                f"{ENVS}: the names {', '.join(sorted(same))} (entries {_entries_text(indexes)}) differ only in case, "
                f"so they share the Jupyter kernel dlstack-{kernel}: expected names that differ in more than case"
            )
    return messages


def _path_clashes(paths: Sequence[tuple[int, str]]) -> list[str]:
    messages = [
        f"{ENVS}: entries {_entries_text(indexes)} have the directory {path}: expected each environment "
        "to have a directory of its own"
        for path, indexes in _duplicates(paths).items()
    ]
    messages += [
        f"{ENVS}[{inner}] has the directory {inner_path}, inside {outer_path} of {ENVS}[{outer}]: expected "
        "environments that do not contain one another"
        for outer, outer_path in paths
        for inner, inner_path in paths
        if inner_path != outer_path and _inside(inner_path, outer_path)
    ]
    return messages


def _truthy(value: Any) -> bool:
    """Ansible's reading of a boolean setting (``yes``, ``"false"``, 1, ...); the type check reports others."""
    from ansible.module_utils.parsing.convert_bool import boolean  # controller-only import

    return bool(boolean(value, strict=False))


def _port(value: Any) -> bool:
    """A TCP port, as the role reads it (``| int``)."""
    return not isinstance(value, bool) and str(value).isdigit() and 0 < int(value) < 65536


def _jupyterlab_user_problems(users: Sequence[tuple[int, Mapping[str, Any]]]) -> list[str]:
    messages = [
        f"python_env_jupyterlab_users[{index}] = {dict(entry)!r} is not valid: expected "
        "{user: a user name, port: a number 1-65535}"
        for index, entry in users
        if not (_is_str(entry.get("user")) and entry["user"].strip() and _port(entry.get("port")))
    ]
    for key in ("user", "port"):
        keys = [(i, str(e[key])) for i, e in users if e.get(key) is not None]
        messages += [
            f"python_env_jupyterlab_users: entries {_entries_text(indexes)} have the {key} {value}: expected "
            f"each JupyterLab service to have a {key} of its own"
            for value, indexes in _duplicates(keys).items()
        ]
    return messages


def _jupyterlab_environment_problem(environment: Any, entries: Sequence[tuple[int, Mapping[str, Any]]]) -> list[str]:
    present = sorted({str(e.get("name")) for _, e in entries if e.get("state", "present") == "present"})
    if environment in present:
        return []
    return [
        f"python_env_jupyterlab_environment = {environment!r} is not valid: expected the name of a present "
        f"environment of {ENVS} ({', '.join(present) or 'none declared'})"
    ]


def _environment_path_problems(
    entries: Sequence[tuple[int, Mapping[str, Any]]], role_dirs: Mapping[str, str]
) -> list[str]:
    messages = []
    for index, env in entries:
        path = env.get("path")
        if path in (None, ""):
            continue
        problem = environment_path_problem(path, role_dirs) if _is_str(path) else _PATH_ACCEPTED
        if problem:
            messages.append(f"{ENVS}[{index}].path = {path!r} is not valid: expected {problem}")
    return messages


def python_env_problems(variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Messages for ``python_env_environments`` and the JupyterLab settings that refer to it."""

    def setting(name: str) -> Any:
        return _setting(variables, defaults, name)

    entries = _entries(setting(ENVS) or [])
    profiles = setting("python_env_profiles")
    profile_names = sorted(profiles) if isinstance(profiles, Mapping) else []
    role_dirs = {name: str(setting(name) or "") for name in PYTHON_ENV_DIRS}
    messages = [m for i, e in entries for m in _environment_entry_problems(i, e, profile_names)]
    messages += _environment_path_problems(entries, role_dirs)
    messages += _name_clashes(entries)
    messages += _path_clashes(_environment_paths(entries, role_dirs["python_env_envs_dir"], role_dirs))
    messages += _jupyterlab_user_problems(_entries(setting("python_env_jupyterlab_users") or []))
    if _truthy(setting("python_env_jupyterlab_enabled")):
        messages += _jupyterlab_environment_problem(setting("python_env_jupyterlab_environment"), entries)
    return messages


# --- gpu_verify_pythons

# The role's own rule for an entry's name (roles/gpu_verify/tasks/main.yml, "Check the environment
# entries"): it names the report file. A unit test keeps the two the same.
GPU_VERIFY_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def gpu_verify_problems(variables: Mapping[str, Any]) -> list[str]:
    """Messages for ``gpu_verify_pythons`` entries: name, interpreter, frameworks, one report each."""
    if "gpu_verify_pythons" not in variables:
        return []
    entries = _entries(variables["gpu_verify_pythons"])
    messages = []
    for index, entry in entries:
        name, python, frameworks = entry.get("name"), entry.get("python"), entry.get("frameworks", [])
        fine = (
            _is_str(name)
            and GPU_VERIFY_NAME_RE.match(name)
            and _is_str(python)
            and python.strip()
            and _is_list(frameworks)
            and all(f in VERIFIED_FRAMEWORKS for f in frameworks)
        )
        if not fine:
            messages.append(
                f"gpu_verify_pythons[{index}] = {dict(entry)!r} is not valid: expected {{name: letters, digits, "
                f"'_', '.' or '-', python: an interpreter path, frameworks: a list of "
                f"{', '.join(VERIFIED_FRAMEWORKS)} (optional)}}"
            )
    names = [(i, e["name"]) for i, e in entries if _is_str(e.get("name"))]
    expected = "expected each environment to have a name of its own (it names its report)"
    messages += _clashes("gpu_verify_pythons", "name", names, expected)
    return messages


# --- cloud_vm

# Checked with the role's own functions (dlstack/cloud.py), so preflight accepts exactly what the
# role accepts: playbooks/cloud.yml runs this play after the role has launched the hosts.
_CLOUD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "cloud_vm_ssh_cidr": cloud.validate_cidr,
    "cloud_vm_project": lambda value: cloud.validate_name("cloud_vm_project", value),
    "cloud_vm_run": lambda value: cloud.validate_name("cloud_vm_run", value),
}


def cloud_vm_problems(variables: Mapping[str, Any]) -> list[str]:
    """Messages for the cloud_vm settings argument_specs cannot check (an empty SSH range is unset)."""
    messages = []
    for name, check in _CLOUD_CHECKS.items():
        if name not in variables or (name == "cloud_vm_ssh_cidr" and variables[name] in ("", None)):
            continue
        try:
            check(variables[name])
        except ValueError as exc:
            messages.append(str(exc))  # the role's message: variable, value and what is accepted
    return messages


# --- storage

_STORAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_STORAGE_NAME_ACCEPTED = "1-32 letters, digits, '_' or '-' that start with a letter or digit"
# Where no volume is mounted: the system's own trees (the role also refuses any non-empty directory).
NO_VOLUME_AT = ("/", "/home", "/root", "/opt", "/srv", "/mnt", "/media")
_SFTP_RE = re.compile(r"^sftp:[^\s:@]+@[^\s:]+:/\S*$")


def _volume_entry_problems(index: int, entry: Mapping[str, Any]) -> list[str]:
    where = f"storage_volumes[{index}]"
    messages = []
    name, mount, devices = entry.get("name"), entry.get("mount"), entry.get("devices")
    if not (_is_str(name) and _STORAGE_NAME_RE.match(name)):
        messages.append(f"{where}.name = {name!r} is not valid: expected {_STORAGE_NAME_ACCEPTED} (/dev/md/NAME)")
    parts = _path_parts(mount) if _is_str(mount) else None
    clean = "/" + "/".join(parts) if parts is not None else ""
    if parts is None:
        messages.append(f"{where}.mount = {mount!r} is not valid: expected {_PATH_ACCEPTED}")
    elif clean in NO_VOLUME_AT or is_system_mount(clean):
        messages.append(
            f"{where}.mount = {mount!r} is not valid: expected a directory of its own such as /data or /scratch, "
            "not a system directory"
        )
    if not (_is_list(devices) and len(devices) >= 2 and all(_is_str(d) and d.startswith("/dev/") for d in devices)):
        messages.append(
            f"{where}.devices = {devices!r} is not valid: expected at least two whole disks given as /dev/ paths "
            "(/dev/disk/by-id/... names survive disk reordering)"
        )
    return messages


def _devices_used_twice(entries: Sequence[tuple[int, Mapping[str, Any]]]) -> list[str]:
    keys = [(i, d) for i, e in entries if _is_list(e.get("devices")) for d in e["devices"] if _is_str(d)]
    return [
        f"storage_volumes: the disk {disk} is listed by entries {_entries_text(indexes)}: a disk belongs to one volume"
        for disk, indexes in _duplicates(keys).items()
    ]


def _backup_entry_problems(index: int, entry: Mapping[str, Any], password: Any) -> list[str]:
    where = f"storage_backups[{index}]"
    messages = []
    name, paths, repository = entry.get("name"), entry.get("paths"), entry.get("repository")
    if not (_is_str(name) and _STORAGE_NAME_RE.match(name)):
        messages.append(f"{where}.name = {name!r} is not valid: expected {_STORAGE_NAME_ACCEPTED}")
    if not (_is_list(paths) and paths and all(_is_str(p) and p.startswith("/") for p in paths)):
        messages.append(f"{where}.paths = {paths!r} is not valid: expected a list of one or more absolute paths")
    local = _is_str(repository) and _path_parts(repository) not in (None, [])
    if not (local or (_is_str(repository) and _SFTP_RE.match(repository))):
        messages.append(
            f"{where}.repository = {repository!r} is not valid: expected an absolute path (best on another disk) or "
            "sftp:USER@HOST:/PATH"
        )
    elif local and _is_list(paths):
        inside = [p for p in paths if _is_str(p) and _path_parts(p) is not None and _inside(repository, p)]
        if inside:
            messages.append(
                f"{where}.repository = {repository!r} is inside the backed-up path {inside[0]}: the backup would "
                "copy itself; put the repository elsewhere (another disk, or an SFTP target)"
            )
    if not (_is_str(entry.get("password", password)) and str(entry.get("password", password)).strip()):
        messages.append(
            f"{where} ({name}) has no password: set storage_backup_password (or the entry's password), from Ansible "
            "Vault (ansible-vault encrypt_string); restic encrypts the repository with it and it cannot be recovered"
        )
    return messages


def storage_problems(variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Messages for ``storage_volumes`` and ``storage_backups`` (the disks themselves are checked on the host)."""
    volumes = _entries(_setting(variables, defaults, "storage_volumes") or [])
    backups = _entries(_setting(variables, defaults, "storage_backups") or [])
    password = _setting(variables, defaults, "storage_backup_password")
    messages = [m for i, e in volumes for m in _volume_entry_problems(i, e)]
    messages += _devices_used_twice(volumes)
    for key, what in (("name", "an array"), ("mount", "a mount point")):
        keys = [(i, str(e[key]).rstrip("/")) for i, e in volumes if _is_str(e.get(key))]
        messages += _clashes("storage_volumes", key, keys, f"each volume needs {what} of its own")
    messages += [m for i, e in backups for m in _backup_entry_problems(i, e, password)]
    names = [(i, e["name"]) for i, e in backups if _is_str(e.get("name"))]
    messages += _clashes("storage_backups", "name", names, "each backup needs a name of its own")
    return messages


# --- package_cache

# apt-cacher-ng 3.7 (Ubuntu 24.04) reads its port as a signed 16-bit number: above 32767 it stops at
# start ("Error resolving address for binding: Success").
_PORT_RANGES = {"package_cache_apt_port": 32767, "package_cache_pypi_port": 65535}


def _is_true(value: Any) -> bool:
    from ansible.module_utils.parsing.convert_bool import boolean  # controller-only import

    try:
        return boolean(value, strict=True)
    except TypeError:
        return False


def _port_number(value: Any) -> int | None:
    text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() else None


def package_cache_problems(variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Ports in range and apart, index URLs that are URLs, a cache size above 0: what argument_specs
    cannot say. The preflight play and the role's own first task (for the role used alone) both ask this."""
    messages = []
    ports = {}
    for name, highest in _PORT_RANGES.items():
        value = _setting(variables, defaults, name)
        port = _port_number(value)
        if port is None or not 1 <= port <= highest:
            why = " (apt-cacher-ng cannot listen above 32767)" if highest == 32767 else ""
            messages.append(f"{name} = {value!r} is not valid: expected a port from 1 to {highest}{why}")
        ports[name] = port
    both_on = all(_is_true(_setting(variables, defaults, f"package_cache_{kind}")) for kind in ("apt", "pypi"))
    if both_on and None not in ports.values() and len(set(ports.values())) == 1:
        messages.append(
            f"package_cache_apt_port and package_cache_pypi_port are both {ports['package_cache_apt_port']}: "
            "expected two different ports"
        )
    urls = _setting(variables, defaults, "package_cache_pypi_extra_index_urls")
    for name, value in [
        ("package_cache_pypi_index_url", _setting(variables, defaults, "package_cache_pypi_index_url"))
    ] + [(f"package_cache_pypi_extra_index_urls[{i}]", url) for i, url in enumerate(urls if _is_list(urls) else [])]:
        if not (_is_str(value) and re.match(r"^https?://\S+$", value)):
            messages.append(f"{name} = {value!r} is not valid: expected an http:// or https:// index URL")
    size = _setting(variables, defaults, "package_cache_pypi_size_gib")
    if isinstance(size, bool) or not isinstance(size, int | float | str) or not _positive(size):
        messages.append(f"package_cache_pypi_size_gib = {size!r} is not valid: expected a number of GiB above 0")
    return messages


def _positive(value: int | float | str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


def setting_problems(variables: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every structured role setting that does not fit, with the variable, the value and what is accepted."""
    return (
        python_env_problems(variables, defaults.get("python_env", {}))
        + gpu_verify_problems(variables)
        + cloud_vm_problems(variables)
        + storage_problems(variables, defaults.get("storage", {}))
        + package_cache_problems(variables, defaults.get("package_cache", {}))
    )
