"""The PLAY RECAP lines of ansible-playbook's output: one parser for the benchmarks and the test harnesses."""

from __future__ import annotations

import re

RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)"
)


def _counts(match: re.Match[str]) -> dict[str, int]:
    return {key: int(value) for key, value in match.groupdict().items() if key != "host"}


def recap_by_host(output: str) -> dict[str, dict[str, int]]:
    """Every host's PLAY RECAP counts (a host's last recap line wins)."""
    found: dict[str, dict[str, int]] = {}
    for line in output.splitlines():
        match = RECAP_RE.match(line.strip())
        if match:
            found[match["host"]] = _counts(match)
    return found


def recap_counts(output: str, host: str | None = None) -> dict[str, int]:
    """The PLAY RECAP counts of ``host`` (any host: the last recap line); empty when the run never got there."""
    for line in reversed(output.splitlines()):
        match = RECAP_RE.match(line.strip())
        if match and host in (None, match["host"]):
            return _counts(match)
    return {}
