"""The faults tier's parsing of ansible-playbook output: the recap, the ignored tasks, the task count.

A parser that found nothing would make "nothing was ignored" and "changed=0" pass on any run, so
these run it on real output shapes of the default callback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlstack.recap import recap_counts

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "integration"), str(TESTS / "faults")]

import harness  # noqa: E402 - tests/faults, put on the path above
from throwaway import ignored_tasks  # noqa: E402 - tests/integration, put on the path above

OUTPUT = """
PLAY [Deep-learning workstation] ***********************************************

TASK [common : Install the base packages] **************************************
changed: [host-1]

RUNNING HANDLER [container_runtime : Restart docker] ***************************
[ERROR]: Task failed: Module failed: Could not find the requested service docker: host
fatal: [host-1]: FAILED! =>
    changed: false
...ignoring

TASK [cuda_toolkit : Install the CUDA toolkit] *********************************
fatal: [host-1]: FAILED! =>
    msg: No package matching 'cuda-toolkit-13-9' is available
...ignoring

PLAY RECAP *********************************************************************
host-1                     : ok=127  changed=39   unreachable=0    failed=0    skipped=178  rescued=0    ignored=2
"""


def test_ignored_tasks_names_each_ignored_failure_with_its_role() -> None:
    assert ignored_tasks(OUTPUT) == ["container_runtime : Restart docker", "cuda_toolkit : Install the CUDA toolkit"]


def test_ignored_tasks_is_empty_without_ignoring() -> None:
    assert ignored_tasks(OUTPUT.replace("...ignoring", "")) == []


def test_recap_reads_every_count() -> None:
    recap = recap_counts(OUTPUT)
    assert recap == {
        "ok": 127,
        "changed": 39,
        "unreachable": 0,
        "failed": 0,
        "skipped": 178,
        "rescued": 0,
        "ignored": 2,
    }


def test_recap_reads_only_the_host_asked_for() -> None:
    assert recap_counts(OUTPUT, "host-1")["changed"] == 39
    assert recap_counts(OUTPUT, "host-2") == {}


def test_a_run_without_recap_has_not_converged() -> None:
    run = harness.Run(rc=0, output="", recap=recap_counts(""))
    assert run.recap == {}
    assert not run.converged


def test_kill_at_task_kills_when_the_nth_task_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[int] = []
    monkeypatch.setattr(harness, "kill_run", lambda proc: killed.append(1))
    monkeypatch.setattr(harness.time, "sleep", lambda seconds: None)
    on_line = harness.kill_at_task(2)
    for line in OUTPUT.splitlines():
        on_line(line, None)  # type: ignore[arg-type]
        if killed:
            assert line.startswith("RUNNING HANDLER [container_runtime : Restart docker]")
            break
    assert killed == [1]


def test_kill_at_task_counts_only_the_named_role_s_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[str] = []
    on_line = harness.kill_at_task(1, role="cuda_toolkit")
    monkeypatch.setattr(harness, "kill_run", lambda proc: killed.append(current))
    monkeypatch.setattr(harness.time, "sleep", lambda seconds: None)
    for current in OUTPUT.splitlines():
        on_line(current, None)  # type: ignore[arg-type]
    assert killed == ["TASK [cuda_toolkit : Install the CUDA toolkit] *********************************"]


DETACHING = """
import os, sys, time
if os.fork() == 0:
    os.setsid()  # as ansible-core's task workers do
    print(os.getpid(), flush=True)
    time.sleep(600)
else:
    time.sleep(600)
"""


def test_kill_run_also_kills_workers_that_left_the_session() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DETACHING], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    try:
        assert os.getsid(worker) != os.getsid(proc.pid)  # killpg alone would miss it
        assert harness.descendants(proc.pid) == [worker]
        harness.kill_run(proc)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived the kill"
            time.sleep(0.05)
    finally:
        if alive(worker):  # the kill under test failed: do not leave it behind
            os.kill(worker, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (killed, not yet reaped by init) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
