"""GPU names the resolver accepts: family names ("A100") whose models share what the resolver decides,
an empty name as an error, a compute capability alone; in Python and on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlstack.matrix import load_matrix
from dlstack.resolver import ResolutionError, gpu_family, resolve

ROOT = Path(__file__).resolve().parents[2]
MATRIX = load_matrix()


def _error(**kwargs: Any) -> str:
    with pytest.raises(ResolutionError) as info:
        resolve(**kwargs)
    return str(info.value)


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dlstack"), "resolve", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("family", "variants", "cc", "arch"),
    [
        ("A100", ["A100 SXM4 80GB", "A100 SXM4 40GB", "A100 PCIe 80GB", "A100 PCIe 40GB"], "8.0", "ampere"),
        ("H100", ["H100 SXM", "H100 PCIe", "H100 NVL"], "9.0", "hopper"),
        ("Tesla P100", ["Tesla P100 SXM2", "Tesla P100 PCIe"], "6.0", "pascal"),
        ("V100", ["Tesla V100 SXM2", "Tesla V100 PCIe"], "7.0", "volta"),
        ("NVIDIA A100 80GB", ["A100 SXM4 80GB", "A100 PCIe 80GB"], "8.0", "ampere"),
    ],
)
def test_a_family_resolves_and_says_which_models_it_covers(
    family: str, variants: list[str], cc: str, arch: str
) -> None:
    stack = resolve(gpu=family).to_dict()
    assert stack["gpu"] == {
        "name": None,
        "compute_capability": cc,
        "architecture": arch,
        "family": family,
        "variants": variants,
    }
    (note,) = [w for w in stack["warnings"] if "names a family" in w]
    assert all(name in note for name in variants)
    assert "datasheet peaks" in note


def test_a_family_is_as_strict_as_its_models() -> None:
    assert resolve(gpu="Tesla P100").driver_branch == resolve(gpu="Tesla P100-PCIE-16GB").driver_branch
    assert "driver branch 590 does not support Tesla P100 (pascal" in _error(gpu="Tesla P100", driver="590")


def test_a_family_whose_models_differ_lists_them() -> None:
    message = _error(gpu="RTX")
    assert "gpu='RTX' names models the resolver treats differently" in message
    assert "compute capability 8.6 (ampere): RTX A6000" in message
    assert "compute capability 12.0 (blackwell): RTX PRO 6000 Blackwell" in message


def test_a_prefix_of_one_model_is_that_model() -> None:
    assert resolve(gpu="RTX PRO 6000").to_dict()["gpu"]["name"] == "RTX PRO 6000 Blackwell"


def test_an_exact_name_wins_over_a_family() -> None:
    assert resolve(gpu="A10").to_dict()["gpu"]["name"] == "A10"  # not the A100s
    assert resolve(gpu="L40").to_dict()["gpu"]["name"] == "L40"  # not L40S


def test_a_family_and_a_compute_capability_must_agree() -> None:
    assert "gpu='A100' has compute capability 8.0, not 9.0" in _error(gpu="A100", compute_capability="9.0")
    assert resolve(gpu="A100", compute_capability="8.0").to_dict()["gpu"]["family"] == "A100"


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_gpu_is_an_error_not_no_gpu(empty: str) -> None:
    message = _error(gpu=empty)
    assert f"gpu={empty!r} is empty" in message
    assert "leave gpu out" in message


def test_an_empty_compute_capability_is_an_error() -> None:
    assert "compute capability '' is not of the form MAJOR.MINOR" in _error(compute_capability="")


# every whole-word prefix of every model name and alias
PREFIXES = sorted(
    {
        " ".join(label.split()[:n])
        for gpu in MATRIX.gpus
        for label in (gpu.name, *gpu.aliases)
        for n in range(1, len(label.split()) + 1)
    }
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PREFIXES))
def test_every_name_prefix_resolves_or_names_the_models(prefix: str) -> None:
    try:
        stack = resolve(gpu=prefix).to_dict()
    except ResolutionError as exc:
        message = str(exc)
        assert message.startswith("invalid input")
        family = gpu_family(prefix)
        assert len({g.compute_capability for g in family}) > 1 or not family
        assert all(g.name in message for g in family)
        return
    gpu = stack["gpu"]
    if gpu["name"] is None:  # a family: each of its models has the stack's compute capability
        models = [g for g in MATRIX.gpus if g.name in gpu["variants"]]
        assert len(models) > 1
        assert {g.cc for g in models} == {gpu["compute_capability"]}


# ----------------------------------------------------------------------------- the command line


def test_cli_family() -> None:
    result = _cli("--gpu", "A100", "--os", "ubuntu24.04")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("GPU"))
    assert row.split(None, 1)[1].startswith("A100 family (compute capability 8.0, ampere): A100 SXM4 80GB")
    assert "warning: gpu='A100' names a family" in result.stdout


@pytest.mark.parametrize("family", ["H100", "Tesla P100", "V100"])
def test_cli_families_as_json(family: str) -> None:
    result = _cli("--gpu", family, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gpu"]["family"] == family


def test_cli_empty_gpu_exits_2() -> None:
    result = _cli("--gpu", "")
    assert result.returncode == 2
    assert "argument --gpu: '' is empty" in result.stderr


def test_cli_compute_capability_alone() -> None:
    result = _cli("--compute-capability", "8.6", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gpu"] == {"name": None, "compute_capability": "8.6", "architecture": "ampere"}


def test_cli_pci_ids_and_lspci_from_stdin() -> None:
    lspci = (
        # a Pascal laptop GPU gpus.yml does not list: known only by the driver packages' Modaliases
        "01:00.0 3D controller [0302]: NVIDIA Corporation GP107M [GeForce GTX 1050 Ti Mobile] [10de:1c8c] (rev a1)\n"
    )
    result = _cli("--lspci", "-", "--os", "24.04", stdin=lspci)
    assert result.returncode == 0, result.stderr
    assert "PCI 10de:1c8c (compute capability 5.0 to 7.0, maxwell, pascal or volta)" in result.stdout
    refused = _cli("--pci-id", "1c8c", "--driver", "595")
    assert refused.returncode == 2
    assert "use a branch from 470 to 580" in refused.stderr
    unknown = _cli("--pci-id", "10de:ffff")
    assert unknown.returncode == 2
    assert "--gpu or --compute-capability" in unknown.stderr
    missing = _cli("--lspci", "/nonexistent/lspci.txt")
    assert missing.returncode == 2
    assert "--lspci /nonexistent/lspci.txt: cannot read it" in missing.stderr
