"""gpu_verify's check logic with fakes, and the real script run with --cpu in a subprocess."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from gpu_verify_script import SCRIPT, gv

ROOT = Path(__file__).resolve().parents[2]


def make_ctx(*argv: str, gpus=None):
    ctx = gv.Context(args=gv.parse_args(list(argv)))
    ctx.fraction_overrides = gv.parse_min_fractions(ctx.args.min_fraction)
    ctx.gpus = list(gpus or [])
    return ctx


def h100(driver: str = "550.54.15"):
    return gv.GPUInfo(index=0, name="NVIDIA H100 80GB HBM3", memory_total_mib=81559, driver_version=driver)


# -- driver / kernel module --------------------------------------------------------------------


def write_proc(tmp_path: Path, version: str) -> Path:
    proc = tmp_path / "version"
    proc.write_text(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Tue Mar  5 2024\n", encoding="utf-8")
    return proc


def test_kernel_module_version_mismatch_fails(tmp_path):
    result = gv.check_kernel_module(make_ctx(gpus=[h100("550.54.15")]), write_proc(tmp_path, "535.104.05"))
    assert result.status == gv.FAIL
    assert "Driver/library version mismatch" in result.message
    assert result.details == {"kernel_module": "535.104.05", "userspace": "550.54.15"}


def test_kernel_module_version_match_passes(tmp_path):
    result = gv.check_kernel_module(make_ctx(gpus=[h100("550.54.15")]), write_proc(tmp_path, "550.54.15"))
    assert result.status == gv.PASS


def test_kernel_module_not_loaded_fails(tmp_path):
    result = gv.check_kernel_module(make_ctx(gpus=[h100()]), tmp_path / "missing")
    assert result.status == gv.FAIL
    assert "not loaded" in result.message


@pytest.mark.parametrize(("kernel", "user", "agree"), [("1.2", "1.2", True), ("1.2", "1.3", False), (None, "1", None)])
def test_driver_versions_agree(kernel, user, agree):
    assert gv.driver_versions_agree(kernel, user) is agree


def test_cuda_version_string():
    assert gv.cuda_version_string(12040) == "12.4"
    assert gv.cuda_version_string(13020) == "13.2"


# -- training and maths ------------------------------------------------------------------------


def test_loss_falling():
    assert gv.loss_is_falling([2.3, 2.2, 1.0, 0.5], k=2)


def test_loss_not_falling():
    assert not gv.loss_is_falling([2.3, 2.2, 2.3, 2.4], k=2)


def test_loss_with_nan_is_not_falling():
    assert not gv.loss_is_falling([2.3, 2.2, math.nan, 0.1], k=2)


def test_loss_needs_two_windows():
    with pytest.raises(ValueError, match="at least 2"):
        gv.loss_is_falling([1.0, 0.5, 0.1], k=2)


def test_matmul_tflops():
    assert gv.matmul_tflops(8192, 1e-3) == pytest.approx(2 * 8192**3 / 1e-3 / 1e12)
    with pytest.raises(ValueError, match="seconds_per_iter"):
        gv.matmul_tflops(8192, 0)


@pytest.mark.parametrize(
    ("achieved", "peak", "minimum", "status"),
    [(700.0, 989.0, 0.5, "pass"), (400.0, 989.0, 0.5, "fail"), (494.5, 989.0, 0.5, "pass"), (700.0, None, 0.5, "warn")],
)
def test_fraction_of_peak_judged(achieved, peak, minimum, status):
    assert gv.judge_fraction(gv.fraction_of_peak(achieved, peak), minimum) == status


def test_record_perf_uses_peak_and_stores_measurement():
    ctx = make_ctx("--min-fraction", "bf16=0.5", gpus=[h100()])
    # 741.75 TFLOP/s in the median run, 750 in the best
    timing = gv.Timing([1 / 741.75, 1 / 750.0, 1 / 700.0])
    result = gv.record_perf(ctx, 0, "matmul_bf16", timing, 1.0, "TFLOP/s", 989.0)
    assert result.status == gv.PASS
    assert result.id == "perf.matmul_bf16[0]"
    assert "75% of 989 (minimum 50%: --min-fraction" in result.message
    (perf,) = ctx.perf
    assert perf.fraction == pytest.approx(0.75)
    assert perf.best == pytest.approx(750.0)
    assert perf.spread == pytest.approx(750 / 700 - 1, abs=1e-4)
    assert perf.gpu_name == "NVIDIA H100 80GB HBM3"


def test_peaks_lookup_by_exact_and_normalised_name():
    peaks = {"NVIDIA H100 80GB HBM3": {"bf16": 989.0}, "Tesla T4": {"fp16": 65.0}}
    assert gv.peaks_for("NVIDIA H100 80GB HBM3", peaks) == {"bf16": 989.0}
    assert gv.peaks_for("nvidia tesla t4", peaks) == {"fp16": 65.0}
    assert gv.peaks_for("NVIDIA L4", peaks) is None


def test_load_peaks(tmp_path):
    path = tmp_path / "peaks.json"
    path.write_text(json.dumps({"NVIDIA H100 80GB HBM3": {"bf16": 989, "fp8": None}}), encoding="utf-8")
    assert gv.load_peaks(str(path)) == {"NVIDIA H100 80GB HBM3": {"bf16": 989.0}}
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="expected an object"):
        gv.load_peaks(str(path))


def test_min_fraction_override_and_errors():
    assert gv.parse_min_fractions(["bf16=0.7"]) == {"bf16": 0.7}
    assert gv.parse_min_fractions([]) == {}  # no override: the per-model thresholds apply
    with pytest.raises(ValueError, match="KEY one of"):
        gv.parse_min_fractions(["int4=0.5"])
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        gv.parse_min_fractions(["bf16=1.5"])


def test_allreduce_bus_bandwidth():
    assert gv.allreduce_busbw_gbs(10**9, 0.01, 8) == pytest.approx(175.0)
    assert gv.allreduce_busbw_gbs(10**9, 0.01, 2) == pytest.approx(100.0)


def test_pcie_peak():
    assert gv.pcie_peak_gbs(4, 16) == pytest.approx(31.5, abs=0.1)
    assert gv.pcie_peak_gbs(None, 16) is None


# -- statuses and exit codes -------------------------------------------------------------------


def result(status: str, required: bool = True, check_id: str = "x"):
    return gv.CheckResult(check_id, "system", status, "m", required=required)


@pytest.mark.parametrize(
    ("statuses", "exit_code"),
    [
        ([("pass", True), ("skip", True), ("warn", True)], 0),
        ([("pass", True), ("fail", True)], 1),
        ([("pass", True), ("fail", False)], 0),
        ([], 0),
    ],
)
def test_exit_code_rules(statuses, exit_code):
    summary = gv.overall([result(status, required) for status, required in statuses])
    assert summary["exit_code"] == exit_code
    assert summary["status"] == ("fail" if exit_code else "pass")


def test_unknown_status_rejected():
    with pytest.raises(ValueError, match="not one of"):
        result("ok")


def test_strict_hardware_turns_hardware_warning_into_failure():
    ctx = make_ctx("--strict-hardware")
    added = ctx.add(gv.CheckResult("hardware.ram", "hardware", gv.WARN, "8 GiB"))
    assert added.status == gv.FAIL
    assert ctx.add(gv.CheckResult("system.gpu[0]", "system", gv.WARN, "hot")).status == gv.WARN


def test_crashing_check_becomes_named_failure():
    def boom():
        raise RuntimeError("CUDA error: no kernel image is available")

    ctx = make_ctx()
    outcome = gv.run_check(ctx, "torch.lenet[cuda:0]", "framework", boom)
    assert outcome.status == gv.FAIL
    assert outcome.message == "RuntimeError: CUDA error: no kernel image is available"
    assert ctx.results == [outcome]


def test_ram_audit_scales_with_gpu_memory():
    ctx = make_ctx("--min-ram-gib", "1", gpus=[h100()] * 8)  # 8 x 80 GiB of GPU memory
    outcome = gv.check_ram(ctx)
    total = gv.parse_meminfo_total_gib(Path("/proc/meminfo").read_text(encoding="utf-8"))
    assert outcome.status == (gv.WARN if total < 8 * 81559 / 1024 else gv.PASS)
    assert outcome.details["wanted_gib"] == pytest.approx(8 * 81559 / 1024, abs=0.1)


# -- the real script ---------------------------------------------------------------------------


@pytest.fixture
def no_frameworks(tmp_path):
    """A PYTHONPATH entry that makes torch and tensorflow absent, whatever this interpreter has."""
    for name in ("torch", "tensorflow"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'raise ImportError("No module named {name!r}")\n')
    return tmp_path


def run_script(*args: str, pythonpath: Path, path_env: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(pythonpath), "PATH": path_env, "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_cpu_mode_without_frameworks_exits_zero(tmp_path, no_frameworks):
    out = tmp_path / "report.json"
    proc = run_script("--cpu", "--json-out", str(out), "--data-dir", str(tmp_path), pythonpath=no_frameworks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["schema_version"] == gv.SCHEMA_VERSION
    assert report["mode"] == "cpu"
    checks = {check["id"]: check for check in report["checks"]}
    for check_id in ("system.nvidia_smi", "system.kernel_module", "system.cuda_driver", "hardware.gpu_memory"):
        assert checks[check_id]["status"] == "skip"
        assert checks[check_id]["message"] == "--cpu: GPU checks skipped"
    assert checks["torch.import"] == checks["torch.import"] | {"status": "skip", "message": "torch not installed"}
    assert checks["tensorflow.import"]["status"] == "skip"
    assert checks["hardware.cpu"]["details"]["physical_cores"] > 0
    assert checks["hardware.disk"]["details"]["data_dir"] == str(tmp_path)
    assert report["summary"]["status"] == "pass"
    assert "PASS" in proc.stdout.splitlines()[-1]


def test_required_framework_missing_fails(tmp_path, no_frameworks):
    proc = run_script("--cpu", "--require", "torch", "--json", "--data-dir", str(tmp_path), pythonpath=no_frameworks)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["summary"]["failed"] == ["torch.import"]


def test_gpu_mode_without_nvidia_smi_fails(tmp_path, no_frameworks):
    args = ("--expect-gpu", "--json", "--data-dir", str(tmp_path))
    proc = run_script(*args, pythonpath=no_frameworks, path_env=str(tmp_path))
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["mode"] == "gpu"
    checks = {check["id"]: check for check in report["checks"]}
    assert checks["system.nvidia_smi"]["status"] == "fail"
    assert "nvidia-smi: command not found" in checks["system.nvidia_smi"]["message"]


def test_bad_peaks_file_is_usage_error(tmp_path, no_frameworks):
    proc = run_script("--cpu", "--peaks", str(tmp_path / "none.json"), pythonpath=no_frameworks)
    assert proc.returncode == 2
    assert "gpu_verify: error" in proc.stderr


def test_lenet_learns_on_cpu():
    torch = pytest.importorskip("torch", reason="torch not installed in this interpreter")
    outcome = gv.check_torch_lenet(make_ctx("--cpu", "--train-steps", "40"), torch, "cpu")
    assert outcome.status == gv.PASS, outcome.message
    assert outcome.details["last_k_mean"] < outcome.details["first_k_mean"]
