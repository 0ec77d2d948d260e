"""``dlstack images``: Ubuntu test images (``base``) and, where present, the product images."""

from __future__ import annotations

import argparse
import importlib.util

from dlstack import testimages
from dlstack.data import ubuntu_releases


def register(subparsers: argparse._SubParsersAction) -> None:
    images = subparsers.add_parser("images", help="build Ubuntu test images and container images")
    sub = images.add_subparsers(dest="images_command", required=True)
    base = sub.add_parser("base", help="debootstrap Ubuntu and derive systemd test images (cached)")
    base.add_argument(
        "--release",
        action="append",
        choices=sorted(ubuntu_releases()),
        help="Ubuntu release to build (repeatable; default: all supported)",
    )
    base.add_argument("--mirror", help=f"Ubuntu mirror (default: ${testimages.MIRROR_ENV} or the Ubuntu archive)")
    base.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    base.set_defaults(func=_base)
    if importlib.util.find_spec("dlstack.containers") is not None:
        from dlstack import containers

        containers.register_images_commands(sub)


def _base(args: argparse.Namespace) -> int:
    versions = args.release or sorted(ubuntu_releases())
    for tag, built in testimages.build(versions, mirror=args.mirror, force=args.force).items():
        print(f"{tag}: {'built' if built else 'up to date'}")
    return 0
