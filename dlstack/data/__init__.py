"""Data files (YAML facts with sources) and their loaders."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent
# libyaml's loader when PyYAML was built with it (10x faster: the resolver runs once per host).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def load(name: str) -> dict[str, Any]:
    """Load ``<name>.yml`` from the data directory (cached: files do not change at run time)."""
    with (DATA_DIR / f"{name}.yml").open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=_LOADER)  # noqa: S506 - _LOADER is a safe loader (CSafeLoader or SafeLoader)
    if not isinstance(data, dict):
        raise ValueError(f"{name}.yml: expected a mapping at the top level")
    return data


def ubuntu_releases() -> dict[str, dict[str, Any]]:
    """Supported Ubuntu releases keyed by version (``"24.04"``)."""
    return load("ubuntu")["releases"]
