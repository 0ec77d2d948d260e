"""Throwaway systemd hosts for the integration tests: a container plus an inventory naming it."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dlstack import sandbox

TASK_RE = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\] \**$")
RECAP_RE = re.compile(r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                      r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)"
                      r"\s+ignored=(?P<ignored>\d+)")  # fmt: skip


def recap_counts(output: str, host: str | None = None) -> dict[str, int]:
    """The PLAY RECAP counts of ``host`` (any host: the last recap line); empty when the run never got there."""
    for line in reversed(output.splitlines()):
        match = RECAP_RE.match(line.strip())
        if match and host in (None, match["host"]):
            return {k: int(v) for k, v in match.groupdict().items() if k != "host"}
    return {}


def ignored_tasks(output: str) -> list[str]:
    """Names of the tasks whose failure was ignored in a run (the default callback prints ``...ignoring``)."""
    ignored: list[str] = []
    task = ""
    for line in output.splitlines():
        match = TASK_RE.match(line.strip())
        if match:
            task = match["name"]
        elif line.strip() == "...ignoring" and task not in ignored:
            ignored.append(task)
    return ignored


def inventory_text(name: str, inventory_dir: Path) -> str:
    """``hosts.yml`` for one throwaway host.

    Its verification reports and fleet report go to ``inventory_dir/reports/`` (host variables, so
    every playbook that verifies, site.yml, verify.yml and upgrade.yml, and every test that runs
    one, writes there), never to the checkout's ``reports/``, which is the user's.
    """
    reports = inventory_dir / "reports"
    return (
        "all:\n  children:\n    dlstack_workstations:\n      hosts:\n"
        f"        {name}:\n          ansible_connection: community.docker.docker\n"
        "          ansible_python_interpreter: /usr/bin/python3\n"
        f"          gpu_verify_report_dir: {json.dumps(str(reports / 'verify'))}\n"
        f"          gpu_verify_fleet_report_dir: {json.dumps(str(reports / 'fleet'))}\n"
    )


@contextmanager
def throwaway_host(
    prefix: str, image: str, inventory_dir: Path, volumes: Sequence[str] = (), tmpfs: Sequence[str] = ()
) -> Iterator[str]:
    """Start a systemd container, write ``inventory_dir/hosts.yml`` for it, remove it afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    run_args = sandbox.systemd_run_args(name, image, volumes=volumes, tmpfs=tmpfs)
    subprocess.run(["docker", *run_args], check=True, capture_output=True)
    try:
        sandbox.wait_for_systemd(name)
        (inventory_dir / "hosts.yml").write_text(inventory_text(name, inventory_dir), encoding="utf-8")
        yield name
    finally:
        subprocess.run(["docker", "rm", "--force", name], check=False, capture_output=True)
