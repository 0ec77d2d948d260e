"""Data files (YAML facts with sources) and their loaders."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent
# A directory of data files that replace dlstack/data's file of the same name: a lab's own facts
# (a GPU, a mirror's versions) without editing the checkout; the tests use it to make newer
# versions appear. Files it does not have come from dlstack/data.
OVERRIDE_ENV = "DLSTACK_DATA_DIR"


def data_file(name: str) -> Path:
    """``<name>.yml`` from $DLSTACK_DATA_DIR when it has one, else from dlstack/data."""
    override = os.environ.get(OVERRIDE_ENV, "").strip()
    if override and (Path(override) / f"{name}.yml").is_file():
        return Path(override) / f"{name}.yml"
    return DATA_DIR / f"{name}.yml"


# libyaml's loader when PyYAML was built with it (10x faster: the resolver runs once per host).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def load(name: str) -> dict[str, Any]:
    """Load ``<name>.yml`` (see data_file; cached: files do not change at run time)."""
    with data_file(name).open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=_LOADER)  # noqa: S506 - _LOADER is a safe loader (CSafeLoader or SafeLoader)
    if not isinstance(data, dict):
        raise ValueError(f"{name}.yml: expected a mapping at the top level")
    return data


def ubuntu_releases() -> dict[str, dict[str, Any]]:
    """Supported Ubuntu releases keyed by version (``"24.04"``)."""
    return load("ubuntu")["releases"]
