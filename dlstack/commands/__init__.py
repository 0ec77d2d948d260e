"""Subcommands of ``scripts/dlstack``; each module has ``register(subparsers)``."""
