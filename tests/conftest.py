"""Suite-wide hooks: the time each test tier took, printed at the end of every run (CI's budget).

A tier is the directory under tests/ (unit, lint, integration, molecule, images, emulator, vm).
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
