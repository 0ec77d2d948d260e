"""A booted Ubuntu VM for a test class, and ways to drive it: Ansible plays, shell, reboots.

Built on dlstack.vm (the image and QEMU); everything written here lands in a temporary directory
and the VM is killed and its overlay removed at the end, also when a step fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dlstack import vm
from dlstack.recap import recap_counts

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / ".cache" / "logs"


@dataclass
class PlayResult:
    rc: int
    output: str
    log: Path
    seconds: float

    def recap(self, host: str = "dlstack-vm") -> dict[str, int]:
        counts = recap_counts(self.output, host)
        if not counts:
            raise AssertionError(f"no recap line for {host} in {self.log}")
        return counts

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


@dataclass
class VMHost:
    """The VM plus its inventory and a record of how long each step took."""

    machine: vm.VM
    workdir: Path
    release: str
    host_vars: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # what one step leaves for a later one (the steps of a class build on each other)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> vm.Image:
        return self.machine.image

    def sh(self, command: str, *, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return self.machine.ssh(command, check=check, timeout=timeout)

    def out(self, command: str) -> str:
        return self.sh(command).stdout.strip()

    def boot_id(self) -> str:
        return self.out("cat /proc/sys/kernel/random/boot_id")

    def kernel(self) -> str:
        return self.out("uname -r")

    def fact(self, name: str = "nvidia_driver") -> dict:
        return json.loads(self.out(f"cat /etc/ansible/facts.d/{name}.fact"))

    def write_inventory(self, extra: dict[str, object] | None = None) -> Path:
        inventory = self.workdir / "hosts.yml"
        text = self.machine.inventory()
        for key, value in {**self.host_vars, **(extra or {})}.items():
            text += f"          {key}: {json.dumps(value)}\n"
        inventory.write_text(text, encoding="utf-8")
        return inventory

    def play(self, playbook: str, name: str, extra: dict[str, object] | None = None, *args: str) -> PlayResult:
        """Run a playbook against the VM; the full log goes to .cache/logs/vm-<release>-<name>.log."""
        inventory = self.write_inventory(extra)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / f"vm-{self.release}-{name}.log"
        env = {**os.environ, "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "ANSIBLE_FORCE_COLOR": "0"}
        start = time.monotonic()
        proc = subprocess.run(
            ["ansible-playbook", playbook, "-i", str(inventory), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=3600,
        )  # fmt: skip
        seconds = time.monotonic() - start
        self.timings[name] = round(seconds, 1)
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
        return PlayResult(proc.returncode, proc.stdout + proc.stderr, log, seconds)

    def reboot(self, timeout: float = 900) -> None:
        """A maintenance reboot by hand (systemctl reboot), then wait for SSH and systemd."""
        before = self.boot_id()
        start = time.monotonic()
        self.sh("systemd-run --on-active=1 systemctl reboot", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(5)
            try:
                self.machine.wait_for_ssh(timeout=max(30.0, deadline - time.monotonic()))
                if self.boot_id() != before:
                    self.timings.setdefault("reboots", 0.0)
                    self.timings["reboots"] += round(time.monotonic() - start, 1)
                    return
            except (vm.VMError, subprocess.TimeoutExpired):
                continue
        raise vm.VMError(f"the VM did not come back from a reboot within {timeout:.0f}s ({self.machine.serial})")

    def record(self, name: str = "") -> None:
        """Keep the step durations for scripts/benchmark and the CI log."""
        scenario = f"vm-{name + '-' if name else ''}{self.release}"
        path = LOG_DIR / "vm-durations" / f"{scenario}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"scenario": scenario, "steps": self.timings}), encoding="utf-8")


@contextmanager
def booted_vm(
    release: str, host_vars: dict[str, object], data_disks_mib: tuple[int, ...] = (), name: str = ""
) -> Iterator[VMHost]:
    """Boot a VM of ``release`` in a work directory of its own (not pytest's tmp, which other
    pytest runs on the machine prune); the VM and the directory go away at the end."""
    start = time.monotonic()
    image = vm.build_image(release)
    built = time.monotonic() - start
    runs = vm.cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"vm-{release}-", dir=runs))
    machine = vm.VM(image, workdir, data_disks_mib=data_disks_mib)
    try:
        start = time.monotonic()
        machine.start()
        host = VMHost(machine, workdir, release, dict(host_vars))
        host.timings.update(image=round(built, 1), boot=round(time.monotonic() - start, 1))
        yield host
        host.record(name)
    finally:
        machine.stop()
        if machine.serial.exists():  # the serial console of every boot, for the CI log
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(machine.serial, LOG_DIR / f"vm-{name + '-' if name else ''}{release}-serial.log")
        shutil.rmtree(workdir, ignore_errors=True)
