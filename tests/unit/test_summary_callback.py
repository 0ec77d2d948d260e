"""The end-of-run summary names the failure that stopped a host, not one a rescue block handled."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from file_module import load_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "callback" / "dlstack_summary.py"


def load() -> Any:
    module = load_file("dlstack_summary", PLUGIN)
    return module.CallbackModule()


def result(host: str, task: str, msg: str) -> SimpleNamespace:
    return SimpleNamespace(
        _host=SimpleNamespace(get_name=lambda: host), _task=SimpleNamespace(get_name=lambda: task), _result={"msg": msg}
    )


def test_the_rescue_s_failure_replaces_the_rescued_one() -> None:
    callback = load()
    callback.v2_runner_on_failed(result("gpu1", "Download the installer", "checksum did not match"))
    callback.v2_runner_on_failed(result("gpu1", "Refuse an installer that is not the pinned one", "set X"))
    assert callback.failures["gpu1"] == ("failed in 'Refuse an installer that is not the pinned one'", "set X")


def test_ignored_failures_are_not_recorded() -> None:
    callback = load()
    callback.v2_runner_on_failed(result("gpu1", "Probe", "no such file"), ignore_errors=True)
    assert callback.failures == {}


def test_each_host_keeps_its_own_failure() -> None:
    callback = load()
    callback.v2_runner_on_failed(result("gpu1", "A", "one"))
    callback.v2_runner_on_unreachable(result("gpu2", "B", "ssh timed out"))
    assert callback.failures == {"gpu1": ("failed in 'A'", "one"), "gpu2": ("unreachable in 'B'", "ssh timed out")}
