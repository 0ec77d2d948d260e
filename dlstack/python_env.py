"""Plans for the python_env role: declared environments turned into what to install where.

The role hands :func:`plan_environments` the list ``python_env_environments``, the resolved stack
(the ``dlstack_stack`` fact the preflight play sets from :mod:`dlstack.resolver`) and its profiles;
it gets back one normalised entry per environment: paths, pip requirements (framework versions
and wheel variants taken from the stack, never typed here), the extra index for a PyTorch variant
that PyPI does not serve, the versions published in the local fact and the Jupyter kernel name.
:func:`miniforge_installer` and :func:`uv_requirement` read the pinned installers from
``dlstack/data/miniforge.yml``. Errors name the variable, the bad value and what is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from dlstack.data import load

BACKENDS = ("venv", "conda")
STATES = ("present", "absent")
FRAMEWORKS = ("torch", "tensorflow", "jax")
# Released in step with torch (pytorch.yml `companions`): installed at the release built for the resolved torch.
TORCH_COMPANIONS = ("torchvision", "torchaudio")
PROFILE_KEYS = frozenset({"extends", "frameworks", "companions", "companions_if_released", "packages", "exclude"})
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
VAR = "python_env_environments"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PYTHON_RE = re.compile(r"^3\.\d{1,2}$")
_VARIANT_RE = re.compile(r"^cu(\d{2,3})$")
_KNOWN_KEYS = frozenset(
    {
        "name",
        "backend",
        "python",
        "profile",
        "frameworks",
        "packages",
        "conda_packages",
        "owner",
        "group",
        "state",
        "path",
        "kernel",
        "lock",
    }
)


class PlanError(ValueError):
    """A declared environment or setting is invalid."""


# ----------------------------------------------------------------------------- installers


def _arch(arch: str) -> str:
    try:
        return ARCHITECTURES[str(arch)]
    except KeyError:
        raise PlanError(
            f"architecture {arch!r} is not supported: use one of {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def miniforge_installer(version: str = "", arch: str = "x86_64", mirror: str = "") -> dict[str, str]:
    """URL, file name and SHA-256 of the Miniforge installer for ``version`` ("" = newest)."""
    data = load("miniforge")["miniforge"]
    releases: list[dict[str, Any]] = data["releases"]
    wanted = str(version or releases[0]["version"])
    release = next((r for r in releases if str(r["version"]) == wanted), None)
    if release is None:
        known = ", ".join(str(r["version"]) for r in releases)
        raise PlanError(
            f"python_env_miniforge_version = {version!r} is not in dlstack/data/miniforge.yml: use one of {known}, "
            "or set python_env_miniforge_url and python_env_miniforge_sha256 for another installer"
        )
    machine = _arch(arch)
    if machine not in release["sha256"]:
        raise PlanError(f"Miniforge {wanted} has no pinned installer for {machine} in dlstack/data/miniforge.yml")
    file = str(data["file"]).format(version=wanted, arch=machine)
    base = (mirror or data["base_url"]).rstrip("/")
    return {"version": wanted, "file": file, "url": f"{base}/{wanted}/{file}", "sha256": release["sha256"][machine]}


def uv_requirement(arch: str = "x86_64") -> str:
    """A hash-pinned requirement line for uv (for ``pip install --require-hashes``)."""
    data = load("miniforge")["uv"]
    machine = _arch(arch)
    if machine not in data["sha256"]:
        raise PlanError(f"uv {data['version']} has no pinned wheel for {machine} in dlstack/data/miniforge.yml")
    return f"uv=={data['version']} --hash=sha256:{data['sha256'][machine]}"


# ----------------------------------------------------------------------------- frameworks


def cuda_of_variant(variant: str) -> str:
    """``"cu132"`` -> ``"13.2"``, ``"cu118"`` -> ``"11.8"``."""
    match = _VARIANT_RE.match(str(variant))
    if not match:
        raise PlanError(f"wheel variant {variant!r} is not of the form cuXYZ (e.g. 'cu126', 'cu132')")
    digits = match.group(1)
    return f"{int(digits[:-1])}.{digits[-1]}"


def _tensorflow_cuda(version: str) -> str:
    for release in load("tensorflow")["releases"]:
        if version in [str(v) for v in release["versions"]]:
            return str(release["cuda"])
    raise PlanError(f"TensorFlow {version!r} is not in dlstack/data/tensorflow.yml")


def framework_cuda(name: str, entry: Mapping[str, Any]) -> str:
    """The CUDA version a resolved framework build uses."""
    if entry.get("cuda"):
        return str(entry["cuda"])
    if name == "torch":
        return cuda_of_variant(str(entry.get("variant", "")))
    if name == "jax":
        raise PlanError(f"the resolved jax entry gives no CUDA version: {dict(entry)!r}; run the preflight play again")
    return _tensorflow_cuda(str(entry.get("version", "")))


def framework_requirement(name: str, entry: Mapping[str, Any]) -> str:
    """The pip requirement for a resolved framework (the resolver's own when it gives one)."""
    if entry.get("requirement"):
        return str(entry["requirement"])
    version = str(entry["version"])
    if name == "tensorflow":
        return f"tensorflow[and-cuda]=={version}"
    if name == "jax":
        return f"jax[{entry.get('variant', 'cuda13')}]=={version}"
    if entry.get("index") == "pytorch" and "+" not in version:
        return f"torch=={version}+{entry['variant']}"
    return f"torch=={version}"


def framework_index_url(entry: Mapping[str, Any], override: str = "") -> str:
    """The extra index a framework needs: "" for PyPI, else the PyTorch index or the lab's mirror."""
    if entry.get("index", "pypi") == "pypi":
        return ""
    variant = str(entry.get("variant", ""))
    url = override or str(entry.get("index_url", ""))
    if not url:
        raise PlanError(
            f"the resolved torch variant {variant!r} is not on PyPI and the stack gives no index_url: "
            "set python_env_torch_index_url (e.g. a lab mirror of https://download.pytorch.org/whl/{variant})"
        )
    return url.replace("{variant}", variant)


# ----------------------------------------------------------------------------- environments


def _where(index: int, key: str) -> str:
    return f"{VAR}[{index}].{key}"


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise PlanError(f"{where} = {value!r} is not a list of strings")
    return [str(v) for v in value]


def _choice(value: Any, accepted: Sequence[str], where: str) -> str:
    if value not in accepted:
        raise PlanError(f"{where} = {value!r} is not accepted: use one of {', '.join(repr(a) for a in accepted)}")
    return str(value)


def _frameworks(env: Mapping[str, Any], profile: Mapping[str, Any], stack: Mapping[str, Any], index: int) -> list[str]:
    names = _str_list(env.get("frameworks", profile.get("frameworks", [])), _where(index, "frameworks"))
    resolved = stack.get("frameworks") or {}
    for name in names:
        _choice(name, FRAMEWORKS, _where(index, "frameworks"))
        if name not in resolved:
            raise PlanError(
                f"{_where(index, 'frameworks')} asks for {name!r} but the resolved stack (dlstack_stack / "
                f"python_env_stack) has no frameworks.{name}: run the preflight play first, or set python_env_stack"
            )
    return names


def resolve_profile(profiles: Mapping[str, Any], name: str, seen: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """A profile with what it ``extends`` merged in first (frameworks, companions and packages, in order,
    without repeats); a loop or an unknown parent is an error naming the profile."""
    where = f"python_env_profiles.{name}"
    if name in seen:
        raise PlanError(f"{where}: 'extends' loops ({' -> '.join((*seen, name))})")
    profile = profiles.get(name)
    if not isinstance(profile, Mapping):
        raise PlanError(f"{where} = {profile!r} is not a mapping (keys: {', '.join(sorted(PROFILE_KEYS))})")
    unknown = sorted(set(profile) - PROFILE_KEYS)
    if unknown:
        raise PlanError(f"{where} has unknown keys {unknown}: accepted are {', '.join(sorted(PROFILE_KEYS))}")
    merged: dict[str, list[str]] = {
        key: [] for key in ("frameworks", "companions", "companions_if_released", "packages", "exclude")
    }
    parent = profile.get("extends")
    if parent:
        if str(parent) not in profiles:
            _choice(str(parent), sorted(profiles), f"{where}.extends")
        merged = resolve_profile(profiles, str(parent), (*seen, name))
    for key in merged:
        for item in _str_list(profile.get(key, []), f"{where}.{key}"):
            if item not in merged[key]:
                merged[key].append(item)
    for key in ("companions", "companions_if_released"):
        for item in merged[key]:
            _choice(item, TORCH_COMPANIONS, f"{where}.{key}")
    return merged


def companion_requirements(
    frameworks: Sequence[str], profile: Mapping[str, list[str]], stack: Mapping[str, Any], where: str
) -> tuple[list[str], dict[str, str]]:
    """``torchvision==X`` for the resolved torch; (requirements, {companion: why it was left out})."""
    wanted = [*profile.get("companions", []), *profile.get("companions_if_released", [])]
    if not wanted:
        return [], {}
    if "torch" not in frameworks:
        raise PlanError(
            f"{where}: {', '.join(wanted)} go with torch, but the environment's frameworks are {list(frameworks)}"
        )
    torch = stack["frameworks"]["torch"]
    paired = torch.get("companions") or {}
    requirements, skipped = [], {}
    for name in wanted:
        version = paired.get(name)
        if version:
            requirements.append(f"{name}=={version}")
        elif name in profile.get("companions", []):
            raise PlanError(
                f"{where} needs {name}, but no {name} was released for the resolved torch {torch['version']}: add "
                f"{name!r} to dlstack_frameworks (the resolver then picks the newest torch that has one), or pin "
                "an older torch there"
            )
        else:
            skipped[name] = f"no {name} release for torch {torch['version']} (dlstack/data/pytorch.yml companions)"
    return requirements, skipped


def _display_name(python: str, name: str, frameworks: list[str], stack: Mapping[str, Any]) -> str:
    parts = [name]
    for fw in frameworks:
        entry = stack["frameworks"][fw]
        cuda = framework_cuda(fw, entry).replace(".", "")
        parts.append(f"{fw} {entry['version']} cu{cuda}")
    return f"Python {python} ({', '.join(parts)})"


def _plan_one(
    index: int,
    env: Mapping[str, Any],
    stack: Mapping[str, Any],
    profiles: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    if not isinstance(env, Mapping):
        raise PlanError(f"{VAR}[{index}] = {env!r} is not a mapping with at least a 'name'")
    unknown = sorted(set(env) - _KNOWN_KEYS)
    if unknown:
        raise PlanError(f"{VAR}[{index}] has unknown keys {unknown}: accepted are {', '.join(sorted(_KNOWN_KEYS))}")
    name = str(env.get("name", ""))
    if not _NAME_RE.match(name):
        raise PlanError(
            f"{_where(index, 'name')} = {name!r} is not accepted: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    backend = _choice(env.get("backend", settings.get("backend", "venv")), BACKENDS, _where(index, "backend"))
    state = _choice(env.get("state", "present"), STATES, _where(index, "state"))
    profile_name = str(env.get("profile", "") or "")
    if profile_name and profile_name not in profiles:
        _choice(profile_name, sorted(profiles), _where(index, "profile"))
    profile = resolve_profile(profiles, profile_name) if profile_name else {}
    python = str(env.get("python", "") or "")
    if python and not _PYTHON_RE.match(python):
        raise PlanError(f"{_where(index, 'python')} = {python!r} is not of the form 3.X (e.g. '3.12')")
    if not python:
        host = str(settings.get("host_python", ""))
        python = str(stack.get("python") or host) if backend == "conda" else host
    frameworks = _frameworks(env, profile, stack, index) if state == "present" else []
    packages = list(profile.get("packages", []))
    packages += _str_list(env.get("packages", []), _where(index, "packages"))
    kernel = bool(env.get("kernel", settings.get("kernels", True)))
    requirements = [framework_requirement(fw, stack["frameworks"][fw]) for fw in frameworks]
    companions, skipped = (
        companion_requirements(frameworks, profile, stack, f"{VAR}[{index}] (profile {profile_name})")
        if state == "present"
        else ([], {})
    )
    requirements += companions
    requirements += [p for p in packages if p not in requirements]
    excluded = list(profile.get("exclude", []))
    if excluded and not settings.get("uv", True):
        raise PlanError(
            f"{VAR}[{index}] (profile {profile_name}) keeps {', '.join(excluded)} out of the environment, which "
            "needs uv's overrides: set python_env_uv: true, or use a profile without 'exclude'"
        )
    if kernel and "ipykernel" not in requirements:
        requirements.append("ipykernel")
    if name == settings.get("jupyterlab_environment") and "jupyterlab" not in requirements:
        requirements.append("jupyterlab")
    extra_index_urls: list[str] = []
    for fw in frameworks:
        url = framework_index_url(stack["frameworks"][fw], str(settings.get("torch_index_url", "") or ""))
        if url and url not in extra_index_urls:
            extra_index_urls.append(url)
    versions: dict[str, str] = {fw: str(stack["frameworks"][fw]["version"]) for fw in frameworks}
    versions |= {req.split("==")[0]: req.split("==")[1] for req in companions}
    if frameworks:
        versions["cuda"] = framework_cuda(frameworks[0], stack["frameworks"][frameworks[0]])
    path = str(env.get("path") or f"{str(settings.get('envs_dir', '/opt/dlstack/envs')).rstrip('/')}/{name}")
    return {
        "name": name,
        "backend": backend,
        "state": state,
        "path": path,
        "python_version": python,
        "python": f"{path}/bin/python",
        "base_python": f"/usr/bin/python{python}" if backend == "venv" else "",
        "owner": str(env.get("owner", "root") or "root"),
        "group": str(env.get("group", env.get("owner", "root")) or "root"),
        "frameworks": frameworks,
        "framework_cuda": {fw: framework_cuda(fw, stack["frameworks"][fw]) for fw in frameworks},
        "requirements": requirements,
        "extra_index_urls": extra_index_urls,
        "conda_dependencies": [f"python={python}", "pip", *_str_list(env.get("conda_packages", []), "conda_packages")],
        "versions": versions,
        "kernel": kernel and state == "present",
        "kernel_name": f"dlstack-{name.lower()}",
        "display_name": _display_name(python, name, frameworks, stack),
        "lock": str(env.get("lock", "") or ""),
        "skipped_companions": skipped,
        # uv overrides: a requirement whose marker is never true keeps the package out, whoever depends on it
        "overrides": [f"{name} ; sys_platform == 'never'" for name in excluded],
    }


def plan_environments(
    environments: Sequence[Mapping[str, Any]],
    stack: Mapping[str, Any] | None,
    profiles: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Normalise ``python_env_environments`` against the resolved stack; raise :class:`PlanError`."""
    if isinstance(environments, str) or not isinstance(environments, Sequence):
        raise PlanError(f"{VAR} = {environments!r} is not a list of environments")
    stack = stack or {}
    plans = [_plan_one(i, env, stack, profiles, settings) for i, env in enumerate(environments)]
    for key in ("name", "path"):
        seen: set[str] = set()
        for plan in plans:
            if plan[key] in seen:
                raise PlanError(f"{VAR}: two environments have the {key} {plan[key]!r}; each needs its own")
            seen.add(plan[key])
    return plans


def local_fact(plans: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``python_env`` local fact (read by the GPU verification role: keep the keys)."""
    return {
        "environments": [
            {
                "name": p["name"],
                "python": p["python"],
                "backend": p["backend"],
                "frameworks": list(p["frameworks"]),
                "versions": dict(p["versions"]),
                "framework_cuda": dict(p["framework_cuda"]),
                "kernel": p["kernel_name"] if p["kernel"] else "",
                "lock": f"{p['path']}/dlstack-lock.txt",
                "skipped_companions": dict(p.get("skipped_companions") or {}),
            }
            for p in plans
            if p["state"] == "present"
        ]
    }
