"""``dlstack`` command line: a thin dispatcher over the package's subcommand modules.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code).

Exit codes: 0 done; 1 the command ran and found something (``data check`` drift,
``report --fail-on-failed-hosts``); 2 a user error (a bad argument, an input file that is missing
or malformed, an output path that cannot be written, no stack that fits). A user error is one
message on standard error, ``dlstack <command>: error: <message>``; with ``--json`` it is instead
one JSON object on standard output, ``{"error": "<message>", "command": "dlstack <command>",
"exit_code": 2}``. Which errors count as user errors: :mod:`dlstack.errors`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from dlstack import __version__
from dlstack.errors import BUGS, EXIT_USER_ERROR, USER_ERRORS, UserError, describe

# name of the module under dlstack.commands that provides each subcommand
SUBCOMMANDS = ("images", "sandbox", "resolve", "report", "data", "collection")


class UsageError(UserError):
    """A command line that argparse refused; ``prog`` is the (sub)command it was refused by."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors reach :func:`main` (one line, or JSON) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dlstack", description="dlstack: the deep-learning host stack, as code")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)  # subparsers are Parsers too
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"dlstack.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dlstack.commands.{name}":
                continue  # subcommand not part of this checkout
            raise
        module.register(subparsers)
    return parser


def fail(prog: str, message: str, *, as_json: bool) -> int:
    """Report a user error the way the command line promises (module docstring); return its exit code."""
    if as_json:
        print(json.dumps({"error": message, "command": prog, "exit_code": EXIT_USER_ERROR}, indent=2))
    else:
        print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv  # until the arguments are parsed: a usage error of a --json run is JSON too
    prog = "dlstack"
    try:
        args = build_parser().parse_args(argv)
        prog, as_json = f"dlstack {args.command}", bool(getattr(args, "json", False))
        return int(args.func(args))
    except UsageError as exc:
        return fail(exc.prog, str(exc), as_json=as_json)
    except BUGS:
        raise
    except USER_ERRORS as exc:
        return fail(prog, describe(exc), as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
