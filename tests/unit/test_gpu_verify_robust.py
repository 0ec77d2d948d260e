"""gpu_verify never dies without a report: crashes become failed checks, exit codes say which kind of end.

Exit codes: 0 every check passed, 1 a required check failed, 2 bad arguments, 3 the run could not finish.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from gpu_verify_script import gv


def test_a_framework_that_raises_on_import_is_reported_with_the_cause(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "brokenfw"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise OSError('libcudnn_graph.so.9: cannot open shared object file: No such file or directory')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module, reason = gv.import_framework("brokenfw")
    assert module is None
    assert reason == (
        "brokenfw is installed but failed to import: OSError: libcudnn_graph.so.9: cannot open shared object file: "
        "No such file or directory"
    )
    sys.modules.pop("brokenfw", None)


def _run(tmp_path: Path, *argv: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    code = gv.main(["--cpu", "--frameworks", "torch", "--json-out", str(out), "--json", *argv])
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_a_crash_outside_any_check_is_a_failed_check_and_the_report_is_written(tmp_path: Path, monkeypatch) -> None:
    def sticky_cuda_error(ctx) -> None:  # what empty_cache() raises after an illegal memory access
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gv, "torch_checks", sticky_cuda_error)
    code, report = _run(tmp_path)
    assert code == gv.EXIT_INCOMPLETE == 3
    crashed = next(c for c in report["checks"] if c["id"] == "torch.crashed")
    assert crashed["status"] == "fail"
    assert "RuntimeError: CUDA error: an illegal memory access was encountered" in crashed["message"]
    assert "sticky_cuda_error" in crashed["details"]["traceback"]
    assert report["summary"]["complete"] is False
    assert report["summary"]["incomplete"] == ["torch"]
    assert report["summary"]["exit_code"] == 3 and report["summary"]["status"] == "fail"
    # the checks before the crash are in the report too
    assert any(c["category"] == "system" for c in report["checks"])


def test_a_stale_report_never_survives_a_run(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    out.write_text('{"summary": {"status": "pass"}}\n')
    code = gv.main(
        ["--cpu", "--frameworks", "torch", "--json-out", str(out), "--peaks", str(tmp_path / "missing.json")]
    )
    assert code == gv.EXIT_USAGE
    assert not out.exists(), "the previous run's report was left for the role to fetch"


def test_an_unwritable_report_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = gv.main(["--cpu", "--frameworks", "torch", "--json-out", str(blocker / "report.json")])
    assert code == gv.EXIT_INCOMPLETE
    assert f"cannot write {blocker / 'report.json'}" in capsys.readouterr().err


def test_exit_codes_are_distinct() -> None:
    assert len({gv.EXIT_PASS, gv.EXIT_FAILED, gv.EXIT_USAGE, gv.EXIT_INCOMPLETE}) == 4
    fail = gv.CheckResult("x", "system", gv.FAIL, "broken")
    assert gv.overall([fail])["exit_code"] == gv.EXIT_FAILED
    assert gv.overall([fail], ["torch"])["exit_code"] == gv.EXIT_INCOMPLETE
    assert gv.overall([gv.CheckResult("x", "system", gv.PASS, "ok")])["exit_code"] == gv.EXIT_PASS


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (802, "CUDA_ERROR_SYSTEM_NOT_READY): on an NVSwitch system (HGX) Fabric Manager is not running"),
        (100, "CUDA_ERROR_NO_DEVICE): no GPU is visible: in a container run it with `--gpus all`"),
        (999, "CUDA_ERROR_UNKNOWN): often the nvidia_uvm module is not loaded"),
        (803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH): the loaded kernel module and libcuda are different versions"),
    ],
)
def test_cuinit_failures_come_with_their_name_and_a_fix(code: int, says: str) -> None:
    assert gv.cu_result_text(code).startswith(f"CUresult {code} (")
    assert says in gv.cu_result_text(code)
    assert gv.cu_result_text(12345) == "CUresult 12345"


def test_cuinit_advice_reaches_the_check(monkeypatch) -> None:
    monkeypatch.setattr(gv, "cuda_driver_api", lambda: (802, 12090))
    monkeypatch.setattr(gv, "smi_cuda_version", lambda: "12.9")
    result = gv.check_cuda_driver(None)
    assert result.status == gv.FAIL
    assert "Fabric Manager" in result.message and "CUDA driver API 12.9" in result.message


@pytest.mark.parametrize(
    ("torch_cuda", "driver_cuda", "visible", "says"),
    [
        ("13.0", "12.8", None, "torch is built for CUDA 13.0, the driver runs CUDA 12.8 at most"),
        ("12.8", "12.8", "", "CUDA_VISIBLE_DEVICES='' hides every GPU"),
        ("12.8", "12.8", "-1", "CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
        (None, "13.0", None, "CPU-only build"),
        ("13.0", None, None, "libcuda.so.1 is missing"),
        ("12.8", "13.0", None, "see system.cuda_driver"),
    ],
)
def test_torch_without_cuda_says_why(torch_cuda, driver_cuda, visible, says) -> None:
    assert says in gv.why_no_cuda(torch_cuda, driver_cuda, visible)


def test_the_torch_check_names_a_driver_too_old_for_the_wheel(monkeypatch) -> None:
    class FakeCuda:
        @staticmethod
        def is_available() -> bool:
            return False

    class FakeTorch:
        __version__ = "2.15.0"
        cuda = FakeCuda()

        class version:  # noqa: N801 - mirrors torch.version
            cuda = "13.2"

    monkeypatch.setattr(gv, "cuda_driver_api", lambda: (0, 12080))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ctx = gv.Context(args=gv.parse_args([]))
    result = gv.check_torch_sees_gpus(ctx, FakeTorch())
    assert result.status == gv.FAIL
    assert "torch is built for CUDA 13.2, the driver runs CUDA 12.8 at most" in result.message


class _FakeProcess:
    def __init__(self) -> None:
        self.killed = False

    def kill(self) -> None:
        self.killed = True


class _HangingRanks:
    """torch.multiprocessing's ProcessContext for ranks that never finish (P2P blocked by PCIe ACS)."""

    def __init__(self) -> None:
        self.processes = [_FakeProcess(), _FakeProcess()]

    def join(self, timeout: float | None = None) -> bool:
        return False


