"""The resolver against real cases from NVIDIA's, PyTorch's and TensorFlow's own tables."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import pytest

from dlstack.matrix import load_matrix
from dlstack.resolver import ResolutionError, Stack, find_gpu, gpu_from_smi, resolve


def _error(**kwargs: object) -> str:
    with pytest.raises(ResolutionError) as info:
        resolve(**kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------- the four cases of the issue


def test_torch_cu130_wheels_with_driver_535_is_an_error() -> None:
    message = _error(frameworks=["torch==2.9.1+cu130"], driver="535")
    assert "CUDA 13.0 needs driver >= 580.65.06" in message
    assert "535" in message
    # and it says what fits: another driver, or the same torch with CUDA 12 wheels
    assert "cu126" in message
    assert "without driver=535" in message


def test_p100_with_torch_2_9_gets_cu126_wheels_and_a_driver_no_newer_than_580() -> None:
    stack = resolve(gpu="Tesla P100-PCIE-16GB", frameworks=["torch==2.9.*"]).to_dict()
    torch = stack["frameworks"]["torch"]
    assert torch["version"] == "2.9.1"
    assert torch["variant"] == "cu126"
    assert torch["index"] == "pytorch"
    assert torch["index_url"] == "https://download.pytorch.org/whl/cu126"
    assert int(stack["driver"]["branch"]) <= 580
    assert stack["driver"]["kernel_modules"] == "proprietary"
    assert stack["cuda"] == "12.6"


def test_open_kernel_modules_on_a_v100_is_an_error() -> None:
    message = _error(gpu="Tesla V100-SXM2-16GB", kernel_modules="open")
    assert "open kernel modules need compute capability 7.5" in message
    assert "kernel_modules=proprietary" in message


def test_tensorflow_2_17_gets_cuda_12_3_and_cudnn_8_9() -> None:
    stack = resolve(frameworks=["tensorflow==2.17.*"]).to_dict()
    assert stack["cuda"] == "12.3"
    assert stack["cudnn"].startswith("8.9.")
    assert stack["frameworks"]["tensorflow"]["requirement"] == "tensorflow[and-cuda]==2.17.1"


# ----------------------------------------------------------------------------- further real cases


@pytest.mark.parametrize(
    ("spec", "variant", "cuda", "index"),
    [
        ("torch==2.15.0", "cu132", "13.2", "pypi"),  # PyPI's torch 2.15.0 wheel requires cuda-toolkit 13.2.x
        ("torch==2.14.1", "cu130", "13.0", "pypi"),
        ("torch==2.10.0", "cu128", "12.8", "pypi"),  # nvidia-cuda-runtime-cu12==12.8.90
        ("torch==2.7.1", "cu126", "12.6", "pypi"),
        ("torch==2.6.0", "cu124", "12.4", "pypi"),
    ],
)
def test_pypi_default_wheels_on_an_h100(spec: str, variant: str, cuda: str, index: str) -> None:
    stack = resolve(gpu="NVIDIA H100 80GB HBM3", os="24.04", frameworks=[spec]).to_dict()
    assert stack["frameworks"]["torch"]["variant"] == variant
    assert stack["frameworks"]["torch"]["index"] == index
    assert stack["frameworks"]["torch"]["index_url"] is None
    assert stack["cuda"] == cuda


@pytest.mark.parametrize(
    ("framework", "cuda", "cudnn"),
    [
        ("tensorflow==2.12.0", "11.8", "8.6"),
        ("tensorflow==2.14.0", "11.8", "8.7"),
        ("tensorflow==2.15.0", "12.2", "8.9"),
        ("tensorflow==2.16.1", "12.3", "8.9"),
        ("tensorflow==2.18.0", "12.5", "9.3"),
        ("tensorflow==2.21.0", "12.5", "9.3"),
    ],
)
def test_tensorflow_tested_build_configurations(framework: str, cuda: str, cudnn: str) -> None:
    stack = resolve(os="22.04", frameworks=[framework]).to_dict()
    assert stack["cuda"] == cuda
    assert stack["cudnn"].startswith(cudnn + ".")


def test_rtx_5090_has_no_tensorflow() -> None:
    message = _error(gpu="NVIDIA GeForce RTX 5090", frameworks=["tensorflow"])
    assert "has no kernels for GeForce RTX 5090" in message
    assert "CUDA 12.5 supports compute capability 5.0 to 9.0" in message


def test_rtx_5090_needs_torch_2_7_cu128_or_newer() -> None:
    assert "has no kernels" in _error(gpu="NVIDIA GeForce RTX 5090", frameworks=["torch==2.6.0"])
    stack = resolve(gpu="NVIDIA GeForce RTX 5090", frameworks=["torch==2.7.1"]).to_dict()
    assert stack["frameworks"]["torch"]["variant"] == "cu128"
    assert stack["driver"]["kernel_modules"] == "open"
    assert int(stack["driver"]["branch"]) >= 570


def test_blackwell_with_proprietary_modules_is_an_error() -> None:
    message = _error(gpu="B200", kernel_modules="proprietary")
    assert "runs only with the open kernel modules" in message


def test_pascal_on_driver_590_is_an_error_naming_580() -> None:
    message = _error(gpu="Tesla P100-SXM2-16GB", driver="590")
    assert "driver branch 590 does not support Tesla P100 SXM2" in message
    assert "to 580" in message


def test_volta_with_torch_2_15_is_an_error() -> None:
    # torch 2.15.0 publishes CUDA 13 wheels only and CUDA 13 starts at Turing (sm_75)
    message = _error(gpu="Tesla V100-SXM2-32GB", frameworks=["torch==2.15.0"])
    assert "torch 2.15.0+cu132 has no kernels for Tesla V100 SXM2" in message


def test_kepler_stays_on_r470_and_cuda_11() -> None:
    stack = resolve(gpu="Tesla K80").to_dict()
    assert stack["driver"]["branch"] == "470"
    assert stack["cuda"] == "11.8"
    assert stack["os"] == "22.04"  # Ubuntu 26.04 does not package R470
    assert any("minor-version compatibility" in w for w in stack["warnings"])


def test_ubuntu_26_04_python_3_14_has_no_tensorflow() -> None:
    message = _error(os="ubuntu26.04", frameworks=["tensorflow==2.21.0"])
    assert "Ubuntu 26.04 ships Python 3.14" in message
    assert "without os=ubuntu26.04: ubuntu24.04 fits" in message


def test_ubuntu_22_04_python_3_10_gets_the_last_torch_for_it() -> None:
    stack = resolve(os="22.04", frameworks=["torch"]).to_dict()
    assert stack["python"] == "3.10"
    assert stack["frameworks"]["torch"]["version"] == "2.14.1"  # 2.15.0 requires Python >= 3.11


def test_cuda_that_a_torch_release_has_no_wheels_for() -> None:
    message = _error(cuda="12.8", frameworks=["torch==2.15.0"])
    assert "cu132 (CUDA 13.2), cu130 (CUDA 13.0)" in message


def test_driver_ubuntu_does_not_package_and_nvidia_source() -> None:
    message = _error(os="22.04", driver="555")
    assert "Ubuntu 22.04 does not package driver branch 555" in message
    stack = resolve(os="22.04", driver="555", driver_source="nvidia").to_dict()
    assert stack["driver"]["packages_available_in_ubuntu"] is False
    assert stack["cuda"] == "12.5"


def test_no_cuda_toolkit_for_the_os_without_frameworks() -> None:
    # NVIDIA's repository serves CUDA 13.2 and newer for Ubuntu 26.04; driver 535 runs CUDA 12.2 at most
    message = _error(os="26.04", driver="535", driver_source="nvidia")
    assert "CUDA 13.5 needs driver >= 620.70.06" in message
    assert "without os=ubuntu26.04: ubuntu24.04 fits" in message


def test_every_violated_rule_is_named() -> None:
    message = _error(gpu="B200", kernel_modules="proprietary", driver="535", os="22.04", frameworks=["torch==2.15.0"])
    assert "Ubuntu 22.04 ships Python 3.10" in message
    assert "driver branch 535 does not support B200" in message
    assert "CUDA 13.2 needs driver >= 595.45.04" in message
    assert "runs only with the open kernel modules" in message


def test_newest_stack_when_nothing_is_given() -> None:
    stack = resolve().to_dict()
    assert stack["gpu"] is None
    assert stack["os"] == "26.04"
    assert stack["python"] == "3.14"
    assert any("no GPU given" in w for w in stack["warnings"])


def test_min_version_follows_cuda_and_the_given_driver() -> None:
    assert resolve(driver="580", cuda="12.8").driver_min_version == "580.65.06"
    assert resolve(driver="580.95.05").driver_min_version == "580.95.05"
    assert resolve(driver="570", cuda="12.8", driver_source="nvidia").driver_min_version == "570.26"


def test_a_transitional_ubuntu_branch_is_not_packaged() -> None:
    # nvidia-driver-570 on 24.04 only depends on nvidia-driver-580: Ubuntu does not package 570.
    assert "Ubuntu 24.04 does not package driver branch 570" in _error(driver="570", os="ubuntu24.04")


def test_compute_capability_alone() -> None:
    stack = resolve(compute_capability="8.6").to_dict()
    assert stack["gpu"] == {"name": None, "compute_capability": "8.6", "architecture": "ampere"}


def test_gpu_and_compute_capability_must_agree() -> None:
    assert "has compute capability 9.0, not 8.0" in _error(gpu="H100 SXM", compute_capability="8.0")


def test_unknown_gpu_gets_the_closest_names() -> None:
    # "H100" alone is a family (tests/unit/test_resolver_gpu_names.py); a misspelt model is not
    message = _error(gpu="H100 SXN")
    assert "closest known:" in message
    assert "H100 SXM" in message


def test_malformed_inputs_are_all_reported_at_once() -> None:
    message = _error(
        driver="5x", cuda="twelve", compute_capability="8", os="ubuntu20.04", frameworks=["torch===", "mxnet"]
    )
    for part in ("driver='5x'", "cuda='twelve'", "compute capability '8'", "os='ubuntu20.04'", "'torch==='", "'mxnet'"):
        assert part in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"driver": "999"}, "branch 999 is not one dlstack knows"),
        ({"cuda": "10.2"}, "CUDA 10.2 is not a release dlstack knows"),
        ({"kernel_modules": "nouveau"}, "use open or proprietary"),
        ({"driver_source": "ppa"}, "use ubuntu or nvidia"),
        ({"frameworks": ["torch==3.0"]}, "matches no torch release"),
        ({"frameworks": ["torch", "torch==2.9.*"]}, "torch is given twice"),
        ({"frameworks": ["torch==2.6.0+cu130"]}, "no cu130 wheels"),
    ],
)
def test_bad_values_are_rejected(kwargs: dict[str, object], fragment: str) -> None:
    message = _error(**kwargs)
    assert message.startswith("invalid input")
    assert fragment in message


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("Tesla V100-SXM2-16GB", "Tesla V100 SXM2"),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM4 40GB"),
        ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"),
        ("3b:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)", "H100 SXM"),
        ("00:1e.0 3D controller [0302]: NVIDIA Corporation TU104GL [Tesla T4] [10de:1eb8] (rev a1)", "Tesla T4"),
    ],
)
def test_gpu_from_smi_and_lspci(text: str, name: str) -> None:
    assert gpu_from_smi(text) == name


def test_gpu_from_smi_unknown() -> None:
    assert gpu_from_smi("Matrox G200eW") is None
    assert find_gpu("") is None


def test_stack_shape_and_immutability() -> None:
    stack = resolve(gpu="NVIDIA L4", os="24.04", frameworks=["torch==2.9.1"])
    data = stack.to_dict()
    assert set(data) == {"gpu", "os", "driver", "cuda", "cudnn", "nccl", "python", "frameworks", "warnings"}
    assert set(data["driver"]) == {"branch", "min_version", "kernel_modules", "packages_available_in_ubuntu"}
    assert set(data["frameworks"]["torch"]) >= {"version", "variant", "index", "index_url", "requirement"}
    assert data["frameworks"]["torch"]["requirement"] == "torch==2.9.1"
    assert isinstance(stack, Stack)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stack.cuda = "1.0"  # type: ignore[misc]


def test_resolution_is_fast() -> None:
    resolve()  # load and cache the data
    cases = [
        {"gpu": "NVIDIA A100-SXM4-80GB", "frameworks": ["torch", "tensorflow"]},
        {"gpu": "NVIDIA GeForce RTX 5090", "frameworks": ["tensorflow"]},
    ]
    for kwargs in cases:
        start = time.perf_counter()
        with contextlib.suppress(ResolutionError):
            resolve(**kwargs)
        assert time.perf_counter() - start < 0.1


def test_server_line_excludes_branches_ubuntu_ships_only_on_the_desktop_line():
    # 24.04 packages 545 only outside the -server line (ubuntu.yml); with the server line required
    # the resolver must not pick a branch without -server packages for the chosen modules.
    for line in ("server", "desktop"):
        stack = resolve(os="24.04", gpu="H100 SXM", driver_line=line).to_dict()
        release = load_matrix().ubuntu["24.04"]
        packaged = release.drivers[int(stack["driver"]["branch"])]
        wanted = {
            "server": {"open": "server-open", "proprietary": "server"},
            "desktop": {"open": "open", "proprietary": "proprietary"},
        }
        assert wanted[line][stack["driver"]["kernel_modules"]] in packaged.flavours


def test_server_line_with_proprietary_modules_skips_open_only_branches():
    stack = resolve(os="24.04", gpu="H100 SXM", kernel_modules="proprietary", driver_line="server").to_dict()
    assert "server" in load_matrix().ubuntu["24.04"].drivers[int(stack["driver"]["branch"])].flavours


def test_unknown_driver_line_is_rejected():
    with pytest.raises(ResolutionError, match="driver_line='laptop' is not accepted; use server or desktop"):
        resolve(driver_line="laptop")
