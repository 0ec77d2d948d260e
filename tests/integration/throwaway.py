"""Throwaway systemd hosts for the integration tests: a container plus an inventory naming it."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dlstack import sandbox

TASK_RE = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\] \**$")


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


def inventory_text(name: str, inventory_dir: Path, connection: str = "community.docker.docker") -> str:
    """``hosts.yml`` for one throwaway host, reached with ``connection``.

    Its verification reports and fleet report go to ``inventory_dir/reports/`` (host variables, so
    every playbook that verifies, site.yml, verify.yml and upgrade.yml, and every test that runs
    one, writes there), never to the checkout's ``reports/``, which is the user's.
    """
    reports = inventory_dir / "reports"
    return (
        "all:\n  children:\n    dlstack_workstations:\n      hosts:\n"
        f"        {name}:\n          ansible_connection: {connection}\n"
        "          ansible_python_interpreter: /usr/bin/python3\n"
        f"          gpu_verify_report_dir: {json.dumps(str(reports / 'verify'))}\n"
        f"          gpu_verify_fleet_report_dir: {json.dumps(str(reports / 'fleet'))}\n"
    )


@contextmanager
def throwaway_host(
    prefix: str,
    image: str,
    inventory_dir: Path,
    volumes: Sequence[str] = (),
    tmpfs: Sequence[str] = (),
    connection: str = "community.docker.docker",
) -> Iterator[str]:
    """Start a systemd container, write ``inventory_dir/hosts.yml`` for it (reached with ``connection``),
    remove it afterwards."""
    with sandbox.systemd_container(f"{prefix}-{uuid.uuid4().hex[:8]}", image, volumes, tmpfs) as name:
        (inventory_dir / "hosts.yml").write_text(inventory_text(name, inventory_dir, connection), encoding="utf-8")
        yield name
