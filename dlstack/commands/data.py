"""``dlstack data check``: report every drift between ``dlstack/data`` and its reachable sources."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from dlstack import datacheck
from dlstack.data import DATA_DIR

SNAPSHOT = Path(__file__).resolve().parent.parent.parent / "tests" / "fixtures" / "datacheck" / "snapshot.json.xz"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check dlstack/data against the Ubuntu archive and PyPI")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check",
        help="print each drift as FILE:LINE: what the source says (exit 1 when there is any)",
        description=(
            "Compare the data with the Ubuntu archive's Packages indexes and PyPI. By default the sources are "
            "read now (network); --snapshot reads a recorded snapshot instead (the tests use the committed one)."
        ),
    )
    source = check.add_mutually_exclusive_group()
    source.add_argument("--snapshot", type=Path, help=f"a recorded snapshot to check against (e.g. {SNAPSHOT})")
    source.add_argument(
        "--record", type=Path, metavar="PATH", help="read the sources now and also write the snapshot here"
    )
    check.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="the data files to check (default: dlstack/data)"
    )
    check.add_argument("--cache", type=Path, help="keep archive downloads here (reused while their checksums match)")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    data = datacheck.DataDir(args.data_dir)
    if args.snapshot:
        snapshot = datacheck.Snapshot.load(args.snapshot)
    else:
        snapshot = datacheck.record(data, dt.datetime.now(dt.UTC).date().isoformat(), args.cache)
        if args.record:
            snapshot.dump(args.record)
            print(f"recorded {args.record} ({len(snapshot.sources)} sources)")
    drifts = datacheck.check(data, snapshot)
    for drift in drifts:
        print(drift)
    print(f"{len(drifts)} drift(s) against sources read {snapshot.recorded}")
    return 1 if drifts else 0
