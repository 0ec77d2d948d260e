#!/usr/bin/env python3
"""Power the machine off after N hours without GPU use (dlstack idle shutdown).

Run periodically by dlstack-idle-shutdown.timer. Each run reads the GPU utilization from
nvidia-smi; a GPU busier than the threshold marks the machine as used now. The time of the last use
is kept in a state file; when it lies more than the idle limit in the past, the machine powers off.
Standard library only: this runs on the target host.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

NVIDIA_SMI = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]


def parse_utilization(output: str) -> list[int]:
    """GPU utilization percentages from nvidia-smi's CSV output (one line per GPU)."""
    values = []
    for line in output.splitlines():
        text = line.strip()
        if not text:
            continue
        try:
            values.append(int(float(text)))
        except ValueError:
            continue  # "[N/A]" or "[Not Supported]": no reading for this GPU
    return values


def read_utilization() -> list[int] | None:
    """Current utilization of every GPU, or None when nvidia-smi cannot answer."""
    try:
        result = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return parse_utilization(result.stdout)


def is_busy(utilization: list[int] | None, threshold: int) -> bool:
    """Whether any GPU is above the threshold. No reading counts as busy: never power off blind."""
    if not utilization:
        return True
    return max(utilization) > threshold


def decide(last_used: float | None, now: float, busy: bool, idle_hours: float) -> tuple[float, bool]:
    """Return (new last-used time, whether to power off now)."""
    if busy or last_used is None or last_used > now:
        return now, False
    return last_used, (now - last_used) >= idle_hours * 3600


def load_last_used(path: Path) -> float | None:
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["last_used"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_last_used(path: Path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"last_used": value}) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-hours", type=float, required=True, help="power off after this many idle hours")
    parser.add_argument("--threshold", type=int, default=5, help="utilization percent above which a GPU is in use")
    parser.add_argument("--state-file", type=Path, default=Path("/var/lib/dlstack/idle-shutdown.json"))
    parser.add_argument("--dry-run", action="store_true", help="say what would happen, do not power off")
    args = parser.parse_args(argv)
    if args.idle_hours <= 0:
        parser.error(f"--idle-hours: {args.idle_hours} must be more than 0")

    now = time.time()
    utilization = read_utilization()
    busy = is_busy(utilization, args.threshold)
    last_used, power_off = decide(load_last_used(args.state_file), now, busy, args.idle_hours)
    save_last_used(args.state_file, last_used)
    idle_for = (now - last_used) / 3600
    print(f"utilization={utilization} busy={busy} idle_for={idle_for:.2f}h limit={args.idle_hours}h")
    if power_off:
        print("GPUs idle past the limit: powering off")
        if not args.dry_run:
            return subprocess.run(["systemctl", "poweroff"], check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
