#!/usr/bin/env python3
"""Time the resolver: cold (fresh interpreter: import, load and validate the data, resolve) and warm.

    scripts/bench_resolver.py [--repeat N]

Prints one line per case (median and worst of N warm runs) and the cold figure; the target is
under 100 ms per resolution (it runs once per host in the preflight play).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlstack.matrix import load_matrix, load_pci_ids
from dlstack.resolver import ResolutionError, resolve

CASES: list[tuple[str, dict[str, Any]]] = [
    ("nothing given", {}),
    ("H100 + torch", {"gpu": "NVIDIA H100 80GB HBM3", "frameworks": ("torch",)}),
    ("P100 + torch 2.9", {"gpu": "Tesla P100-PCIE-16GB", "frameworks": ("torch==2.9.*",)}),
    (
        "A100 + torch + tensorflow",
        {"gpu": "NVIDIA A100-SXM4-80GB", "frameworks": ("torch", "tensorflow"), "os": "24.04"},
    ),
    ("family: A100 + torch", {"gpu": "A100", "frameworks": ("torch",)}),
    ("PCI id only the packages know (GTX 1070)", {"pci_ids": ("10de:1b81",), "frameworks": ("torch",)}),
    ("PCI ids of a mixed host", {"pci_ids": ("1b81", "2330", "2484"), "os": "24.04"}),
    ("conflict: cu130 on 535", {"frameworks": ("torch==2.9.1+cu130",), "driver": "535"}),
    ("conflict: GTX 1070 on 595", {"pci_ids": ("1b81",), "driver": "595"}),
    ("conflict: RTX 5090 + tensorflow", {"gpu": "NVIDIA GeForce RTX 5090", "frameworks": ("tensorflow",)}),
    (
        "conflict: four at once",
        {
            "gpu": "B200",
            "kernel_modules": "proprietary",
            "driver": "535",
            "os": "22.04",
            "frameworks": ("torch==2.15.0",),
        },
    ),
]

COLD = (
    "import time; t0 = time.perf_counter(); from dlstack.resolver import resolve; "
    "from dlstack.matrix import load_matrix, load_pci_ids; t1 = time.perf_counter(); load_matrix(); "
    "load_pci_ids(); t2 = time.perf_counter(); "
    "resolve(gpu='NVIDIA H100 80GB HBM3', frameworks=('torch',)); t3 = time.perf_counter(); "
    "print(*((b - a) * 1000 for a, b in ((t0, t1), (t1, t2), (t2, t3), (t0, t3))))"
)


def _time(kwargs: dict[str, Any]) -> float:
    start = time.perf_counter()
    with contextlib.suppress(ResolutionError):
        resolve(**kwargs)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="warm runs per case (default 20)")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    cold = subprocess.run(
        [sys.executable, "-c", COLD], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    imports, data, first, total = (float(x) for x in cold.split())
    print(f"{'cold process: import modules':40s} {imports:8.1f} ms")
    print(f"{'cold process: load + validate data':40s} {data:8.1f} ms (YAML parsing, once per process;")
    print(f"{'':49s}    nvidia_pci_ids.yml only once PCI ids are given)")
    print(f"{'cold process: first resolution':40s} {first:8.1f} ms")
    print(f"{'cold process: total':40s} {total:8.1f} ms")
    load_matrix()  # warm: the data is cached for the rest of the process
    load_pci_ids()
    worst = 0.0
    for label, kwargs in CASES:
        runs = [_time(kwargs) for _ in range(args.repeat)]
        worst = max(worst, max(runs))
        print(f"{label:40s} {statistics.median(runs):8.2f} ms median {max(runs):8.2f} ms max")
    print(f"{'worst warm resolution':40s} {worst:8.2f} ms (target < 100 ms)")
    return 0 if worst < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
