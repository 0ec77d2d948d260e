"""``dlstack resolve``: print the stack the resolver picks for a GPU, an OS, a driver and frameworks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dlstack.resolver import GPU_FORMS, resolve


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "resolve",
        help="resolve a consistent driver/CUDA/cuDNN/NCCL/framework stack",
        description=(
            "Resolve the newest consistent stack for the given constraints (all optional). "
            "Exit 0 with the stack; exit 2 with the reasons when no stack fits or an input is malformed."
        ),
    )
    parser.add_argument(
        "--gpu",
        type=_gpu,
        help="GPU model, nvidia-smi name or family whose models share a compute capability, "
        "e.g. 'H100 SXM', 'Tesla V100-SXM2-16GB', 'A100'",
    )
    parser.add_argument("--compute-capability", help="GPU compute capability instead of a model, e.g. 8.6")
    parser.add_argument(
        "--pci-id",
        action="append",
        default=[],
        metavar="ID",
        help="the host's NVIDIA PCI device id (1b81, 10de:1b81) or an lspci -nn line, repeatable",
    )
    parser.add_argument(
        "--lspci",
        metavar="FILE",
        help="read the host's devices from `lspci -nn` output in FILE ('-' for standard input)",
    )
    parser.add_argument("--os", help="Ubuntu release: ubuntu22.04, ubuntu24.04, ubuntu26.04 (or 24.04, noble)")
    parser.add_argument("--driver", help="driver branch (580) or version (580.65.06)")
    parser.add_argument("--kernel-modules", choices=("open", "proprietary"), help="driver kernel-module flavour")
    parser.add_argument("--cuda", help="CUDA version, e.g. 12.8")
    parser.add_argument(
        "--framework",
        action="append",
        default=[],
        metavar="SPEC",
        help="pip-style framework requirement, repeatable: 'torch==2.9.*', 'tensorflow>=2.18'",
    )
    parser.add_argument(
        "--driver-source",
        choices=("ubuntu", "nvidia"),
        default="ubuntu",
        help="where the driver comes from: Ubuntu's archive (default) or NVIDIA's repository",
    )
    parser.add_argument(
        "--driver-line",
        choices=("server", "desktop"),
        help="Ubuntu's driver package line the host installs (nvidia-driver-NNN-server or the desktop line)",
    )
    parser.add_argument("--json", action="store_true", help="print the stack as JSON")
    parser.set_defaults(func=_run)


def _gpu(value: str) -> str:
    """--gpu: refuse a blank name here, where the message can say --gpu (the resolver says gpu=)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            f"{value!r} is empty: give {GPU_FORMS}, or leave --gpu out to resolve without a GPU"
        )
    return value


def _pci_ids(args: argparse.Namespace) -> list[str]:
    lines = list(args.pci_id)
    if args.lspci == "-":
        lines += sys.stdin.read().splitlines()
    elif args.lspci:
        try:
            lines += Path(args.lspci).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"--lspci {args.lspci}: cannot read it ({exc.strerror})") from None
    return lines


def _run(args: argparse.Namespace) -> int:
    stack = resolve(
        gpu=args.gpu,
        compute_capability=args.compute_capability,
        os=args.os,
        driver=args.driver,
        kernel_modules=args.kernel_modules,
        cuda=args.cuda,
        frameworks=tuple(args.framework),
        driver_source=args.driver_source,
        driver_line=args.driver_line,
        pci_ids=_pci_ids(args),
    ).to_dict()
    print(json.dumps(stack, indent=2) if args.json else render_table(stack))
    return 0


def render_table(stack: dict[str, Any]) -> str:
    """A readable two-column view of :meth:`Stack.to_dict`."""
    driver = stack["driver"]
    rows = [
        ("GPU", _gpu_row(stack["gpu"])),
        ("Ubuntu", f"{stack['os']} (Python {stack['python']})"),
        (
            "Driver",
            f"branch {driver['branch']} >= {driver['min_version']}, {driver['kernel_modules']} kernel modules"
            + ("" if driver["packages_available_in_ubuntu"] else " (not packaged by Ubuntu)"),
        ),
        ("CUDA", stack["cuda"]),
        ("cuDNN", stack["cudnn"]),
        ("NCCL", stack["nccl"]),
    ]
    for name, choice in stack["frameworks"].items():
        where = choice["index_url"] or "PyPI"
        rows.append((name, f"{choice['requirement']} ({choice['variant']}, CUDA {choice['cuda']}) from {where}"))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows]
    lines.extend(f"warning: {w}" for w in stack["warnings"])
    return "\n".join(lines)


def _gpu_row(gpu: dict[str, Any] | None) -> str:
    if gpu is None:
        return "-"
    if gpu["compute_capability"] is None:  # PCI devices whose exact model no data names
        ccs, archs = gpu["compute_capabilities"], gpu["architectures"]
        either = archs[0] if len(archs) == 1 else f"{', '.join(archs[:-1])} or {archs[-1]}"
        details = f"compute capability {ccs[0]} to {ccs[-1]}, {either}"
    else:
        details = f"compute capability {gpu['compute_capability']}, {gpu['architecture']}"
    if gpu["name"]:
        return f"{gpu['name']} ({details})"
    if gpu.get("family"):
        return f"{gpu['family']} family ({details}): {', '.join(gpu['variants'])}"
    if gpu.get("pci_ids"):
        return f"PCI {', '.join(f'10de:{pci_id}' for pci_id in gpu['pci_ids'])} ({details})"
    return f"{details} (no model given)"
