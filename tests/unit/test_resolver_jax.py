"""JAX as a third framework: jax[cuda13] / jax[cuda12] wheels from PyPI, with their CUDA and driver floors.

Literal values from PyPI (jax 0.12.0.1 requires Python >= 3.12; jax-cuda13-plugin requires
nvidia-cudnn-cu13 >= 9.12.0.46 and nvidia-nccl-cu13 >= 2.27.7) and JAX's installation guide (CUDA 13
from SM 7.5 with driver >= 580; CUDA 12 from SM 5.2 with driver >= 525).
"""

from __future__ import annotations

import pytest

from dlstack import python_env
from dlstack.resolver import TODAY_ENV, FrameworkChoice, ResolutionError, Stack, resolve


@pytest.fixture(autouse=True)
def _today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "2026-11-30")


def _jax(stack: Stack) -> FrameworkChoice:
    return next(f for f in stack.frameworks if f.name == "jax")


def test_an_h100_gets_the_newest_jax_with_the_cuda13_wheels() -> None:
    stack = resolve(gpu="H100 SXM", os="24.04", frameworks=["jax"])
    jax = _jax(stack)
    assert (jax.version, jax.variant, jax.cuda, jax.index) == ("0.12.0.1", "cuda13", "13.0", "pypi")
    assert jax.requirement == "jax[cuda13]==0.12.0.1"
    assert (stack.cudnn, stack.nccl) == ("9.12.0", "2.27.7")
    assert any("lower bounds, not pins" in w for w in stack.warnings)


def test_python_3_10_gets_the_last_jax_that_supports_it() -> None:
    # Ubuntu 22.04's python3 is 3.10; jax 0.7.0 raised the floor to 3.11
    jax = _jax(resolve(gpu="H100 SXM", os="22.04", frameworks=["jax"]))
    assert (jax.version, jax.variant) == ("0.6.2", "cuda12")


def test_a_v100_gets_cuda12_and_the_cudnn_pin_it_needs() -> None:
    stack = resolve(gpu="Tesla V100 SXM2", os="24.04", frameworks=["jax"])
    assert _jax(stack).variant == "cuda12"
    assert any("pin nvidia-cudnn-cu12==9.10.2.21 beside jax[cuda12]" in w for w in stack.warnings)


def test_the_extra_names_the_variant() -> None:
    assert _jax(resolve(os="24.04", frameworks=["jax[cuda12]==0.12.0"])).requirement == "jax[cuda12]==0.12.0"
    with pytest.raises(ResolutionError, match=r"jax\[cuda13\] 0.12.0.1 \(CUDA 13.0\) has no kernels for Tesla P100"):
        resolve(gpu="Tesla P100 PCIe", os="24.04", frameworks=["jax[cuda13]"])
    with pytest.raises(ResolutionError, match=r"'jax\[cuda13\]==0.7.1': no cuda13 wheels for it; variants: cuda12"):
        resolve(os="24.04", frameworks=["jax[cuda13]==0.7.1"])


def test_jax_beside_torch_is_told_to_live_in_its_own_environment() -> None:
    stack = resolve(gpu="H100 SXM", os="24.04", frameworks=["torch", "jax"])
    assert {f.name for f in stack.frameworks} == {"torch", "jax"}
    assert any("install it in a separate environment" in w and w.startswith("jax") for w in stack.warnings)


def test_the_jax_cuda13_driver_floor_is_cuda_13s() -> None:
    # CUDA 13 wheels need driver 580 (minor-version compatibility of CUDA 13)
    with pytest.raises(ResolutionError, match=r"CUDA 13.0"):
        resolve(gpu="H100 SXM", os="24.04", frameworks=["jax[cuda13]"], driver="570", driver_source="nvidia")


def test_python_env_installs_the_resolved_requirement() -> None:
    entry = {"version": "0.12.0.1", "variant": "cuda13", "cuda": "13.0", "index": "pypi"}
    assert python_env.framework_requirement("jax", entry) == "jax[cuda13]==0.12.0.1"
    assert python_env.framework_cuda("jax", entry) == "13.0"
    assert python_env.framework_index_url(entry) == ""
