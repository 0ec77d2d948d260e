"""NVIDIA's driver lifecycle and the late-2026 data: literal upstream values, as the sources give them.

drivers.yml `lifecycle` (NVIDIA's supported-drivers table, R620 edition): 580 long-term support until
2028-06, 595 production until 2027-03, 620 long-term support until 2029-09; 610 new feature, ended
2026-08; 615 new feature. cuda.yml: CUDA 13.4 needs 615.71.09, 13.5 needs 620.70.06.
"""

from __future__ import annotations

import pytest

from dlstack.matrix import load_matrix
from dlstack.resolver import TODAY_ENV, ResolutionError, resolve


@pytest.fixture(autouse=True)
def _today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "2026-11-30")


def _lifecycle_warnings(stack_warnings: tuple[str, ...]) -> list[str]:
    return [w for w in stack_warnings if "end of life" in w or "new-feature" in w]


def test_a_fresh_host_gets_the_newest_supported_production_branch_not_the_newer_new_feature_one() -> None:
    stack = resolve(os="24.04")
    assert (stack.driver_branch, stack.cuda) == ("595", "13.2")
    assert _lifecycle_warnings(stack.warnings) == []


def test_a_new_feature_branch_comes_in_only_when_no_supported_branch_fits_and_says_so() -> None:
    stack = resolve(os="24.04", cuda="13.4")
    assert (stack.driver_branch, stack.driver_min_version) == ("615", "615.71.09")
    (warning,) = _lifecycle_warnings(stack.warnings)
    assert "615 is a new-feature branch" in warning
    assert "595 (production until 2027-03)" in warning and "580 (lts until 2028-06)" in warning


def test_when_a_production_branch_ends_the_resolver_moves_to_a_supported_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "2027-03-31")
    assert resolve(os="24.04").driver_branch == "595"  # supported through March
    monkeypatch.setenv(TODAY_ENV, "2027-04-01")
    stack = resolve(os="24.04")
    assert (stack.driver_branch, stack.cuda) == ("580", "13.0")


def test_a_pinned_branch_past_its_end_of_life_is_kept_with_a_warning() -> None:
    stack = resolve(os="22.04", driver="470")
    assert stack.driver_branch == "470"
    (warning,) = _lifecycle_warnings(stack.warnings)
    assert "driver branch 470 is past NVIDIA's end of life" in warning
    assert "playbooks/upgrade.yml" in warning
    stack = resolve(os="24.04", driver="535", driver_source="nvidia")
    assert "driver branch 535 is past NVIDIA's end of life (2026-06" in _lifecycle_warnings(stack.warnings)[0]


def test_a_bad_date_is_an_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "30.11.2026")
    with pytest.raises(ResolutionError, match=r"DLSTACK_TODAY='30.11.2026' is not a date; expected YYYY-MM-DD"):
        resolve(os="24.04")


def test_every_branch_ubuntu_packages_has_a_lifecycle() -> None:
    matrix = load_matrix()
    for release in matrix.ubuntu.values():
        for branch in release.drivers:
            driver = matrix.driver_branch(branch)
            assert driver is not None and driver.lifecycle is not None, (release.version, branch)


@pytest.mark.parametrize(("cuda", "floor"), [("13.4", "615.71.09"), ("13.5", "620.70.06")])
def test_cuda_13_4_and_13_5_driver_floors(cuda: str, floor: str) -> None:
    # NVIDIA's repository: the supported 620 (long-term support) runs both natively
    assert resolve(os="24.04", cuda=cuda, driver_source="nvidia").driver_branch == "620"
    # 595 runs them only through CUDA 13's minor-version compatibility, and the warning names the floor
    stack = resolve(os="24.04", cuda=cuda, driver="595")
    assert f"driver branch 595 runs CUDA {cuda} through minor-version compatibility only" in " ".join(stack.warnings)
    assert f"driver >= {floor} runs it natively" in " ".join(stack.warnings)


def test_620_has_no_proprietary_modules() -> None:
    with pytest.raises(ResolutionError, match=r"driver branch 620 has no proprietary kernel modules"):
        resolve(os="24.04", driver="620", kernel_modules="proprietary", driver_source="nvidia")


