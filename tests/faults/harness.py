"""Fault injection for the faults tier: runs of ansible-playbook that something goes wrong under.

Each fault is injected at a random point of a converge on a throwaway Ubuntu container (real apt,
real dpkg, the real archive); the test then re-runs the playbook with nothing fixed by hand. The
pieces here are small and typed so that `scripts/benchmark faults` and the tests share them:

- ``play`` streams one ansible-playbook run, lets a fault watch its output, and parses the recap
  and the tasks whose failure was ignored;
- ``hold_apt_locks`` does what unattended-upgrades does: holds dpkg's and apt's locks;
- ``kill_dpkg_mid_unpack`` kills dpkg with SIGKILL while it unpacks a package;
- ``data_checksums`` records what a user keeps in the data directory.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from throwaway import TASK_RE, ignored_tasks, recap_counts

ROOT = Path(__file__).resolve().parents[2]
# the dpkg/apt locks unattended-upgrades and apt take (fcntl locks, as apt's and dpkg's own)
APT_LOCKS = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)


@dataclass
class Run:
    """One ansible-playbook run: its exit status, output, recap and the tasks it ignored."""

    rc: int
    output: str
    killed: bool = False
    recap: dict[str, int] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def converged(self) -> bool:
        return self.rc == 0 and self.recap.get("failed", 1) == 0 and self.recap.get("unreachable", 1) == 0


def play(
    inventory: Path,
    playbook: Path,
    *extra: str,
    check: bool = False,
    on_line: Callable[[str, subprocess.Popen[str]], None] | None = None,
    timeout_s: float = 1800,
) -> Run:
    """Run ansible-playbook, feeding each output line to ``on_line`` (which may kill the run)."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    argv = ["ansible-playbook", str(playbook), "-i", str(inventory), *extra, *(["--check", "--diff"] if check else [])]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    # a timer, not a check per line: a run that hangs prints nothing
    deadline = threading.Timer(timeout_s, kill_run, (proc,))
    deadline.start()
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if on_line is not None:
            on_line(line.rstrip("\n"), proc)
    rc = proc.wait()
    deadline.cancel()
    output = "".join(lines)
    seconds = time.monotonic() - started
    return Run(rc, output, rc == -signal.SIGKILL, recap_counts(output), ignored_tasks(output), seconds)


def kill_run(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ansible-playbook and its forks (its session), as a power cut of the control machine would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def kill_at_task(task_number: int, role: str = "") -> Callable[[str, subprocess.Popen[str]], None]:
    """An ``on_line`` that kills the run when its ``task_number``-th task (1-based) starts (of ``role`` if named)."""
    seen = [0]

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        task = TASK_RE.match(line.strip())
        if task and task["name"].startswith(f"{role} : " if role else ""):
            seen[0] += 1
            if seen[0] == task_number:
                time.sleep(random.uniform(0, 2))  # noqa: S311 - a test's random point, not a secret
                kill_run(proc)

    return on_line


def docker_exec(host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", host, *argv], capture_output=True, text=True, check=check)


HOLDER = """
import fcntl, os, sys, time
held = []
for path in sys.argv[2:]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path, "a")
    fcntl.lockf(f, fcntl.LOCK_EX)   # waits for a running apt, as unattended-upgrades does
    held.append(f)
open("/run/dlstack-fault-lock.held", "w").write(str(time.time()))
time.sleep(float(sys.argv[1]))
"""


def hold_apt_locks(host: str, seconds: float, after_s: float) -> threading.Thread:
    """After ``after_s`` seconds, hold apt's and dpkg's locks on ``host`` for ``seconds``, in the background."""

    def hold() -> None:
        time.sleep(after_s)
        docker_exec(host, "python3", "-c", HOLDER, str(seconds), *APT_LOCKS, check=False)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def kill_dpkg_mid_unpack(host: str, stop: threading.Event, delay_s: float) -> threading.Thread:
    """Wait until dpkg unpacks on ``host``, then (after ``delay_s``) SIGKILL it; records the hit on the thread."""

    def watch() -> None:
        while not stop.is_set():
            procs = docker_exec(host, "pgrep", "-a", "-x", "dpkg", check=False).stdout
            if "--unpack" in procs:
                time.sleep(delay_s)
                killed = docker_exec(host, "pkill", "-KILL", "-x", "dpkg", check=False)
                thread.hit = killed.returncode == 0  # type: ignore[attr-defined]
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.hit = False  # type: ignore[attr-defined]
    thread.start()
    return thread


def data_checksums(host: str, directory: str) -> dict[str, str]:
    """sha256 of every file under ``directory`` on ``host``."""
    out = docker_exec(host, "sh", "-c", f"cd {directory} && find . -type f -print0 | xargs -0r sha256sum").stdout
    return {path: digest for digest, path in (line.split(None, 1) for line in out.splitlines())}
