"""Decision logic of the idle-shutdown script that runs on cloud hosts (roles/idle_shutdown)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from file_module import load_file

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "idle_shutdown" / "files" / "dlstack-idle-shutdown.py"
HOUR = 3600.0


def _load() -> ModuleType:
    module = load_file("dlstack_idle_shutdown", SCRIPT)
    return module


idle = _load()


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("0\n", [0]),
        ("3\n97\n", [3, 97]),
        ("12\n[N/A]\n", [12]),
        ("[Not Supported]\n", []),
        ("", []),
        (" 45 \n\n", [45]),
    ],
)
def test_parse_utilization(output: str, expected: list[int]) -> None:
    assert idle.parse_utilization(output) == expected


@pytest.mark.parametrize(
    ("utilization", "threshold", "busy"),
    [
        ([0, 0], 5, False),
        ([0, 6], 5, True),
        ([5], 5, False),  # at the threshold is idle
        ([], 5, True),  # no reading: never power off blind
        (None, 5, True),  # nvidia-smi failed: never power off blind
    ],
)
def test_is_busy(utilization: list[int] | None, threshold: int, busy: bool) -> None:
    assert idle.is_busy(utilization, threshold) is busy


def test_first_run_starts_the_clock() -> None:
    assert idle.decide(None, 1000.0, busy=False, idle_hours=2) == (1000.0, False)


def test_use_resets_the_clock() -> None:
    assert idle.decide(0.0, 10 * HOUR, busy=True, idle_hours=2) == (10 * HOUR, False)


def test_idle_below_the_limit_keeps_running() -> None:
    assert idle.decide(0.0, 1.5 * HOUR, busy=False, idle_hours=2) == (0.0, False)


def test_idle_past_the_limit_powers_off() -> None:
    assert idle.decide(0.0, 2 * HOUR, busy=False, idle_hours=2) == (0.0, True)


def test_clock_in_the_future_restarts_the_clock() -> None:
    # A state file from the future (clock jump) must not count as idle time.
    assert idle.decide(5 * HOUR, 1 * HOUR, busy=False, idle_hours=2) == (1 * HOUR, False)


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "sub" / "state.json"
    assert idle.load_last_used(state) is None
    idle.save_last_used(state, 1234.5)
    assert idle.load_last_used(state) == 1234.5
    state.write_text("not json", encoding="utf-8")
    assert idle.load_last_used(state) is None


def _fake_smi(monkeypatch: pytest.MonkeyPatch, stdout: str, returncode: int = 0) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        if command[0] == "nvidia-smi":
            return subprocess.CompletedProcess(command, returncode, stdout, "")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(idle.subprocess, "run", run)
    return calls


def test_main_powers_off_after_the_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    idle.save_last_used(state, 0.0)
    monkeypatch.setattr(idle.time, "time", lambda: 3 * HOUR)
    calls = _fake_smi(monkeypatch, "0\n1\n")
    assert idle.main(["--idle-hours", "2", "--state-file", str(state)]) == 0
    assert ["systemctl", "poweroff"] in calls


def test_main_dry_run_never_powers_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    idle.save_last_used(state, 0.0)
    monkeypatch.setattr(idle.time, "time", lambda: 3 * HOUR)
    calls = _fake_smi(monkeypatch, "0\n")
    assert idle.main(["--idle-hours", "2", "--state-file", str(state), "--dry-run"]) == 0
    assert ["systemctl", "poweroff"] not in calls


def test_main_keeps_running_when_nvidia_smi_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    idle.save_last_used(state, 0.0)
    monkeypatch.setattr(idle.time, "time", lambda: 30 * HOUR)
    calls = _fake_smi(monkeypatch, "", returncode=255)
    assert idle.main(["--idle-hours", "2", "--state-file", str(state)]) == 0
    assert ["systemctl", "poweroff"] not in calls
    assert idle.load_last_used(state) == 30 * HOUR


def test_main_refuses_non_positive_hours(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        idle.main(["--idle-hours", "0", "--state-file", str(tmp_path / "s.json")])
