"""Property tests: every stack the resolver returns satisfies every rule in the data and every
constraint it was given; every refusal says why. The checks below re-derive the rules from the
data files directly, not through the resolver's own rule functions."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from dlstack.data import load
from dlstack.resolver import ResolutionError, resolve

GPUS = {g["name"]: g for g in load("gpus")["gpus"]}
DRIVERS = load("drivers")
CUDA = load("cuda")
UBUNTU = load("ubuntu")["releases"]
TORCH = load("pytorch")["releases"]
TF = load("tensorflow")["releases"]

FRAMEWORK_SPECS = [
    "torch",
    "torch==2.9.*",
    "torch>=2.11",
    "torch<2.8",
    "torch==2.14.1+cu126",
    "tensorflow",
    "tensorflow==2.17.*",
    "tensorflow>=2.18",
    "tensorflow<2.15",
]


def _cc(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _driver_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _release(entries: list[dict[str, Any]], version: str) -> dict[str, Any]:
    return next(e for e in entries if version in e["versions"])


def _runs_cuda(branch: str, min_version: str, cuda: str) -> bool:
    """NVIDIA's rule: the toolkit driver of the CUDA release, or the minor-version floor of its major."""
    info = DRIVERS["branches"][branch]
    release = CUDA["releases"][cuda]
    native = _cc(info["max_cuda"]) >= _cc(cuda) and (
        _driver_key(release["toolkit_driver"])[0] != int(branch)
        or _driver_key(min_version) >= _driver_key(release["toolkit_driver"])
    )
    floor = CUDA["minor_version_compatibility"][cuda.split(".")[0]]["min_driver"]
    compat = _cc(info["max_cuda"])[0] == _cc(cuda)[0] and _driver_key(min_version) >= _driver_key(floor)
    return native or compat


def _kernels_for(archs: list[str], ptx: str | None, cuda: str, cc: tuple[int, int]) -> bool:
    sass = any(_cc(a)[0] == cc[0] and _cc(a)[1] <= cc[1] for a in archs)
    release = CUDA["releases"][cuda]
    jit = ptx is not None and _cc(ptx) <= cc <= _cc(release["max_compute_capability"])
    return sass or jit


def _check_stack(stack: dict[str, Any], kwargs: dict[str, Any]) -> None:
    driver = stack["driver"]
    branch = DRIVERS["branches"][driver["branch"]]
    os_release = UBUNTU[stack["os"]]
    rules = DRIVERS["rules"]
    cuda = CUDA["releases"][stack["cuda"]]
    assert stack["python"] == os_release["python"]
    assert _driver_key(driver["min_version"]) >= _driver_key(branch["first_version"])
    assert driver["kernel_modules"] in branch["kernel_modules"]
    packaged = os_release["drivers"].get(driver["branch"])
    flavours = {"open": {"open", "server-open"}, "proprietary": {"proprietary", "server"}}[driver["kernel_modules"]]
    assert driver["packages_available_in_ubuntu"] == bool(packaged and flavours & set(packaged["flavours"]))
    if kwargs.get("driver_source", "ubuntu") == "ubuntu":
        assert driver["packages_available_in_ubuntu"]
    if stack["gpu"] is not None:
        cc = _cc(stack["gpu"]["compute_capability"])
        assert stack["gpu"]["architecture"] in branch["architectures"]
        if driver["kernel_modules"] == "open":
            assert cc >= _cc(rules["open_min_compute_capability"])
        if cc >= _cc(rules["open_required_from_compute_capability"]):
            assert driver["kernel_modules"] == "open"
        assert _cc(cuda["min_compute_capability"]) <= cc <= _cc(cuda["max_compute_capability"])
    assert _runs_cuda(driver["branch"], driver["min_version"], stack["cuda"])
    if not stack["frameworks"]:
        assert stack["os"] in cuda["ubuntu"]
    for name, choice in stack["frameworks"].items():
        entries = TORCH if name == "torch" else TF
        release = _release(entries, choice["version"])
        assert Version(stack["python"]) in SpecifierSet(release["python"])
        if name == "torch":
            variant = release["variants"][choice["variant"]]
            archs, ptx, fw_cuda = variant["archs"], None, variant["cuda"]
            assert (choice["index"] == "pypi") == (choice["variant"] == release["pypi_default"])
        else:
            archs, ptx, fw_cuda = release["archs"], release.get("ptx"), release["cuda"]
        assert choice["cuda"] == fw_cuda
        assert _runs_cuda(driver["branch"], driver["min_version"], fw_cuda)
        if stack["gpu"] is not None:
            assert _kernels_for(archs, ptx, fw_cuda, _cc(stack["gpu"]["compute_capability"]))
    primary = stack["frameworks"].get("torch") or stack["frameworks"].get("tensorflow")
    if primary:
        assert primary["cuda"] == stack["cuda"]


def _check_inputs(stack: dict[str, Any], kwargs: dict[str, Any]) -> None:
    if kwargs.get("os"):
        assert stack["os"] == kwargs["os"]
    if kwargs.get("driver"):
        assert stack["driver"]["branch"] == kwargs["driver"]
    if kwargs.get("kernel_modules"):
        assert stack["driver"]["kernel_modules"] == kwargs["kernel_modules"]
    if kwargs.get("cuda"):
        assert stack["cuda"] == kwargs["cuda"]
    if kwargs.get("gpu"):
        assert stack["gpu"]["name"] == kwargs["gpu"]
    for spec in kwargs.get("frameworks", ()):
        requirement = Requirement(spec.split("+")[0])
        choice = stack["frameworks"][requirement.name]
        assert requirement.specifier.contains(choice["version"])
        if "+" in spec:
            assert choice["variant"] == spec.split("+")[1]


def _optional(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.sampled_from(values))


constraints = st.fixed_dictionaries(
    {
        "gpu": _optional(sorted(GPUS)),
        "os": _optional(sorted(UBUNTU)),
        "driver": _optional(sorted(DRIVERS["branches"])),
        "kernel_modules": _optional(["open", "proprietary"]),
        "cuda": _optional(sorted(CUDA["releases"])),
        "frameworks": st.lists(st.sampled_from(FRAMEWORK_SPECS), max_size=2, unique_by=lambda s: s.split("=")[0][:5]),
        "driver_source": st.sampled_from(["ubuntu", "ubuntu", "nvidia"]),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(constraints)
def test_every_stack_satisfies_every_rule(kwargs: dict[str, Any]) -> None:
    kwargs = {k: v for k, v in kwargs.items() if v not in (None, [])}
    try:
        stack = resolve(**kwargs).to_dict()
    except ResolutionError as exc:
        assert str(exc).startswith("no stack satisfies all constraints:\n  - ")
        return
    _check_stack(stack, kwargs)
    _check_inputs(stack, kwargs)


@settings(max_examples=60, deadline=None)
@given(gpu=st.sampled_from(sorted(GPUS)))
def test_every_known_gpu_gets_a_stack(gpu: str) -> None:
    stack = resolve(gpu=gpu, driver_source="nvidia").to_dict()
    _check_stack(stack, {"driver_source": "nvidia"})
