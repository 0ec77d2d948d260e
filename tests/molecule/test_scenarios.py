"""Run every Molecule scenario on the releases molecule/releases.yml lists.

Each run is the full sequence (destroy, create, prepare, converge, idempotence, verify, destroy),
so a scenario fails here when its role is not idempotent or a testinfra test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RELEASES = yaml.safe_load((ROOT / "molecule" / "releases.yml").read_text(encoding="utf-8"))
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
LOG_DIR = ROOT / ".cache" / "logs"
TIMEOUT_S = 1800
# what a skip for the archive's state waits for
RUNS_AGAIN = " [runs again once the mirror serves what its index lists]"
# The nvidia_driver role's refusal when the archive lists the driver's packages but does not serve them.
NOT_SERVED = yaml.safe_load((ROOT / "roles/nvidia_driver/vars/main.yml").read_text(encoding="utf-8"))[
    "__nvidia_driver_not_served"
]


def refusal_text(flat: str, marker: str) -> str:
    """The role's refusal from a run's output (whitespace collapsed): from its first words to its last."""
    text = flat[flat.index(marker) :]
    end = text.find("(dlstack_driver_branch).")
    return text[: end + len("(dlstack_driver_branch).")] if end >= 0 else text[:1500]


def test_every_scenario_is_scheduled():
    assert sorted(RELEASES) == SCENARIOS


def run_scenario(scenario: str, release: str) -> None:
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: run scripts/bootstrap setup")
    from dlstack.sandbox import cgroup_source

    env = {**os.environ, "DLSTACK_UBUNTU": release, "DLSTACK_CGROUP_SRC": cgroup_source()}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"molecule-{scenario}-{release}.log"
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(
            ["molecule", "test", "-s", scenario],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT_S,
            check=False,
        )
    record_duration(f"{scenario}-{release}", time.monotonic() - start)
    if proc.returncode != 0:
        flat = " ".join(log.read_text(encoding="utf-8", errors="replace").split())
        if NOT_SERVED in flat:
            # the archive lists the driver but its mirror answers 404: the role refused cleanly (nothing installed)
            why = refusal_text(flat, NOT_SERVED)
            pytest.skip(
                f"molecule test -s {scenario} on Ubuntu {release}: the archive does not serve today: {why}{RUNS_AGAIN}"
            )
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-80:]
        pytest.fail(f"molecule test -s {scenario} on Ubuntu {release} failed (log: {log}):\n" + "\n".join(tail))


def scenario_class(scenario: str) -> type:
    """One test class per scenario: with ``pytest --dist loadscope`` a class runs on one worker, so
    a scenario's releases run one after the other (Molecule keeps one ephemeral directory per
    scenario) while different scenarios run side by side."""

    @pytest.mark.molecule
    @pytest.mark.parametrize("release", RELEASES.get(scenario, []))
    def test_release(self: object, release: str) -> None:
        run_scenario(scenario, release)

    return type(f"TestScenario_{scenario}", (), {"test_release": test_release})


for _scenario in SCENARIOS:
    globals()[f"TestScenario_{_scenario}"] = scenario_class(_scenario)


def record_duration(name: str, seconds: float) -> None:
    """Keep each scenario's duration for scripts/benchmark (the CI budget is watched there)."""
    path = LOG_DIR / "durations" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scenario": name, "seconds": round(seconds, 1)}), encoding="utf-8")
