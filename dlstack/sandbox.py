"""The sandbox: one long-lived local systemd container ("a workstation in a box").

``inventories/sandbox`` targets it through the ``docker`` connection (which ansible.cfg's strategy
runs through Mitogen), so ``ansible-playbook site.yml`` provisions it with no other set-up. It has
no GPU: the driver role installs userspace only, and GPU checks are skipped with a reason.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

from dlstack import testimages

NAME = "dlstack-sandbox"
DEFAULT_RELEASE = "24.04"
HYBRID_V2 = Path("/sys/fs/cgroup/unified")
INVENTORY = Path(__file__).resolve().parent.parent / "inventories" / "sandbox" / "hosts.yml"


def cgroup_source(root: Path = Path("/sys/fs/cgroup")) -> str:
    """The host's cgroup v2 hierarchy: the ``unified`` mount on hybrid hosts, else the root.

    systemd 258+ (Ubuntu 26.04) no longer boots on cgroup v1, and every release boots on v2.
    """
    unified = root / "unified"
    return str(unified) if (unified / "cgroup.controllers").exists() else str(root)


def systemd_run_args(
    name: str, image: str, *, cgroup_src: str | None = None, volumes: Sequence[str] = (), tmpfs: Sequence[str] = ()
) -> list[str]:
    """``docker run`` arguments for a systemd container that works without --privileged.

    ``tmpfs`` adds mounts such as ``/data:size=64m`` (a small filesystem that can be filled).
    """
    extra = [arg for volume in volumes for arg in ("--volume", volume)]
    extra += [arg for mount in tmpfs for arg in ("--tmpfs", mount)]
    return [
        "run",
        "--detach",
        "--name",
        name,
        "--hostname",
        name,
        "--network",
        "host",
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--cgroupns",
        "host",
        "--volume",
        f"{cgroup_src or cgroup_source()}:/sys/fs/cgroup:rw",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--label",
        "org.dlstack.role=sandbox",
        *extra,
        image,
        "/lib/systemd/systemd",
    ]


def state(name: str = NAME) -> str | None:
    """The container's state (``running``, ``exited``...) or None when it does not exist."""
    proc = subprocess.run(
        ["docker", "container", "inspect", "--format", "{{.State.Status}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def wait_for_systemd(name: str = NAME, timeout: float = 120) -> str:
    """Wait until systemd in the container has finished booting; return its state."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(
            ["docker", "exec", name, "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            text=True,
            check=False,
        )
        status = proc.stdout.strip() or proc.stderr.strip()
        if status in {"running", "degraded"}:
            return status
        time.sleep(1)  # the system bus is not up yet
    raise RuntimeError(f"systemd in {name} did not come up within {timeout:.0f}s (state: {status})")


def inventory_connection(inventory: Path = INVENTORY) -> str:
    """The connection the sandbox's inventory reaches it with (test hosts and benchmarks use the same)."""
    hosts = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    return str(hosts["all"]["children"]["dlstack_workstations"]["hosts"][NAME]["ansible_connection"])


@contextmanager
def systemd_container(name: str, image: str, volumes: Sequence[str] = (), tmpfs: Sequence[str] = ()) -> Iterator[str]:
    """A systemd container, up once systemd has booted, removed (with its files) afterwards."""
    subprocess.run(["docker", *systemd_run_args(name, image, volumes=volumes, tmpfs=tmpfs)], check=True,
                   capture_output=True)  # fmt: skip
    try:
        wait_for_systemd(name)
        yield name
    finally:
        subprocess.run(["docker", "rm", "--force", name], check=False, capture_output=True)


def up(release: str = DEFAULT_RELEASE, *, mirror: str | None = None) -> str:
    """Build the images if needed and start (or restart) the sandbox; return a status line."""
    rel = testimages.release(release)
    testimages.build([release], mirror=mirror)
    current = state()
    if current is None:
        subprocess.run(["docker", *systemd_run_args(NAME, rel.systemd_tag)], check=True, stdout=subprocess.DEVNULL)
    elif current != "running":
        subprocess.run(["docker", "start", NAME], check=True, stdout=subprocess.DEVNULL)
    return f"{NAME}: {wait_for_systemd()} (Ubuntu {release})"


def down() -> str:
    """Remove the sandbox container (its files go with it)."""
    if state() is None:
        return f"{NAME}: not present"
    subprocess.run(["docker", "rm", "--force", NAME], check=True, stdout=subprocess.DEVNULL)
    return f"{NAME}: removed"
