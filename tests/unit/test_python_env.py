"""Unit tests for dlstack.python_env (the python_env role's plan and installers)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dlstack import python_env as pe
from dlstack.data import load
from dlstack.resolver import resolve

PROFILES = {
    "pytorch": {"frameworks": ["torch"], "packages": []},
    "tensorflow": {"frameworks": ["tensorflow"], "packages": []},
    "huggingface": {"frameworks": ["torch"], "packages": ["transformers", "datasets", "accelerate"]},
}
SETTINGS = {"envs_dir": "/opt/dlstack/envs", "backend": "venv", "host_python": "3.12", "kernels": True}


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return resolve(os="24.04", frameworks=("torch", "tensorflow")).to_dict()


def torch_from_pytorch_index() -> dict[str, Any]:
    """A stack whose torch variant is not PyPI's default (the resolver's shape)."""
    return {
        "python": "3.12",
        "frameworks": {
            "torch": {
                "version": "2.12.1",
                "variant": "cu126",
                "cuda": "12.6",
                "index": "pytorch",
                "index_url": "https://download.pytorch.org/whl/cu126",
                "requirement": "torch==2.12.1+cu126",
            }
        },
    }


def plan(envs: list[dict[str, Any]], stack: dict[str, Any], **settings: Any) -> list[dict[str, Any]]:
    return pe.plan_environments(envs, stack, PROFILES, {**SETTINGS, **settings})


def test_pytorch_profile_takes_the_resolver_requirement(stack):
    (p,) = plan([{"name": "pytorch", "profile": "pytorch"}], stack)
    assert p["requirements"] == [stack["frameworks"]["torch"]["requirement"], "ipykernel"]
    assert p["extra_index_urls"] == []
    assert p["python"] == "/opt/dlstack/envs/pytorch/bin/python"
    assert p["base_python"] == "/usr/bin/python3.12"
    assert p["versions"] == {
        "torch": stack["frameworks"]["torch"]["version"],
        "cuda": stack["frameworks"]["torch"]["cuda"],
    }


def test_huggingface_profile_adds_its_packages_on_torch(stack):
    (p,) = plan([{"name": "hf", "profile": "huggingface", "packages": ["einops"]}], stack)
    assert p["frameworks"] == ["torch"]
    assert p["requirements"][1:] == ["transformers", "datasets", "accelerate", "einops", "ipykernel"]


def test_variant_off_pypi_uses_the_pytorch_index():
    (p,) = plan([{"name": "t", "profile": "pytorch"}], torch_from_pytorch_index())
    assert p["requirements"][0] == "torch==2.12.1+cu126"
    assert p["extra_index_urls"] == ["https://download.pytorch.org/whl/cu126"]
    assert p["versions"]["cuda"] == "12.6"


def test_lab_mirror_replaces_the_pytorch_index():
    (p,) = plan(
        [{"name": "t", "profile": "pytorch"}],
        torch_from_pytorch_index(),
        torch_index_url="https://mirror.lab/whl/{variant}",
    )
    assert p["extra_index_urls"] == ["https://mirror.lab/whl/cu126"]


def test_pypi_variant_ignores_the_mirror(stack):
    (p,) = plan([{"name": "t", "profile": "pytorch"}], stack, torch_index_url="https://mirror.lab/whl/{variant}")
    assert p["extra_index_urls"] == []


def test_requirement_is_built_when_the_stack_gives_none():
    entry = {"version": "2.12.1", "variant": "cu126", "index": "pytorch"}
    assert pe.framework_requirement("torch", entry) == "torch==2.12.1+cu126"
    assert (
        pe.framework_requirement("torch", {"version": "2.15.0", "variant": "cu132", "index": "pypi"}) == "torch==2.15.0"
    )
    assert pe.framework_requirement("tensorflow", {"version": "2.21.0"}) == "tensorflow[and-cuda]==2.21.0"


@pytest.mark.parametrize(
    ("variant", "cuda"), [("cu118", "11.8"), ("cu126", "12.6"), ("cu130", "13.0"), ("cu132", "13.2")]
)
def test_cuda_of_variant(variant, cuda):
    assert pe.cuda_of_variant(variant) == cuda


def test_tensorflow_cuda_from_data_when_the_stack_omits_it():
    assert pe.framework_cuda("tensorflow", {"version": "2.21.0"}) == "12.5"


def test_display_name_is_readable(stack):
    (p,) = plan([{"name": "pytorch", "profile": "pytorch"}], stack)
    torch = stack["frameworks"]["torch"]
    cu = "cu" + torch["cuda"].replace(".", "")
    assert p["display_name"] == f"Python 3.12 (pytorch, torch {torch['version']} {cu})"


def test_conda_defaults_to_the_stack_python(stack):
    (p,) = plan([{"name": "c", "backend": "conda"}], stack, host_python="3.10")
    assert p["python_version"] == stack["python"]
    assert p["conda_dependencies"][:2] == [f"python={stack['python']}", "pip"]
    assert p["base_python"] == ""


def test_jupyterlab_added_to_its_environment_only(stack):
    plans = plan([{"name": "a"}, {"name": "b"}], stack, jupyterlab_environment="b")
    assert "jupyterlab" not in plans[0]["requirements"]
    assert "jupyterlab" in plans[1]["requirements"]


def test_kernel_can_be_turned_off(stack):
    (p,) = plan([{"name": "a", "kernel": False}], stack)
    assert "ipykernel" not in p["requirements"]
    assert p["kernel"] is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"name": "a", "backend": "docker"}, r"python_env_environments\[0\]\.backend = 'docker' .* 'venv', 'conda'"),
        ({"name": "a b"}, r"python_env_environments\[0\]\.name = 'a b'"),
        ({"name": "a", "python": "3"}, r"python_env_environments\[0\]\.python = '3' is not of the form 3\.X"),
        ({"name": "a", "profile": "mxnet"}, r"python_env_environments\[0\]\.profile = 'mxnet' .* 'huggingface'"),
        ({"name": "a", "frameworks": ["mxnet"]}, r"frameworks = 'mxnet' is not accepted"),
        ({"name": "a", "state": "latest"}, r"state = 'latest' .* 'present', 'absent'"),
        ({"name": "a", "packges": []}, r"unknown keys \['packges'\]"),
    ],
)
def test_bad_declarations_name_the_variable(stack, env, message):
    with pytest.raises(pe.PlanError, match=message):
        plan([env], stack)


def test_framework_missing_from_the_stack_says_what_to_do():
    with pytest.raises(pe.PlanError, match=r"no frameworks\.tensorflow: run the preflight play"):
        plan([{"name": "tf", "profile": "tensorflow"}], torch_from_pytorch_index())


def test_duplicate_names_rejected(stack):
    with pytest.raises(pe.PlanError, match="two environments have the name 'a'"):
        plan([{"name": "a"}, {"name": "a", "backend": "conda"}], stack)


def test_absent_environment_needs_no_frameworks():
    (p,) = plan([{"name": "old", "profile": "tensorflow", "state": "absent"}], torch_from_pytorch_index())
    assert p["state"] == "absent"
    assert pe.local_fact([p]) == {"environments": []}


def test_local_fact_keeps_the_keys_gpu_verify_reads(stack):
    plans = plan([{"name": "pytorch", "profile": "pytorch"}], stack)
    (entry,) = pe.local_fact(plans)["environments"]
    assert {"name", "python", "backend", "frameworks", "versions"} <= set(entry)
    assert entry["versions"]["cuda"] == stack["frameworks"]["torch"]["cuda"]


def test_miniforge_newest_release_by_default():
    data = load("miniforge")["miniforge"]
    newest = data["releases"][0]
    inst = pe.miniforge_installer("", "x86_64")
    assert inst["version"] == newest["version"]
    assert inst["sha256"] == newest["sha256"]["x86_64"]
    assert inst["url"] == f"{data['base_url']}/{newest['version']}/Miniforge3-{newest['version']}-Linux-x86_64.sh"


def test_miniforge_mirror_keeps_the_file_name_and_checksum():
    inst = pe.miniforge_installer("", "aarch64", "https://mirror.lab/miniforge/")
    assert inst["url"].startswith("https://mirror.lab/miniforge/")
    assert inst["url"].endswith(f"/{inst['file']}")
    assert inst["file"].endswith("-Linux-aarch64.sh")


def test_miniforge_unknown_version_lists_the_known_ones():
    with pytest.raises(pe.PlanError, match=r"python_env_miniforge_version = '1\.0' .* use one of"):
        pe.miniforge_installer("1.0", "x86_64")


def test_unsupported_architecture_rejected():
    with pytest.raises(pe.PlanError, match="architecture 'ppc64le' is not supported"):
        pe.miniforge_installer("", "ppc64le")


def test_pinned_checksums_are_sha256_hex():
    data = load("miniforge")
    sums = [s for r in data["miniforge"]["releases"] for s in r["sha256"].values()] + list(
        data["uv"]["sha256"].values()
    )
    assert all(re.fullmatch(r"[0-9a-f]{64}", s) for s in sums)


def test_uv_requirement_is_hash_pinned():
    line = pe.uv_requirement("amd64")
    data = load("miniforge")["uv"]
    assert line == f"uv=={data['version']} --hash=sha256:{data['sha256']['x86_64']}"


# --- the role's profiles: complete environments, companions paired through the data


def role_profiles() -> dict[str, Any]:
    from pathlib import Path

    import yaml

    defaults = Path(__file__).resolve().parents[2] / "roles/python_env/defaults/main.yml"
    return yaml.safe_load(defaults.read_text(encoding="utf-8"))["python_env_profiles"]


@pytest.fixture(scope="module")
def vision_stack() -> dict[str, Any]:
    return resolve(os="24.04", frameworks=("torch", "torchvision")).to_dict()


def test_the_pytorch_profile_is_a_complete_environment(vision_stack):
    (p,) = pe.plan_environments([{"name": "pt", "profile": "pytorch"}], vision_stack, role_profiles(), SETTINGS)
    torch = vision_stack["frameworks"]["torch"]
    vision = torch["companions"]["torchvision"]
    assert p["requirements"][:2] == [torch["requirement"], f"torchvision=={vision}"]
    for package in ("numpy", "pandas", "matplotlib", "scikit-learn", "tensorboard", "tqdm", "ipykernel"):
        assert package in p["requirements"]
    assert p["versions"]["torchvision"] == vision
    # torchaudio ended with 2.11: left out for a newer torch, and said so
    assert p["skipped_companions"] == {
        "torchaudio": f"no torchaudio release for torch {torch['version']} (dlstack/data/pytorch.yml companions)"
    }


def test_torchaudio_is_installed_where_it_was_released():
    stack = resolve(os="24.04", frameworks=("torch", "torchaudio")).to_dict()
    (p,) = pe.plan_environments([{"name": "pt", "profile": "pytorch"}], stack, role_profiles(), SETTINGS)
    audio = stack["frameworks"]["torch"]["companions"]["torchaudio"]
    assert f"torchaudio=={audio}" in p["requirements"]
    assert p["skipped_companions"] == {}


def test_huggingface_extends_pytorch(vision_stack):
    (p,) = pe.plan_environments([{"name": "hf", "profile": "huggingface"}], vision_stack, role_profiles(), SETTINGS)
    assert p["requirements"][1].startswith("torchvision==")
    assert p["requirements"].index("pandas") < p["requirements"].index("transformers")
    for package in ("transformers", "datasets", "diffusers", "accelerate", "safetensors", "tokenizers", "evaluate"):
        assert package in p["requirements"]


def test_a_torch_without_torchvision_fails_the_plan_naming_the_fix():
    stack = resolve(os="24.04", frameworks=("torch==2.15.*",)).to_dict()
    with pytest.raises(pe.PlanError, match=r"needs torchvision, but no torchvision was released for the resolved torch "
                       r"2\.15\.0: add 'torchvision' to dlstack_frameworks"):  # fmt: skip
        pe.plan_environments([{"name": "pt", "profile": "pytorch"}], stack, role_profiles(), SETTINGS)


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ({"a": {"extends": "b"}, "b": {"extends": "a"}}, r"python_env_profiles\.a: 'extends' loops \(a -> b -> a\)"),
        ({"a": {"extends": "nope"}}, r"python_env_profiles\.a\.extends = 'nope' is not accepted"),
        ({"a": {"frameworks": ["torch"], "companions": ["torchtext"]}}, r"python_env_profiles\.a\.companions = "),
        ({"a": {"pakages": ["x"]}}, r"python_env_profiles\.a has unknown keys \['pakages'\]"),
    ],
)
def test_bad_profiles_name_the_profile(vision_stack, profiles, message):
    with pytest.raises(pe.PlanError, match=message):
        pe.plan_environments([{"name": "x", "profile": "a"}], vision_stack, profiles, SETTINGS)


def test_companions_need_torch(vision_stack):
    profiles = {"tf": {"frameworks": ["tensorflow"], "companions": ["torchvision"]}}
    stack = resolve(os="24.04", frameworks=("torchvision", "tensorflow")).to_dict()
    with pytest.raises(pe.PlanError, match=r"torchvision go with torch, but the environment's frameworks are"):
        pe.plan_environments([{"name": "x", "profile": "tf"}], stack, profiles, SETTINGS)


def test_the_vision_profile_keeps_the_gui_opencv_out(vision_stack):
    (p,) = pe.plan_environments([{"name": "cv", "profile": "vision"}], vision_stack, role_profiles(), SETTINGS)
    assert {"ultralytics", "opencv-python-headless", "pillow"} <= set(p["requirements"])
    assert p["requirements"][1].startswith("torchvision==")
    assert p["overrides"] == ["opencv-python ; sys_platform == 'never'"]


def test_exclude_needs_uv(vision_stack):
    with pytest.raises(pe.PlanError, match=r"keeps opencv-python out of the environment, which needs uv's overrides"):
        pe.plan_environments(
            [{"name": "cv", "profile": "vision"}], vision_stack, role_profiles(), {**SETTINGS, "uv": False}
        )


def test_profiles_without_exclude_have_no_overrides(vision_stack):
    (p,) = pe.plan_environments([{"name": "pt", "profile": "pytorch"}], vision_stack, role_profiles(), SETTINGS)
    assert p["overrides"] == []