def test_grace_hopper_is_refused_the_proprietary_modules() -> None:
    # GH200 is compute capability 9.0 like H100, but NVIDIA supports the platform with open modules only
    with pytest.raises(ResolutionError, match=r"GH200 \(hopper, compute capability 9.0\) runs only with the open"):
        resolve(gpu="GH200", os="24.04", kernel_modules="proprietary")
    assert resolve(gpu="GH200", os="24.04", driver="580").kernel_modules == "open"
    assert (
        resolve(gpu="H100 SXM", os="24.04", driver="580", kernel_modules="proprietary").kernel_modules == "proprietary"
    )


def test_h200_nvl_is_its_own_model_with_its_own_peaks() -> None:
    matrix = load_matrix()
    nvl = next(g for g in matrix.gpus if g.name == "H200 NVL")
    sxm = next(g for g in matrix.gpus if g.name == "H200")
    assert nvl.pci_ids == ("0x233b",) and "NVIDIA H200 NVL" in nvl.aliases
    assert "NVIDIA H200 NVL" not in sxm.aliases
    assert (nvl.peaks["tf32"], nvl.peaks["bf16"], nvl.peaks["mem_bw_gbs"]) == (417.5, 835.5, 4800)
    assert (sxm.peaks["tf32"], sxm.peaks["bf16"]) == (494.5, 989.5)


@pytest.mark.parametrize(
    ("gpu", "cc"),
    [
        ("NVIDIA GeForce GTX 1080", "6.1"),
        ("NVIDIA GeForce RTX 3070", "8.6"),
        ("NVIDIA RTX A4000", "8.6"),
        ("NVIDIA TITAN RTX", "7.5"),
        ("NVIDIA RTX 4000 Ada Generation", "8.9"),
        ("NVIDIA RTX PRO 4500 Blackwell", "12.0"),
        ("NVIDIA GeForce RTX 5060 Ti", "12.0"),
        ("NVIDIA L20", "8.9"),
        ("NVIDIA H20", "9.0"),
        ("NVIDIA B300 SXM6 AC", "10.3"),
    ],
)
def test_the_gpus_users_own_are_known_by_their_nvidia_smi_names(gpu: str, cc: str) -> None:
    assert resolve(gpu=gpu, os="24.04").target.gpu.cc == cc  # type: ignore[union-attr]


@pytest.mark.parametrize("torch", ["2.11.0", "2.12.1", "2.13.0", "2.14.1"])
def test_a_v100_gets_cu126_from_2_11_on(torch: str) -> None:
    # 2.11's cu128 dropped Volta (pytorch PR #175253); cu13 starts at Turing
    stack = resolve(gpu="Tesla V100 SXM2", os="24.04", frameworks=[f"torch=={torch}"])
    assert (stack.frameworks[0].version, stack.frameworks[0].variant) == (torch, "cu126")
    with pytest.raises(ResolutionError):
        resolve(gpu="Tesla V100 SXM2", os="24.04", frameworks=[f"torch=={torch}"], cuda="12.8")


def test_a_v100_still_gets_cu128_on_2_10() -> None:
    stack = resolve(gpu="Tesla V100 SXM2", os="24.04", frameworks=["torch==2.10.0"], cuda="12.8")
    assert stack.frameworks[0].variant == "cu128"


@pytest.mark.parametrize("torch", ["2.12.0", "2.12.1"])
def test_2_12_has_no_cu128_and_ships_cu132(torch: str) -> None:
    with pytest.raises(ResolutionError, match=rf"torch {torch} wheels exist for cu130 \(CUDA 13.0\), cu132"):
        resolve(os="24.04", frameworks=[f"torch=={torch}"], cuda="12.8")
    assert resolve(os="24.04", frameworks=[f"torch=={torch}"], cuda="13.2").frameworks[0].variant == "cu132"


def test_cu129_from_2_12_1_and_in_2_13_not_in_2_12_0() -> None:
    assert resolve(os="24.04", frameworks=["torch==2.12.1"], cuda="12.9").frameworks[0].variant == "cu129"
    assert resolve(os="24.04", frameworks=["torch==2.13.0"], cuda="12.9").frameworks[0].variant == "cu129"
    with pytest.raises(ResolutionError):
        resolve(os="24.04", frameworks=["torch==2.12.0"], cuda="12.9")


def test_x86_64_cu13_wheels_carry_no_sm_110() -> None:
    matrix = load_matrix()
    torch = next(r for r in matrix.frameworks["torch"] if str(r.version) == "2.15.0")
    for variant in torch.variants:
        assert (11, 0) not in variant.archs and (7, 5) in variant.archs
