"""``dlstack collection build``: the Ansible collection dlstack.gpu, built from this checkout."""

from __future__ import annotations

import argparse
from pathlib import Path

from dlstack import collection


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collection", help=f"build the Ansible collection {collection.FQCN}")
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser(
        "build",
        help="stage the collection from the checkout and build its tarball; print the tarball's path",
        description=(
            f"Assemble {collection.FQCN} from the checkout (roles with the filters fully qualified, plugins, "
            "galaxy.yml at the package's version, meta/runtime.yml, README, LICENSE, changelog, the Python "
            "requirement) and run `ansible-galaxy collection build` on it. A tarball of the same version is replaced."
        ),
    )
    build.add_argument(
        "--out",
        type=Path,
        default=collection.DEFAULT_OUT,
        metavar="DIR",
        help=f"directory for {collection.tarball_name()} (default: build/ in the checkout)",
    )
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    print(collection.build(args.out))
    return 0
