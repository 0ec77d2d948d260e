"""Ansible filter: datasheet peaks for GPU names, for gpu_verify's ``--peaks`` file.

Thin adapter: the data and the logic live in ``dlstack.report.gpu_peaks`` (data file
``dlstack/data/gpus.yml``).

    {{ ['NVIDIA H100 80GB HBM3'] | dlstack_peaks }}
    -> {"NVIDIA H100 80GB HBM3": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, ...}}
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

try:
    import dlstack  # noqa: F401 - probe whether the package is importable
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dlstack.report import gpu_peaks


def dlstack_peaks(names: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Peaks for the given nvidia-smi GPU names (all known GPUs when ``names`` is None)."""
    if isinstance(names, str):
        raise TypeError(f"dlstack_peaks: expected a list of GPU names, got the string {names!r}")
    return gpu_peaks(None if names is None else [str(name).strip() for name in names])


class FilterModule:
    """dlstack GPU peak filters."""

    def filters(self) -> dict[str, Any]:
        return {"dlstack_peaks": dlstack_peaks}
