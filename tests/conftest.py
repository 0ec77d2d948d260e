"""Suite-wide hooks: the time each test tier took, printed at the end of every run (CI's budget).

A tier is the directory under tests/ (unit, lint, integration, molecule, images, emulator, vm, faults).
With pytest-xdist the reports reach the controller, so the figures cover every worker; they add
the time of each test's setup, call and teardown (tests on two workers overlap in wall time).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# The resolver reads NVIDIA's driver lifecycle against this date (dlstack.resolver.TODAY_ENV): fixed, so that
# no expectation moves when a branch reaches its end of life; ansible-playbook and molecule inherit it.
os.environ.setdefault("DLSTACK_TODAY", "2026-11-30")
_TIER_SECONDS: dict[str, float] = defaultdict(float)
_TIER_TESTS: dict[str, set[str]] = defaultdict(set)


# The longest test scopes (a class or module runs on one worker with --dist loadscope), longest
# first: xdist hands scopes out in collection order, so starting these first keeps one worker from
# running a 15-minute scenario alone at the end of the run (measured on 2 cores, 2026-12-07:
# VM driver walk 37 min, VM storage 19, python_env scenario 15, site.yml runs 9; faults 9 on 2026-12-07).
LONG_SCOPES_FIRST = (
    "tests/vm/test_nvidia_driver_vm.py",
    "tests/molecule/test_scenarios.py::TestScenario_python_env",
    "tests/vm/test_storage_vm.py",
    "tests/integration/test_site.py",
    "tests/faults/test_faults.py",
    "tests/molecule/test_scenarios.py::TestScenario_nvidia_driver",
    "tests/molecule/test_scenarios.py::TestScenario_common",
    "tests/molecule/test_scenarios.py::TestScenario_container_runtime",
)


FAULTS_LOG = TESTS.parent / ".cache" / "logs" / "faults.jsonl"


def pytest_sessionstart(session: pytest.Session) -> None:
    """A run that takes in the faults tier starts its log empty: scripts/benchmark tabulates the last run."""
    # the controller only (xdist workers carry workerinput); a log the caller named is theirs
    if hasattr(session.config, "workerinput") or "DLSTACK_FAULT_RESULTS" in os.environ:
        return
    faults = TESTS / "faults"
    paths = [Path(session.config.invocation_params.dir, arg.split("::", 1)[0]).resolve() for arg in session.config.args]
    if any(path == faults or path in faults.parents or faults in path.parents for path in paths):
        FAULTS_LOG.unlink(missing_ok=True)


def scope_rank(nodeid: str) -> int:
    """Where a test's scope comes in the run: its place in LONG_SCOPES_FIRST, the rest after."""
    return next((i for i, prefix in enumerate(LONG_SCOPES_FIRST) if nodeid.startswith(prefix)), len(LONG_SCOPES_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: scope_rank(item.nodeid))  # stable: each scope keeps its own order


def tier_of(nodeid: str) -> str:
    """``tests/vm/test_x.py::T::t`` -> ``vm``; tests directly under tests/ -> ``other``."""
    parts = Path(nodeid.split("::", 1)[0]).parts
    if len(parts) >= 3 and parts[0] == "tests":
        return parts[1]
    return "other"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = tier_of(report.nodeid)
    _TIER_SECONDS[tier] += report.duration
    _TIER_TESTS[tier].add(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TIER_SECONDS or hasattr(terminalreporter.config, "workerinput"):
        return
    terminalreporter.section("time per test tier (setup + call + teardown, summed over workers)")
    for tier, seconds in sorted(_TIER_SECONDS.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{tier:12s} {len(_TIER_TESTS[tier]):5d} tests {seconds / 60:8.1f} min")
    terminalreporter.write_line(f"{'total':12s} {sum(len(t) for t in _TIER_TESTS.values()):5d} tests "
                                f"{sum(_TIER_SECONDS.values()) / 60:8.1f} min")  # fmt: skip
