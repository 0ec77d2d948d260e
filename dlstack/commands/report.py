"""``dlstack report``: render the fleet report from a directory of gpu_verify JSON files."""

from __future__ import annotations

import argparse
from pathlib import Path

from dlstack import report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="render the GPU verification fleet report (HTML + summary.json)")
    parser.add_argument("--input", required=True, type=Path, help="directory of gpu_verify JSON files (recursive)")
    parser.add_argument("--output", required=True, type=Path, help=f"directory for {report.HTML_NAME} and summary.json")
    parser.add_argument(
        "--fail-on-failed-hosts", action="store_true", help="exit 1 when a host has a failed required check"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    summary = report.build(args.input, args.output)
    totals = summary["totals"]
    print(
        f"{args.output / report.HTML_NAME}: {totals['hosts']} host(s), {totals['hosts_failed']} failing, "
        f"{totals['reports']} report(s)"
    )
    return 1 if args.fail_on_failed_hosts and totals["hosts_failed"] else 0
