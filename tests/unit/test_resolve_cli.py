"""`scripts/dlstack resolve` end to end (a subprocess per case), with cases from NVIDIA's, PyTorch's
and TensorFlow's own tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dlstack"), "resolve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _stack(*args: str) -> dict[str, Any]:
    result = _run(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_p100_torch_2_9() -> None:
    stack = _stack("--gpu", "Tesla P100-PCIE-16GB", "--framework", "torch==2.9.*", "--os", "ubuntu24.04")
    assert stack["frameworks"]["torch"]["variant"] == "cu126"
    assert stack["frameworks"]["torch"]["index_url"] == "https://download.pytorch.org/whl/cu126"
    assert int(stack["driver"]["branch"]) <= 580
    assert stack["os"] == "24.04"


def test_tensorflow_2_17() -> None:
    stack = _stack("--framework", "tensorflow==2.17.*")
    assert stack["cuda"] == "12.3"
    assert stack["cudnn"].startswith("8.9.")


def test_h100_newest_torch_on_noble() -> None:
    # PyPI's torch 2.15.0 wheel requires cuda-toolkit 13.2 (driver >= 595.45.04 per CUDA 13.2's release notes)
    stack = _stack("--gpu", "NVIDIA H100 80GB HBM3", "--os", "ubuntu24.04", "--framework", "torch", "--driver", "595")
    assert stack["frameworks"]["torch"] == {
        "version": "2.15.0",
        "variant": "cu132",
        "cuda": "13.2",
        "index": "pypi",
        "index_url": None,
        "requirement": "torch==2.15.0",
        # no torchvision was published for 2.15.0 on 2026-11-30, and torchaudio ended with 2.11
        "companions": {"torchvision": None, "torchaudio": None},
    }
    assert stack["driver"]["min_version"] == "595.45.04"
    assert stack["driver"]["kernel_modules"] == "open"
    assert stack["python"] == "3.12"


def test_two_frameworks() -> None:
    stack = _stack("--gpu", "NVIDIA A100-SXM4-80GB", "--framework", "torch==2.9.1", "--framework", "tensorflow>=2.18")
    assert set(stack["frameworks"]) == {"torch", "tensorflow"}
    assert stack["frameworks"]["tensorflow"]["version"] == "2.21.0"
    assert stack["os"] == "24.04"  # TensorFlow has no Python 3.14 wheels (Ubuntu 26.04)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--framework", "torch==2.9.1+cu130", "--driver", "535"],
            ["CUDA 13.0 needs driver >= 580.65.06", "driver branch 535 runs CUDA <= 12.2"],
        ),
        (
            ["--gpu", "Tesla V100-SXM2-16GB", "--kernel-modules", "open"],
            ["open kernel modules need compute capability 7.5", "kernel_modules=proprietary"],
        ),
        (["--gpu", "NVIDIA GeForce RTX 5090", "--framework", "tensorflow"], ["has no kernels for GeForce RTX 5090"]),
        (["--gpu", "Tesla P100-PCIE-16GB", "--driver", "590"], ["driver branch 590 does not support Tesla P100 PCIe"]),
    ],
)
def test_conflicts_exit_2_with_the_reasons(args: list[str], fragments: list[str]) -> None:
    result = _run(*args, "--json")  # with --json the error is a JSON object on stdout (dlstack.cli)
    assert result.returncode == 2
    assert result.stderr == ""
    error = json.loads(result.stdout)
    assert error["exit_code"] == 2
    for fragment in fragments:
        assert fragment in error["error"]


def test_bad_input_exits_2() -> None:
    result = _run("--gpu", "H100 SXN", "--cuda", "12", "--os", "ubuntu18.04")
    assert result.returncode == 2
    assert "closest known: H100 SXM" in result.stderr
    assert "cuda='12'" in result.stderr
    assert "os='ubuntu18.04'" in result.stderr


def test_readable_table() -> None:
    result = _run("--gpu", "NVIDIA L4", "--os", "ubuntu22.04", "--framework", "torch==2.9.1")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if not line.startswith("warning"))
    assert lines["CUDA"] == "12.8"
    assert lines["Ubuntu"] == "22.04 (Python 3.10)"
    assert lines["torch"].startswith("torch==2.9.1 (cu128, CUDA 12.8) from PyPI")
