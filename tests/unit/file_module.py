"""Load a Python file that is not an importable module (an Ansible plugin, a script) under a name of
its own, as the unit tests of plugins and scripts do."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_file(name: str, path: Path, *, register: bool = False) -> ModuleType:
    """The module in ``path``, executed afresh. ``register`` puts it in ``sys.modules`` first:
    dataclasses (and the module's own imports of itself) look it up there while it runs."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
