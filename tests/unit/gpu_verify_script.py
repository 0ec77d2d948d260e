"""scripts/gpu_verify.py for the gpu_verify tests: a standalone script, not a package module, so it is
imported by path, once (a helper beside the tests, as tests/vm/vmhost.py is; not a test module)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_verify.py"


def load_gpu_verify() -> ModuleType:
    if "gpu_verify" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_verify", SCRIPT)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_verify"] = module  # dataclasses look their module up while classes are built
        spec.loader.exec_module(module)
    return sys.modules["gpu_verify"]


gv = load_gpu_verify()