def _fake_torch(context_or_error):
    class Multiprocessing:
        @staticmethod
        def start_processes(fn, args, nprocs, join, start_method):
            assert (nprocs, join, start_method) == (2, False, "spawn")
            assert args[-1] == 0.0, "the ranks get the timeout for init_process_group"
            if isinstance(context_or_error, Exception):
                raise context_or_error
            return context_or_error

    class Torch:
        multiprocessing = Multiprocessing()

    return Torch()


def test_hanging_ranks_are_killed_and_the_check_says_why(monkeypatch) -> None:
    ranks = _HangingRanks()
    clock = iter([0.0, 10.0, 31.0, 32.0])
    monkeypatch.setattr(gv.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(gv, "shm_bytes", lambda: 64 << 20)
    problem = gv.run_nccl_ranks(_fake_torch(ranks), 2, (1 << 20,), "/nonexistent/out.json", 0.0)
    assert problem is not None and problem.startswith("the all-reduce did not finish in 30 s")
    assert all(process.killed for process in ranks.processes)
    assert "/dev/shm is 64 MiB, too small for NCCL: run the container with --ipc=host" in problem
    assert "PCIe ACS" in problem and "NCCL_P2P_DISABLE=1" in problem


def test_a_failed_rank_is_reported_with_its_last_line_and_advice(monkeypatch) -> None:
    monkeypatch.setattr(gv, "shm_bytes", lambda: 64 << 20)
    error = RuntimeError(
        "-- Process 1 terminated with the following error:\nncclUnhandledCudaError: unhandled system error"
    )
    problem = gv.run_nccl_ranks(_fake_torch(error), 2, (1 << 20,), "/nonexistent/out.json", 0.0)
    assert problem == (
        "the all-reduce failed: RuntimeError: ncclUnhandledCudaError: unhandled system error (/dev/shm is 64 MiB, "
        "too small for NCCL: run the container with --ipc=host or --shm-size=8g)"
    )


def test_nccl_timeout_is_an_option() -> None:
    assert gv.parse_args([]).nccl_timeout_s == 120.0
    assert gv.parse_args(["--nccl-timeout-s", "30"]).nccl_timeout_s == 30.0
