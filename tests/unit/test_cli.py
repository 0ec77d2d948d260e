"""`scripts/dlstack` as a whole: --version, and every user error as one line on stderr (or one JSON
object on stdout with --json) with exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import dlstack
from dlstack import report, sandbox
from dlstack.cli import main as cli_main
from dlstack.errors import describe

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "fixtures" / "verify"
SNAPSHOT = ROOT / "tests" / "fixtures" / "datacheck" / "snapshot.json.xz"


def _dlstack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The entry point users run, in a process of its own."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dlstack"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def _user_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the command line in-process; assert the error contract and return the message."""
    assert cli_main(list(args)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def _json_error(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert cli_main(list(args)) == 2
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


def _not_a_directory(tmp_path: Path) -> Path:
    """A path no one can create, root included: its parent is a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    return blocker / "out"


def _report_dir(tmp_path: Path, content: dict[str, Any]) -> Path:
    directory = tmp_path / "verify" / "gpu01"
    directory.mkdir(parents=True)
    (directory / "pytorch.json").write_text(json.dumps(content), encoding="utf-8")
    return tmp_path / "verify"


# ----------------------------------------------------------------------------- --version


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = _dlstack("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dlstack {dlstack.__version__}\n"


def test_the_version_is_written_once() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dlstack.__version__"}


# ----------------------------------------------------------------------------- report


def test_report_without_summary_names_the_file_and_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = _report_dir(tmp_path, {"schema_version": 1, "checks": []})
    err = _user_error(capsys, "report", "--input", str(reports), "--output", str(tmp_path / "fleet"))
    assert err.startswith("dlstack report: error: ")
    assert f"{reports / 'gpu01' / 'pytorch.json'}: not a complete gpu_verify report: no 'summary'" in err


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"summary": []}, "'summary' is a list, expected an object"),
        ({"summary": {"failed": []}}, "summary has no 'status'"),
        ({"checks": [{"id": "a", "status": "pass"}]}, "checks[0] has no 'message'"),
        ({"checks": [{"id": "a", "status": "ok", "message": ""}]}, "checks[0].status is 'ok', expected one of"),
        ({"gpus": [None]}, "gpus[0] is null, expected an object"),
        ({"performance": {"metric": "x"}}, "'performance' is an object, expected a list"),
    ],
)
def test_report_shape_problems_name_the_key(change: dict[str, Any], problem: str) -> None:
    data = {**json.loads((SAMPLES / "gpu01" / "pytorch.json").read_text(encoding="utf-8")), **change}
    found = report.shape_problem(data)
    assert found is not None
    assert found.startswith(problem)


def test_the_sample_reports_are_complete() -> None:
    for path in SAMPLES.rglob("*.json"):
        assert report.shape_problem(json.loads(path.read_text(encoding="utf-8"))) is None, path


def test_report_output_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _not_a_directory(tmp_path)
    err = _user_error(capsys, "report", "--input", str(SAMPLES), "--output", str(out))
    assert err == f"dlstack report: error: {out}: Not a directory\n"


# ----------------------------------------------------------------------------- images


def test_images_render_out_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _not_a_directory(tmp_path)
    err = _user_error(capsys, "images", "render", "--image", "cuda", "--ubuntu", "24.04", "--out", str(out))
    assert err == f"dlstack images: error: {out / 'cuda-ubuntu24.04'}: Not a directory\n"


def test_an_unreachable_docker_engine_is_a_user_error(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
    result = _dlstack("images", "sizes", "--image", "cuda", "--ubuntu", "24.04", "--json", env=env)
    assert result.returncode == 2
    assert result.stderr == ""
    assert json.loads(result.stdout)["error"].startswith("cannot reach the Docker engine")


# ----------------------------------------------------------------------------- data check


def test_a_yaml_error_names_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for path in (ROOT / "dlstack" / "data").glob("*.yml"):
        (data / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    broken = data / "pytorch.yml"
    lines = broken.read_text(encoding="utf-8").count("\n")
    broken.write_text(broken.read_text(encoding="utf-8") + "oops: [\n", encoding="utf-8")
    err = _user_error(capsys, "data", "check", "--snapshot", str(SNAPSHOT), "--data-dir", str(data))
    assert err.startswith(f"dlstack data: error: {broken}:{lines + 2}:1: ")


def test_a_snapshot_that_is_not_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "snapshot.json.xz"
    bogus.write_text("not xz", encoding="utf-8")
    err = _user_error(capsys, "data", "check", "--snapshot", str(bogus))
    assert f"{bogus}: not a data check snapshot" in err


# ----------------------------------------------------------------------------- usage, --json, --gpu


def test_a_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    err = _user_error(capsys, "resolve", "--kernel-modules", "closed")
    assert err.startswith("dlstack resolve: error: argument --kernel-modules: invalid choice: 'closed'")
    assert "(see dlstack resolve --help)" in err


def test_json_errors_are_an_object_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    error = _json_error(capsys, "resolve", "--framework", "torch==2.9.1+cu130", "--driver", "535", "--json")
    assert error["exit_code"] == 2
    assert error["command"] == "dlstack resolve"
    assert error["error"].startswith("no stack satisfies all constraints:")
    assert "CUDA 13.0 needs driver >= 580.65.06" in error["error"]


def test_json_usage_errors_are_an_object_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    error = _json_error(capsys, "resolve", "--json", "--os")
    assert error == {
        "error": "argument --os: expected one argument (see dlstack resolve --help)",
        "command": "dlstack resolve",
        "exit_code": 2,
    }


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_gpu_is_refused_naming_the_option(blank: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = _user_error(capsys, "resolve", "--gpu", blank)
    assert f"argument --gpu: {blank!r} is empty: give a GPU model ('H100 SXM'), a family ('A100')" in err
    assert "or leave --gpu out to resolve without a GPU" in err


# ----------------------------------------------------------------------------- the handler


def test_a_key_error_is_a_bug_and_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> str:
        raise KeyError("state")

    monkeypatch.setattr(sandbox, "state", broken)
    with pytest.raises(KeyError):
        cli_main(["sandbox", "status"])


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PermissionError(13, "Permission denied", "/srv/x"), "/srv/x: Permission denied"),
        (FileExistsError(17, "File exists", "/a", None, "/b"), "/a -> /b: File exists"),
        (OSError("no file involved"), "no file involved"),
    ],
)
def test_os_errors_name_the_path_and_the_reason(error: OSError, line: str) -> None:
    assert describe(error) == line
