"""``dlstack sandbox up|down|status|cgroup-source``: the local workstation-in-a-box."""

from __future__ import annotations

import argparse

from dlstack import sandbox
from dlstack.data import ubuntu_releases


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sandbox", help="the local sandbox container that inventories/sandbox targets")
    sub = parser.add_subparsers(dest="sandbox_command", required=True)
    up = sub.add_parser("up", help="build images if needed and start the sandbox")
    up.add_argument("--release", default=sandbox.DEFAULT_RELEASE, choices=sorted(ubuntu_releases()))
    up.add_argument("--mirror", help="Ubuntu mirror for the image build")
    up.set_defaults(func=lambda a: _print(sandbox.up(a.release, mirror=a.mirror)))
    sub.add_parser("down", help="remove the sandbox").set_defaults(func=lambda _a: _print(sandbox.down()))
    sub.add_parser("status", help="show the sandbox state").set_defaults(
        func=lambda _a: _print(f"{sandbox.NAME}: {sandbox.state() or 'not present'}")
    )
    sub.add_parser("cgroup-source", help="print the cgroup v2 path test containers mount").set_defaults(
        func=lambda _a: _print(sandbox.cgroup_source())
    )


def _print(line: str) -> int:
    print(line)
    return 0
