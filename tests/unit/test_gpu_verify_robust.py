"""gpu_verify never dies without a report: crashes become failed checks, exit codes say which kind of end.

Exit codes: 0 every check passed, 1 a required check failed, 2 bad arguments, 3 the run could not finish.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.unit.test_gpu_verify_checks import load_gpu_verify

gv = load_gpu_verify()


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
    assert "cannot write the report" in capsys.readouterr().err


def test_exit_codes_are_distinct() -> None:
    assert len({gv.EXIT_PASS, gv.EXIT_FAILED, gv.EXIT_USAGE, gv.EXIT_INCOMPLETE}) == 4
    fail = gv.CheckResult("x", "system", gv.FAIL, "broken")
    assert gv.overall([fail])["exit_code"] == gv.EXIT_FAILED
    assert gv.overall([fail], ["torch"])["exit_code"] == gv.EXIT_INCOMPLETE
    assert gv.overall([gv.CheckResult("x", "system", gv.PASS, "ok")])["exit_code"] == gv.EXIT_PASS
