"""containers/healthcheck.sh picks GPU or CPU mode from a (fake) sysfs and /dev, and passes the right
arguments to gpu_verify.py: a stub python3 on PATH prints the arguments it was given.

The script runs under dash (Ubuntu's /bin/sh, POSIX) and, where installed, busybox sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK = ROOT / "containers" / "healthcheck.sh"
SHELLS = [shell for shell in ("dash", "sh") if shutil.which(shell)]
if shutil.which("busybox"):
    SHELLS.append("busybox")


def pci(sysfs: Path, address: str, vendor: str, pci_class: str) -> None:
    device = sysfs / "bus" / "pci" / "devices" / address
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n", encoding="utf-8")
    (device / "class").write_text(pci_class + "\n", encoding="utf-8")


@pytest.fixture
def tree(tmp_path):
    """A fake sysfs with an Intel GPU and a virtio disk, an empty /dev, and a stub python3."""
    sysfs, dev, bin_dir = tmp_path / "sys", tmp_path / "dev", tmp_path / "bin"
    pci(sysfs, "0000:00:02.0", "0x8086", "0x030000")
    pci(sysfs, "0000:00:04.0", "0x1af4", "0x010000")
    dev.mkdir()
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    stub.chmod(0o755)
    return tmp_path


def healthcheck(tree: Path, *args: str, shell: str = "sh", **env: str) -> subprocess.CompletedProcess:
    environ = {
        "PATH": f"{tree / 'bin'}:{os.environ['PATH']}",
        "DLSTACK_SYSFS_ROOT": str(tree / "sys"),
        "DLSTACK_DEV_ROOT": str(tree / "dev"),
        **env,
    }
    argv = [shell, "sh", str(HEALTHCHECK), *args] if shell == "busybox" else [shell, str(HEALTHCHECK), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=environ, timeout=30)


def passed_args(tree: Path, *args: str, shell: str = "sh", **env: str) -> list[str]:
    proc = healthcheck(tree, *args, shell=shell, **env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "/opt/dlstack/gpu_verify.py"
    return lines[1:]


@pytest.mark.parametrize("shell", SHELLS)
def test_no_nvidia_device_runs_on_the_cpu(tree, shell):
    args = passed_args(tree, shell=shell, DLSTACK_FRAMEWORKS="torch,tensorflow")
    assert "--cpu" in args and "--expect-gpu" not in args
    assert args[args.index("--frameworks") + 1] == "torch,tensorflow"
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--require"] == ["torch", "tensorflow"]
    assert "--skip-perf" in args
    assert args[args.index("--train-steps") + 1] == "20"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("pci_class", ["0x030000", "0x030200"])
def test_nvidia_gpu_on_the_pci_bus_means_gpu_mode(tree, shell, pci_class):
    pci(tree / "sys", "0000:01:00.0", "0x10de", pci_class)
    args = passed_args(tree, shell=shell)
    assert "--expect-gpu" in args and "--cpu" not in args


def test_nvswitch_alone_is_not_a_gpu(tree):
    pci(tree / "sys", "0000:c1:00.0", "0x10de", "0x068000")
    pci(tree / "sys", "0000:01:00.1", "0x10de", "0x040300")  # a GPU's HDMI audio function
    assert "--cpu" in passed_args(tree)


def test_a_device_node_without_a_gpu_is_no_evidence(tree):
    # NVML creates /dev/nvidiactl through nvidia-modprobe even where no driver is loaded
    (tree / "dev" / "nvidiactl").write_text("", encoding="utf-8")
    assert "--cpu" in passed_args(tree)


def test_cpu_mode_asked_for_by_name_wins_over_a_gpu(tree):
    pci(tree / "sys", "0000:01:00.0", "0x10de", "0x030200")
    args = passed_args(tree, DLSTACK_HEALTHCHECK_MODE="cpu")
    assert "--cpu" in args and "--expect-gpu" not in args


def test_gpu_mode_can_be_forced_without_a_gpu(tree):
    args = passed_args(tree, DLSTACK_HEALTHCHECK_MODE="gpu", DLSTACK_FRAMEWORKS="")
    assert "--expect-gpu" in args and "--cpu" not in args
    assert "--require" not in args


def test_arguments_and_train_steps_are_passed_on(tree):
    args = passed_args(tree, "--json", DLSTACK_HEALTHCHECK_TRAIN_STEPS="7")
    assert args[0] == "--json"
    assert args[args.index("--train-steps") + 1] == "7"


def test_missing_sysfs_means_cpu_mode(tree):
    shutil.rmtree(tree / "sys")
    assert "--cpu" in passed_args(tree)


def test_unknown_mode_is_refused(tree):
    proc = healthcheck(tree, DLSTACK_HEALTHCHECK_MODE="GPU")
    assert proc.returncode == 1  # Docker reserves 2
    assert "expected auto, gpu or cpu" in proc.stderr
    assert proc.stdout == ""
