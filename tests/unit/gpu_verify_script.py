"""scripts/gpu_verify.py for the gpu_verify tests: a standalone script, not a package module, so it is
imported by path, once (a helper beside the tests, as tests/vm/vmhost.py is; not a test module)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

from file_module import load_file

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_verify.py"


def load_gpu_verify() -> ModuleType:
    if "gpu_verify" not in sys.modules:
        # dataclasses look their module up while classes are built
        load_file("gpu_verify", SCRIPT, register=True)
    return sys.modules["gpu_verify"]


gv = load_gpu_verify()
