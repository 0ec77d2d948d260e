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
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from throwaway import TASK_RE, ignored_tasks

from dlstack.recap import recap_counts

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


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the command name (field 2) may hold spaces and parentheses: split after its last ")"
            ppid = int(stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(stat.parent.name))
    found: list[int] = []
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo += parents.get(child, [])
    return found


def kill_run(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ansible-playbook and its forks, as a power cut of the control machine would.

    Its session is not enough: ansible-core's task workers detach into sessions of their own
    (setsid, stdio to /dev/null), and a worker left behind blocks for ever writing its result to
    a parent that is gone.
    """
    workers = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


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


LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a TCP reset


class CutProxy:
    """An HTTP proxy on 127.0.0.1 in front of the archive that cuts the network after N bytes.

    It relays apt's requests (absolute URIs, plain HTTP) to the host they name. Once ``cut_after``
    bytes have gone to clients, every open connection is reset and every new one is refused (reset
    on accept) for ``outage_s`` seconds; then it relays again. The test hosts use host networking,
    so 127.0.0.1 in a host is this machine's loopback: no other address is touched.
    """

    def __init__(self, cut_after: int, outage_s: float) -> None:
        self.cut_after, self.outage_s = cut_after, outage_s
        self.sent = 0
        self.cut_at: float | None = None
        self.accepted = {"before": 0, "during": 0, "after": 0}
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def phase(self) -> str:
        if self.cut_at is None:
            return "before"
        return "during" if time.monotonic() < self.cut_at + self.outage_s else "after"

    def wait_until_restored(self) -> None:
        while self.phase() == "during":
            time.sleep(0.5)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            phase = self.phase()
            self.accepted[phase] += 1
            if phase == "during":
                self._reset(client)
            else:
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    @staticmethod
    def _reset(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it; close() alone would not
        conn.close()

    def _cut(self) -> None:
        with self._lock:
            if self.cut_at is None:
                self.cut_at = time.monotonic()
                for conn in self._open:
                    self._reset(conn)

    def _relay(self, client: socket.socket) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in head and (data := client.recv(65536)):
                head += data
        if b"\r\n" not in head:
            client.close()
            return
        host = head.split(b"\r\n", 1)[0].split()[1].decode().split("/")[2]
        name, _, port = host.partition(":")
        with self._lock:
            self._open.append(client)
        try:
            upstream = socket.create_connection((name, int(port or 80)), timeout=30)
        except OSError:
            self._reset(client)
            return
        upstream.sendall(head)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        with contextlib.suppress(OSError):
            while self.phase() != "during" and (data := upstream.recv(65536)):
                client.sendall(data)
                self.sent += len(data)
                if self.cut_at is None and self.sent >= self.cut_after:
                    self._cut()
                    break
        upstream.close()
        self._reset(client)

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket) -> None:
        """The client's further requests (apt pipelines them) go up the same connection."""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)
