"""``dlstack`` command line: a thin dispatcher over the package's subcommand modules.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name of the module under dlstack.commands that provides each subcommand
SUBCOMMANDS = ("images", "sandbox", "resolve", "report", "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlstack", description="dlstack: the deep-learning host stack, as code")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"dlstack.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dlstack.commands.{name}":
                continue  # subcommand not part of this checkout
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, LookupError, RuntimeError) as exc:
        print(f"dlstack {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
