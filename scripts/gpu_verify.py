#!/usr/bin/env python3
"""Prove that a deep-learning host works: GPUs, driver, frameworks, throughput.

Self-contained (standard library plus the frameworks it finds: torch, tensorflow, optional
pynvml) so it can be copied to hosts and into container images. Every check passes, fails,
warns or is skipped with a reason; results go to a terminal table and to JSON (schema in
docs/gpu_verify.md). GPU mode when an NVIDIA GPU is on the PCI bus, an NVIDIA kernel driver is
installed or --expect-gpu is given; CPU mode otherwise or with --cpu. In GPU mode, system.driver_state
says why a GPU does not work and how to fix it. Exit code: 0 when every required check passed, 1 when
one failed, 2 on a usage error, 3 when the run could not finish (the report says where it stopped).

Throughput is judged per GPU model: the datasheet peaks and the fraction of them a healthy card of that
model measures come from dlstack/data/gpus.yml, shipped beside this script as gpu_verify_peaks.json
(the role and the images write it; --peaks overrides it).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
TOOL_VERSION = "1.0.0"

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
STATUSES = (PASS, FAIL, WARN, SKIP)
FRAMEWORKS = ("torch", "tensorflow")
MATMUL_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8")

# Default minimum fraction of the datasheet (dense) peak. Large square GEMMs reach about 60-80 %
# of the dense peak on healthy data-centre cards (cuBLAS, boost clock under power limit); below
# half something is wrong: throttling, a power cap, a degraded link, a wrong clock setting.
# fp8 through torch._scaled_mm and tf32 reach less of their (higher) peak, hence lower bars.
DEFAULT_MIN_FRACTION: dict[str, float] = {
    "fp32": 0.5,
    "tf32": 0.4,
    "fp16": 0.5,
    "bf16": 0.5,
    "fp8": 0.35,
    "mem_bw": 0.6,
    "h2d": 0.5,
}

# A GPU model's measured-healthy share of its peak (``healthy_<metric>`` in the peaks file, from published
# measurements: dlstack/data/gpus.yml) times this is its minimum: a card must reach 80 % of what a healthy
# one of its model reaches. The published figures are the best matrix shape; the 8192^3 test shape reaches
# a few percent less on a healthy card. A card that lost a third of its speed to a power cap or throttling
# fails (an H100 SXM: minimum 64 % of 989 TFLOP/s bf16, healthy 75-80 %).
HEALTHY_TOLERANCE = 0.8
# Per node and metric: a GPU below this fraction of the node's median is an outlier and fails, even when
# every card passes its own threshold (one card throttling, on a slower link, or with a lower clock).
OUTLIER_FRACTION = 0.85
# The peaks file a copy of the script reads when --peaks is not given: beside the script.
PEAKS_FILE_NAME = "gpu_verify_peaks.json"
# Timed repetitions of each measurement: judged on the median, the best and the spread are reported.
TIMING_REPEATS = 5

# PCIe payload bandwidth per lane and direction in GB/s after line encoding, by generation.
PCIE_LANE_GBS: dict[int, float] = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}

QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "driver_version",
    "ecc.mode.current",
    "persistence_mode",
    "pcie.link.gen.current",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
    "temperature.gpu",
    "compute_cap",
    "pcie.link.gen.gpumax",
    "pcie.link.gen.hostmax",
)
# Fields older drivers do not know: left out of the query when nvidia-smi rejects them.
OPTIONAL_QUERY_FIELDS = ("compute_cap", "pcie.link.gen.gpumax", "pcie.link.gen.hostmax")


# --------------------------------------------------------------------------------------------
# data model
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class GPUInfo:
    """One GPU as reported by nvidia-smi (fields are None where the tool said N/A)."""

    index: int
    name: str
    uuid: str | None = None
    memory_total_mib: int | None = None
    driver_version: str | None = None
    compute_capability: str | None = None
    ecc_mode: str | None = None
    persistence_mode: str | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    temperature_c: float | None = None
    # the card's own maximum PCIe generation and the host's (pcie.link.gen.max is the lower of the two)
    pcie_gen_gpumax: int | None = None
    pcie_gen_hostmax: int | None = None


@dataclasses.dataclass
class CheckResult:
    """The outcome of one check."""

    id: str
    category: str
    status: str
    message: str
    required: bool = True
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.id}: status {self.status!r} is not one of {', '.join(STATUSES)}")


@dataclasses.dataclass
class PerfResult:
    """One throughput measurement, with the datasheet peak it is compared to."""

    gpu_index: int
    gpu_name: str
    metric: str
    achieved: float
    unit: str
    peak: float | None = None
    fraction: float | None = None
    min_fraction: float | None = None
    best: float | None = None
    spread: float | None = None


@dataclasses.dataclass
class Context:
    """Everything a check needs: options, the GPUs found, results gathered so far."""

    args: argparse.Namespace
    gpus: list[GPUInfo] = dataclasses.field(default_factory=list)
    peaks: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    results: list[CheckResult] = dataclasses.field(default_factory=list)
    perf: list[PerfResult] = dataclasses.field(default_factory=list)
    frameworks: dict[str, str | None] = dataclasses.field(default_factory=dict)
    # where the peaks came from (--peaks, or the file beside the script; None: no peaks)
    peaks_file: str | None = None
    # --min-fraction values: they win over the per-model thresholds (min_fraction_for)
    fraction_overrides: dict[str, float] = dataclasses.field(default_factory=dict)
    # nvidia-smi samples taken while a GPU was under load: {gpu index: {"matmul_bf16": [...], "h2d": [...]}}
    telemetry: dict[int, dict[str, list[dict[str, Any]]]] = dataclasses.field(default_factory=dict)
    # nvidia-smi nvlink -s: {gpu index: {link: GB/s or None}} (empty: no NVLink, or not read yet)
    nvlink: dict[int, dict[int, float | None]] = dataclasses.field(default_factory=dict)
    # The mode main() chose (choose_mode); None: as the arguments say (--cpu or not).
    cpu: bool | None = None
    mode_reason: str = ""
    # groups of checks that crashed outside any single check (run_phase): the run is incomplete
    incomplete: list[str] = dataclasses.field(default_factory=list)

    @property
    def cpu_mode(self) -> bool:
        return bool(self.args.cpu) if self.cpu is None else self.cpu

    @property
    def cpu_skip_reason(self) -> str:
        """Why the GPU checks are skipped in CPU mode, for their ``skip`` messages."""
        if self.args.cpu or not self.mode_reason:
            return "--cpu: GPU checks skipped"
        return f"CPU mode ({self.mode_reason}): GPU checks skipped"

    def add(self, result: CheckResult) -> CheckResult:
        if result.status == WARN and result.category == "hardware" and self.args.strict_hardware:
            result.status = FAIL
            result.message += " (--strict-hardware)"
        self.results.append(result)
        return result


# --------------------------------------------------------------------------------------------
# parsing helpers (pure functions: unit-tested against real nvidia-smi outputs)
# --------------------------------------------------------------------------------------------

_NA = {"", "n/a", "[n/a]", "[not supported]", "not supported", "not found", "[unknown error]", "none"}


def clean(value: object) -> str | None:
    """Strip a value; None for nvidia-smi's ways of saying "not available"."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in _NA else text


def to_int(value: str | None) -> int | None:
    """First integer in a value such as "16x", "81559 MiB" or "3"; None when absent."""
    value = clean(value)
    if value is None:
        return None
    match = re.search(r"-?\d+", value)
    return int(match.group()) if match else None


def to_float(value: str | None) -> float | None:
    """First number in a value such as "66 C" or "232.80 W"; None when absent."""
    value = clean(value)
    if value is None:
        return None
    match = re.search(r"-?\d+(?:\.\d+)?", value)
    return float(match.group()) if match else None


def _strip_comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_query_csv(text: str, fields: Sequence[str] | None = None) -> list[dict[str, str | None]]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` output.

    With ``fields`` the output has no header line; without, the first line is the header.
    Header names lose nvidia-smi's unit suffix (``memory.total [MiB]`` -> ``memory.total``).
    """
    lines = _strip_comments(text)
    if fields is None:
        if not lines:
            return []
        fields = [re.sub(r"\s*\[.*\]$", "", name.strip()) for name in lines[0].split(",")]
        lines = lines[1:]
    rows = []
    for line in lines:
        # the GPU name is the only field that could hold a comma; split from both ends around it
        values = [part.strip() for part in line.split(",")]
        if len(values) > len(fields) and "name" in fields:
            cut = fields.index("name")
            extra = len(values) - len(fields)
            values = [*values[:cut], ",".join(values[cut : cut + extra + 1]), *values[cut + extra + 1 :]]
        if len(values) != len(fields):
            raise ValueError(f"nvidia-smi CSV line has {len(values)} values for {len(fields)} fields: {line!r}")
        rows.append({field: clean(value) for field, value in zip(fields, values, strict=True)})
    return rows


def gpus_from_query(rows: list[dict[str, str | None]]) -> list[GPUInfo]:
    """Turn parsed ``--query-gpu`` rows into GPUInfo records."""
    gpus = []
    for position, row in enumerate(rows):
        index = to_int(row.get("index"))
        gpus.append(
            GPUInfo(
                index=position if index is None else index,
                name=row.get("name") or "unknown",
                uuid=row.get("uuid"),
                memory_total_mib=to_int(row.get("memory.total")),
                driver_version=row.get("driver_version"),
                compute_capability=row.get("compute_cap"),
                ecc_mode=row.get("ecc.mode.current"),
                persistence_mode=row.get("persistence_mode"),
                pcie_gen_current=to_int(row.get("pcie.link.gen.current")),
                pcie_gen_max=to_int(row.get("pcie.link.gen.max")),
                pcie_width_current=to_int(row.get("pcie.link.width.current")),
                pcie_width_max=to_int(row.get("pcie.link.width.max")),
                temperature_c=to_float(row.get("temperature.gpu")),
                pcie_gen_gpumax=to_int(row.get("pcie.link.gen.gpumax")),
                pcie_gen_hostmax=to_int(row.get("pcie.link.gen.hostmax")),
            )
        )
    return gpus


def _xml_text(node: ET.Element, path: str) -> str | None:
    found = node.find(path)
    return clean(found.text) if found is not None and found.text is not None else None


def parse_smi_xml(text: str) -> tuple[dict[str, str | None], list[GPUInfo]]:
    """Parse ``nvidia-smi -q -x``: (driver/CUDA versions, GPUs)."""
    # nvidia-smi prints a DOCTYPE naming a DTD it does not ship; ElementTree ignores it.
    root = ET.fromstring(text)  # noqa: S314 - nvidia-smi's own output
    versions = {"driver_version": _xml_text(root, "driver_version"), "cuda_version": _xml_text(root, "cuda_version")}
    gpus = []
    for position, node in enumerate(root.findall("gpu")):
        gpus.append(
            GPUInfo(
                index=position,
                name=_xml_text(node, "product_name") or "unknown",
                uuid=_xml_text(node, "uuid"),
                memory_total_mib=to_int(_xml_text(node, "fb_memory_usage/total")),
                driver_version=versions["driver_version"],
                compute_capability=_xml_text(node, "compute_cap"),
                ecc_mode=_xml_text(node, "ecc_mode/current_ecc"),
                persistence_mode=_xml_text(node, "persistence_mode"),
                pcie_gen_current=to_int(_xml_text(node, "pci/pci_gpu_link_info/pcie_gen/current_link_gen")),
                pcie_gen_max=to_int(_xml_text(node, "pci/pci_gpu_link_info/pcie_gen/max_link_gen")),
                pcie_width_current=to_int(_xml_text(node, "pci/pci_gpu_link_info/link_widths/current_link_width")),
                pcie_width_max=to_int(_xml_text(node, "pci/pci_gpu_link_info/link_widths/max_link_width")),
                temperature_c=to_float(_xml_text(node, "temperature/gpu_temp")),
            )
        )
    return versions, gpus


def parse_smi_q_text(text: str) -> tuple[dict[str, str | None], list[GPUInfo]]:
    """Parse the human-readable ``nvidia-smi -q`` / ``-a`` output (what bug reports paste).

    Indentation gives the section path, so "FB Memory Usage > Total" and "PCIe Generation > Max"
    are told apart from the many other "Total"/"Max" keys.
    """
    versions: dict[str, str | None] = {"driver_version": None, "cuda_version": None}
    gpus: list[GPUInfo] = []
    stack: list[tuple[int, str]] = []
    for raw in _strip_comments(text):
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        if re.fullmatch(r"GPU [0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f]", line):
            gpus.append(GPUInfo(index=len(gpus), name="unknown", driver_version=versions["driver_version"]))
            stack = []
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not gpus and indent > 0 and not stack:
            # a pasted fragment that starts inside a GPU section (no "GPU <bus id>" line)
            gpus.append(GPUInfo(index=0, name="unknown", driver_version=versions["driver_version"]))
        if not sep or not value.strip():
            stack.append((indent, key))
            continue
        path = (*tuple(name for _, name in stack), key)
        _apply_q_value(path, value.strip(), versions, gpus[-1] if gpus else None)
    return versions, gpus


def _apply_q_value(path: tuple[str, ...], value: str, versions: dict[str, str | None], gpu: GPUInfo | None) -> None:
    """Store one ``key : value`` line of ``nvidia-smi -q`` where it belongs."""
    if gpu is None:
        if path == ("Driver Version",):
            versions["driver_version"] = clean(value)
        elif path == ("CUDA Version",):
            versions["cuda_version"] = clean(value)
        return
    setters: dict[tuple[str, ...], Callable[[], None]] = {
        ("Product Name",): lambda: setattr(gpu, "name", clean(value) or "unknown"),
        ("GPU UUID",): lambda: setattr(gpu, "uuid", clean(value)),
        ("Persistence Mode",): lambda: setattr(gpu, "persistence_mode", clean(value)),
        ("FB Memory Usage", "Total"): lambda: setattr(gpu, "memory_total_mib", to_int(value)),
        ("ECC Mode", "Current"): lambda: setattr(gpu, "ecc_mode", clean(value)),
        ("Temperature", "GPU Current Temp"): lambda: setattr(gpu, "temperature_c", to_float(value)),
        ("PCI", "GPU Link Info", "PCIe Generation", "Max"): lambda: setattr(gpu, "pcie_gen_max", to_int(value)),
        ("PCI", "GPU Link Info", "PCIe Generation", "Current"): lambda: setattr(gpu, "pcie_gen_current", to_int(value)),
        ("PCI", "GPU Link Info", "Link Width", "Max"): lambda: setattr(gpu, "pcie_width_max", to_int(value)),
        ("PCI", "GPU Link Info", "Link Width", "Current"): lambda: setattr(gpu, "pcie_width_current", to_int(value)),
    }
    setter = setters.get(path)
    if setter is not None:
        setter()


def parse_kernel_module_version(text: str) -> str | None:
    """Driver version from /proc/driver/nvidia/version (proprietary and open kernel modules)."""
    match = re.search(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def driver_versions_agree(kernel: str | None, userspace: str | None) -> bool | None:
    """True when both are known and equal, False when they differ, None when one is unknown."""
    if kernel is None or userspace is None:
        return None
    return kernel.strip() == userspace.strip()


def cuda_version_string(encoded: int) -> str:
    """cuDriverGetVersion's integer (12040) as "12.4"."""
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"


def loss_is_falling(losses: Sequence[float], k: int) -> bool:
    """True when the mean of the last k losses is below the mean of the first k (all finite)."""
    if k < 1 or len(losses) < 2 * k:
        raise ValueError(f"need at least 2*k={2 * k} losses, got {len(losses)}")
    if not all(math.isfinite(value) for value in losses):
        return False
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


def matmul_tflops(n: int, seconds_per_iter: float) -> float:
    """TFLOP/s of an n x n x n matrix multiply (2 n^3 floating-point operations)."""
    if seconds_per_iter <= 0:
        raise ValueError(f"seconds_per_iter must be > 0, got {seconds_per_iter}")
    return 2.0 * n**3 / seconds_per_iter / 1e12


def fraction_of_peak(achieved: float, peak: float | None) -> float | None:
    """achieved / peak, or None when the peak is unknown or not positive."""
    if peak is None or peak <= 0:
        return None
    return achieved / peak


def judge_fraction(fraction: float | None, minimum: float) -> str:
    """pass at or above the minimum, fail below it, warn when there is no peak to compare to."""
    if fraction is None:
        return WARN
    return PASS if fraction >= minimum else FAIL


def allreduce_busbw_gbs(nbytes: int, seconds: float, world_size: int) -> float:
    """NCCL-tests' bus bandwidth of an all-reduce: algbw * 2 (n-1) / n, in GB/s."""
    if seconds <= 0 or world_size < 1:
        raise ValueError(f"need seconds > 0 and world_size >= 1, got {seconds}, {world_size}")
    return nbytes / seconds / 1e9 * 2 * (world_size - 1) / world_size


def pcie_peak_gbs(gen: int | None, width: int | None) -> float | None:
    """Theoretical one-direction PCIe bandwidth for a link, or None when unknown."""
    if gen is None or width is None or gen not in PCIE_LANE_GBS:
        return None
    return PCIE_LANE_GBS[gen] * width


def normalise_gpu_name(name: str) -> str:
    """Comparable form of a GPU name: lower case, no vendor prefix, single spaces."""
    name = re.sub(r"^(nvidia\s+)", "", name.strip().lower())
    return re.sub(r"[\s_-]+", " ", name)


def peaks_for(name: str, peaks: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """Datasheet peaks for a GPU name: exact key, else the normalised form of it."""
    if name in peaks:
        return peaks[name]
    wanted = normalise_gpu_name(name)
    for key, value in peaks.items():
        if normalise_gpu_name(key) == wanted:
            return value
    return None


def parse_min_fractions(items: Sequence[str]) -> dict[str, float]:
    """``--min-fraction bf16=0.6`` values (they override the per-model thresholds)."""
    result: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULT_MIN_FRACTION:
            raise ValueError(
                f"--min-fraction {item!r}: expected KEY=FRACTION with KEY one of {', '.join(DEFAULT_MIN_FRACTION)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--min-fraction {item!r}: {value!r} is not a number") from None
        if not 0 <= number <= 1:
            raise ValueError(f"--min-fraction {item!r}: fraction must be within 0..1")
        result[key] = number
    return result


def load_peaks(path: str | None) -> dict[str, dict[str, float]]:
    """Read the peaks JSON ({"<gpu name>": {"bf16": TFLOPs, ..., "mem_bw_gbs": GB/s}})."""
    if not path:
        return {}
    with Path(path).open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or not all(isinstance(value, dict) for value in data.values()):
        raise ValueError(f"--peaks {path}: expected an object of GPU name -> {{metric: number}}")
    return {
        str(name): {str(k): float(v) for k, v in metrics.items() if v is not None} for name, metrics in data.items()
    }


# Exit codes: every check passed; a required check failed; bad arguments; the run could not finish (a
# group of checks crashed: the report says which, and what ran before it).
EXIT_PASS, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


def overall(results: Sequence[CheckResult], incomplete: Sequence[str] = ()) -> dict[str, Any]:
    """Counts per status, overall status and exit code (see EXIT_*)."""
    counts = {status: sum(1 for result in results if result.status == status) for status in STATUSES}
    failed = [result.id for result in results if result.status == FAIL and result.required]
    code = EXIT_INCOMPLETE if incomplete else EXIT_FAILED if failed else EXIT_PASS
    return {
        **counts,
        "failed": failed,
        "status": FAIL if failed or incomplete else PASS,
        "complete": not incomplete,
        "incomplete": list(incomplete),
        "exit_code": code,
    }


# --------------------------------------------------------------------------------------------
# running things
# --------------------------------------------------------------------------------------------


def run_command(argv: Sequence[str], timeout: float = 60) -> tuple[int, str, str]:
    """Run a command; (returncode, stdout, stderr); 127 when the program is missing."""
    if shutil.which(argv[0]) is None:
        return 127, "", f"{argv[0]}: command not found"
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: timed out after {timeout} s"
    return proc.returncode, proc.stdout, proc.stderr


@contextlib.contextmanager
def timed(holder: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        holder["seconds"] = time.perf_counter() - start


def run_check(ctx: Context, check_id: str, category: str, func: Callable[[], CheckResult]) -> CheckResult:
    """Run one check; an unexpected exception becomes a failure that names it."""
    clock: dict[str, float] = {}
    with timed(clock):
        try:
            result = func()
        except Exception as exc:
            result = CheckResult(check_id, category, FAIL, f"{type(exc).__name__}: {exc}")
    result.duration_s = round(clock.get("seconds", 0.0), 3)
    return ctx.add(result)


def run_phase(ctx: Context, phase: str, func: Callable[[Context], None]) -> None:
    """Run a group of checks; an exception outside its checks (a sticky CUDA error in empty_cache(), a
    framework that dies on first use) becomes a failed check that names it, and marks the run incomplete."""
    try:
        func(ctx)
    # whatever it is, it goes into the report instead of killing the run
    except Exception as exc:
        ctx.incomplete.append(phase)
        ctx.add(
            CheckResult(
                f"{phase}.crashed",
                phase,
                FAIL,
                f"the {phase} checks stopped: {type(exc).__name__}: {exc} (the checks after it did not run)",
                details={"traceback": traceback.format_exc(limit=6)},
            )
        )


def judged(
    check_id: str, category: str, text: str, failures: Sequence[str], warnings: Sequence[str], details: dict[str, Any]
) -> CheckResult:
    """fail with any failure, warn with any warning, else pass; the findings follow the summary ``text``."""
    status = FAIL if failures else WARN if warnings else PASS
    problems = [*failures, *warnings]
    return CheckResult(
        check_id, category, status, text + (": " + "; ".join(problems) if problems else ""), details=details
    )


def skip(check_id: str, category: str, reason: str, required: bool = True) -> CheckResult:
    return CheckResult(check_id, category, SKIP, reason, required=required)


# --------------------------------------------------------------------------------------------
# system checks
# --------------------------------------------------------------------------------------------


def query_fields(
    fields: Sequence[str], optional: Sequence[str] = OPTIONAL_QUERY_FIELDS
) -> tuple[int, str, str, list[str]]:
    """``nvidia-smi --query-gpu``; optional fields this driver rejects are left out and the query rerun.
    (returncode, stdout, stderr, the fields queried)."""
    wanted = list(fields)
    while True:
        code, out, err = run_command(["nvidia-smi", f"--query-gpu={','.join(wanted)}", "--format=csv,noheader,nounits"])
        rejected = [field for field in wanted if field in optional and f'"{field}"' in (out + err)]
        if code == 0 or not rejected:
            return code, out, err, wanted
        wanted = [field for field in wanted if field not in rejected]


def query_gpus() -> tuple[list[GPUInfo], str | None]:
    """GPUs from ``nvidia-smi --query-gpu``; (gpus, error message or None)."""
    code, out, err, fields = query_fields(QUERY_FIELDS)
    if code != 0:
        return [], (err or out).strip() or f"nvidia-smi exited {code}"
    return gpus_from_query(parse_query_csv(out, fields)), None


def smi_cuda_version() -> str | None:
    """The CUDA version nvidia-smi reports (the driver's CUDA API level)."""
    code, out, _ = run_command(["nvidia-smi", "-q", "-x"])
    if code != 0:
        return None
    try:
        return parse_smi_xml(out)[0]["cuda_version"]
    except ET.ParseError:
        return None


def check_nvidia_smi(ctx: Context) -> CheckResult:
    gpus, error = query_gpus()
    if error is not None:
        return CheckResult("system.nvidia_smi", "system", FAIL, f"nvidia-smi failed: {error}")
    if not gpus:
        return CheckResult("system.nvidia_smi", "system", FAIL, "nvidia-smi lists no GPU")
    ctx.gpus = gpus
    names = ", ".join(f"{gpu.index}: {gpu.name}" for gpu in gpus)
    return CheckResult(
        "system.nvidia_smi",
        "system",
        PASS,
        f"{len(gpus)} GPU(s): {names}; driver {gpus[0].driver_version}",
        details={"gpus": [dataclasses.asdict(gpu) for gpu in gpus]},
    )


LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64", "usr/lib")


def version_key(version: str) -> tuple[int, ...]:
    """A driver version ("580.95.05") as a tuple that sorts numerically."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def libnvidia_ml_version(root: Path = Path("/")) -> str | None:
    """The installed userspace driver version from the libnvidia-ml.so.X.Y[.Z] file name (newest)."""
    found = []
    for directory in LIB_DIRS:
        for path in (root / directory).glob("libnvidia-ml.so.*.*"):
            match = re.search(r"libnvidia-ml\.so\.(\d+\.\d+(?:\.\d+)?)$", path.name)
            if match:
                found.append(match.group(1))
    return max(found, key=version_key) if found else None


def userspace_driver_version(ctx: Context) -> str | None:
    """The userspace driver version: nvidia-smi's answer, else the libnvidia-ml file name."""
    if ctx.gpus and ctx.gpus[0].driver_version:
        return ctx.gpus[0].driver_version
    return libnvidia_ml_version()


def check_kernel_module(ctx: Context, proc_file: Path = Path("/proc/driver/nvidia/version")) -> CheckResult:
    if not proc_file.exists():
        return CheckResult(
            "system.kernel_module",
            "system",
            FAIL,
            "NVIDIA kernel module not loaded (/proc/driver/nvidia/version missing)",
        )
    kernel = parse_kernel_module_version(proc_file.read_text(encoding="utf-8", errors="replace"))
    userspace = userspace_driver_version(ctx)
    agree = driver_versions_agree(kernel, userspace)
    details = {"kernel_module": kernel, "userspace": userspace}
    if agree is False:
        return CheckResult(
            "system.kernel_module",
            "system",
            FAIL,
            f"Driver/library version mismatch: kernel module {kernel}, userspace {userspace}; "
            "reboot or reload the nvidia kernel module",
            details=details,
        )
    if agree is None:
        return CheckResult(
            "system.kernel_module",
            "system",
            WARN,
            f"kernel module {kernel}, userspace {userspace}: not comparable",
            details=details,
        )
    return CheckResult(
        "system.kernel_module", "system", PASS, f"kernel module and userspace driver {kernel}", details=details
    )


def cuda_driver_api() -> tuple[int | None, int | None]:
    """(cuInit result, cuDriverGetVersion value) through libcuda; (None, None) without libcuda."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None, None
    version = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    init = lib.cuInit(0)
    return int(init), int(version.value)


# CUresult codes of cuInit (CUDA driver API reference, "Error Handling") and what usually causes them.
CU_RESULT_ADVICE: dict[int, tuple[str, str]] = {
    3: ("CUDA_ERROR_NOT_INITIALIZED", "the driver could not initialise: check `dmesg` for NVRM errors"),
    46: (
        "CUDA_ERROR_DEVICES_UNAVAILABLE",
        "every GPU is busy or in exclusive-process compute mode: see `nvidia-smi -q -d COMPUTE`",
    ),
    100: (
        "CUDA_ERROR_NO_DEVICE",
        "no GPU is visible: in a container run it with `--gpus all` (NVIDIA Container Toolkit); check that "
        "CUDA_VISIBLE_DEVICES is not empty or -1",
    ),
    304: ("CUDA_ERROR_OPERATING_SYSTEM", "the OS refused the driver: check `dmesg`, SELinux/AppArmor and /dev/nvidia*"),
    802: (
        "CUDA_ERROR_SYSTEM_NOT_READY",
        "on an NVSwitch system (HGX) Fabric Manager is not running or the fabric is not ready: "
        "`systemctl status nvidia-fabricmanager` and its log",
    ),
    803: (
        "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
        "the loaded kernel module and libcuda are different versions (a driver update without a reboot): reboot",
    ),
    804: (
        "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
        "CUDA forward compatibility (cuda-compat) works on data-center GPUs only: take cuda-compat off LD_LIBRARY_PATH",
    ),
    999: (
        "CUDA_ERROR_UNKNOWN",
        "often the nvidia_uvm module is not loaded (`modprobe nvidia-uvm`, or run `nvidia-modprobe -u -c=0`), or "
        "the driver was updated without a reboot",
    ),
}


def cu_result_text(code: int) -> str:
    """``999`` -> ``"CUresult 999 (CUDA_ERROR_UNKNOWN): <what usually causes it>"``."""
    name, advice = CU_RESULT_ADVICE.get(code, ("", ""))
    return f"CUresult {code} ({name}): {advice}" if name else f"CUresult {code}"


def why_no_cuda(torch_cuda: str | None, driver_cuda: str | None, visible: str | None) -> str:
    """The likely reason torch.cuda.is_available() is False, from what the script already knows."""
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if not torch_cuda:
        return "this torch is a CPU-only build: install a CUDA build (the resolver's variant)"
    if not driver_cuda:
        return "libcuda.so.1 is missing: the NVIDIA driver's user-space library is not installed or not mounted"
    wheel, driver = (tuple(int(x) for x in v.split(".")[:2]) for v in (torch_cuda, driver_cuda))
    if wheel[0] > driver[0]:
        return (
            f"torch is built for CUDA {torch_cuda}, the driver runs CUDA {driver_cuda} at most: a CUDA {wheel[0]} "
            f"build needs a driver for CUDA {wheel[0]}; upgrade the driver or install a build for CUDA {driver[0]}"
        )
    return "see system.cuda_driver and system.driver_state for the driver's side"


def check_cuda_driver(ctx: Context) -> CheckResult:
    init, version = cuda_driver_api()
    if version is None:
        return CheckResult(
            "system.cuda_driver", "system", FAIL, "libcuda.so.1 not found: the driver's CUDA library is missing"
        )
    details = {"cuda_driver_version": cuda_version_string(version), "cuInit": init, "nvidia_smi": smi_cuda_version()}
    if init != 0:
        return CheckResult(
            "system.cuda_driver",
            "system",
            FAIL,
            f"cuInit failed with {cu_result_text(init)} (CUDA driver API {details['cuda_driver_version']})",
            details=details,
        )
    return CheckResult(
        "system.cuda_driver", "system", PASS, f"CUDA driver API {details['cuda_driver_version']}", details=details
    )


def gpu_health_findings(gpu: GPUInfo, max_temp_c: float) -> list[str]:
    """Things an admin should look at on one GPU (warnings, not failures)."""
    findings = []
    if gpu.ecc_mode is not None and gpu.ecc_mode.lower() == "disabled":
        findings.append("ECC disabled")
    if gpu.persistence_mode is not None and gpu.persistence_mode.lower() == "disabled":
        findings.append("persistence mode disabled (enable nvidia-persistenced)")
    if gpu.pcie_width_current and gpu.pcie_width_max and gpu.pcie_width_current < gpu.pcie_width_max:
        findings.append(f"PCIe link x{gpu.pcie_width_current} of x{gpu.pcie_width_max}")
    if gpu.temperature_c is not None and gpu.temperature_c > max_temp_c:
        findings.append(f"temperature {gpu.temperature_c:g} C above {max_temp_c:g} C")
    return findings


def check_gpu_health(ctx: Context, gpu: GPUInfo) -> CheckResult:
    findings = gpu_health_findings(gpu, ctx.args.max_temp_c)
    link = f"PCIe gen {gpu.pcie_gen_current}/{gpu.pcie_gen_max} x{gpu.pcie_width_current}/{gpu.pcie_width_max}"
    summary = (
        f"{gpu.name}, {gpu.memory_total_mib} MiB, cc {gpu.compute_capability}, ECC {gpu.ecc_mode}, "
        f"persistence {gpu.persistence_mode}, {link} (current/max), {gpu.temperature_c} C"
    )
    status = WARN if findings else PASS
    message = f"{summary}: {'; '.join(findings)}" if findings else summary
    return CheckResult(f"system.gpu[{gpu.index}]", "system", status, message, details=dataclasses.asdict(gpu))


# --------------------------------------------------------------------------------------------
# health: ECC, row remapping, Xid errors (what fleet operators drain a node for)
# --------------------------------------------------------------------------------------------

HEALTH_FIELDS = (
    "index",
    "pci.bus_id",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.uncorrected.aggregate.total",
    "remapped_rows.pending",
    "remapped_rows.failure",
)
# Xid codes that mean the GPU or its memory/links are unhealthy (NVIDIA's Xid catalog), with the fix;
# the others (13, 31, 43, 45, ...) are usually an application's fault and only warn.
XID_ADVICE: dict[int, str] = {
    48: "double-bit ECC error: drain the node, reset the GPU (nvidia-smi -r) or reboot; RMA if it returns",
    61: "internal micro-controller breakpoint: reset the GPU or reboot; update the driver if it returns",
    62: "internal micro-controller halt: reset the GPU or reboot; update the driver if it returns",
    63: "ECC page retirement or row remapping recorded: reset the GPU or reboot to apply it",
    64: "ECC page retirement or row remapping failed: the GPU needs replacement (RMA)",
    74: "NVLink error: check the NVLink bridges or baseboard and Fabric Manager; reset the GPUs",
    79: "the GPU has fallen off the bus: check power and PCIe seating, then reboot",
    92: "high single-bit ECC error rate: watch the counts; RMA if they keep rising",
    94: "contained ECC error: reset the GPU (the affected application was stopped)",
    95: "uncontained ECC error: drain the node and reset the GPU or reboot",
    119: "GSP firmware timed out: reset the GPU or reboot; update the driver if it returns",
    120: "GSP firmware error: reset the GPU or reboot; update the driver if it returns",
}
_XID_RE = re.compile(r"NVRM: Xid \(PCI:(?P<bus>[0-9a-fA-F:.]+)\): (?P<xid>\d+)\b(?P<rest>.*)")


def parse_health_csv(text: str) -> dict[int, dict[str, Any]]:
    """``nvidia-smi --query-gpu=<HEALTH_FIELDS>`` rows by GPU index (None where the GPU says N/A)."""
    rows = {}
    for row in parse_query_csv(text, list(HEALTH_FIELDS)):
        rows[int(row["index"])] = row
    return rows


def parse_xids(log: str) -> list[dict[str, Any]]:
    """Xid events in a kernel log: ``NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus.``"""
    events = []
    for line in log.splitlines():
        match = _XID_RE.search(line)
        if match:
            events.append(
                {"bus": match.group("bus").lower(), "xid": int(match.group("xid")), "text": line.strip()[-200:]}
            )
    return events


def _same_bus(xid_bus: str, smi_bus: str | None) -> bool:
    """Xid lines name ``0000:3b:00``; nvidia-smi ``00000000:3B:00.0``: compare domain-less bus:device."""
    if not smi_bus:
        return False
    tail = lambda bus: ":".join(bus.lower().split(".")[0].split(":")[-2:])  # noqa: E731 - a one-line normaliser
    return tail(xid_bus) == tail(smi_bus)


def health_findings(row: dict[str, Any], xids: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(failures, warnings) for one GPU: each names the signal and the fix."""
    failures, warnings = [], []
    volatile = _as_int(row.get("ecc.errors.uncorrected.volatile.total"))
    aggregate = _as_int(row.get("ecc.errors.uncorrected.aggregate.total"))
    if volatile:
        failures.append(
            f"{volatile} uncorrectable ECC error(s) since the driver loaded: drain the node and reset the GPU "
            "(nvidia-smi -r) or reboot; RMA if they return"
        )
    elif aggregate:
        warnings.append(f"{aggregate} uncorrectable ECC error(s) in the GPU's lifetime (none since the driver loaded)")
    if str(row.get("remapped_rows.failure") or "").lower() == "yes":
        failures.append("row remapping failed: the GPU needs replacement (RMA)")
    if str(row.get("remapped_rows.pending") or "").lower() == "yes":
        failures.append("a row remapping is pending: reset the GPU (nvidia-smi -r) or reboot to apply it")
    for code in sorted({event["xid"] for event in xids}):
        count = sum(1 for event in xids if event["xid"] == code)
        if code in XID_ADVICE:
            failures.append(f"Xid {code} seen {count} time(s) since boot: {XID_ADVICE[code]}")
        else:
            warnings.append(f"Xid {code} seen {count} time(s) since boot (usually an application error)")
    return failures, warnings


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def kernel_log() -> tuple[str | None, str]:
    """This boot's kernel log (journalctl -k, else dmesg); (None, why) when it cannot be read."""
    for argv in (["journalctl", "-k", "-b", "--no-pager", "-o", "cat"], ["dmesg"]):
        code, out, _err = run_command(argv, timeout=30)
        if code == 0 and out.strip():
            return out, " ".join(argv[:2])
    return None, "neither `journalctl -k` nor `dmesg` could be read (run as root, or see kernel.dmesg_restrict)"


def health_checks(ctx: Context) -> None:
    """One health check per GPU: ECC and row remapping from nvidia-smi, Xid errors from the kernel log."""
    if ctx.cpu_mode or not ctx.gpus:
        return
    code, out, _err = run_command(
        ["nvidia-smi", f"--query-gpu={','.join(HEALTH_FIELDS)}", "--format=csv,noheader,nounits"]
    )
    rows = parse_health_csv(out) if code == 0 else {}
    log, source = kernel_log()
    xids = parse_xids(log) if log else []
    for gpu in ctx.gpus:
        run_check(ctx, f"health.gpu[{gpu.index}]", "health", lambda gpu=gpu: check_health(gpu, rows, xids, source, log))


def check_health(
    gpu: GPUInfo, rows: dict[int, dict[str, Any]], xids: Sequence[dict[str, Any]], source: str, log: str | None
) -> CheckResult:
    row = rows.get(gpu.index, {})
    mine = [event for event in xids if _same_bus(event["bus"], row.get("pci.bus_id"))]
    failures, warnings = health_findings(row, mine)
    if log is None:
        warnings.append(f"Xid errors not checked: {source}")
    label = f"GPU {gpu.index} {gpu.name} ({row.get('pci.bus_id') or 'bus unknown'})"
    details = {"nvidia_smi": row, "xids": mine, "kernel_log": source if log is not None else None}
    if failures:
        return CheckResult(
            f"health.gpu[{gpu.index}]", "health", FAIL, f"{label}: {'; '.join(failures)}", details=details
        )
    if warnings:
        return CheckResult(
            f"health.gpu[{gpu.index}]", "health", WARN, f"{label}: {'; '.join(warnings)}", details=details
        )
    return CheckResult(
        f"health.gpu[{gpu.index}]",
        "health",
        PASS,
        f"{label}: no ECC errors, no pending row remaps, no Xid",
        details=details,
    )


# --------------------------------------------------------------------------------------------
# telemetry under load: clocks, throttle reasons, power, PCIe link (sampled by nvidia-smi -lms)
# --------------------------------------------------------------------------------------------

TELEMETRY_FIELDS = (
    "index",
    "clocks.sm",
    "clocks.max.sm",
    "power.draw",
    "power.limit",
    "power.default_limit",
    "temperature.gpu",
    "clocks_event_reasons.active",
    "pcie.link.gen.gpucurrent",
    "pcie.link.width.current",
)
# Drivers before 535 call the event reasons "throttle reasons"; before 530 there is no gpucurrent.
TELEMETRY_FALLBACK = {
    "clocks_event_reasons.active": "clocks_throttle_reasons.active",
    "pcie.link.gen.gpucurrent": "pcie.link.gen.current",
}
# NVML's nvmlClocksEventReason bits (nvml.h): the ones that mean the card is slowed by something wrong.
CLOCK_EVENT_FAULTS: dict[int, tuple[str, str]] = {
    0x8: ("HW slowdown", "the board slowed the GPU (power supply or temperature sensor): check PSU cables, cooling"),
    0x20: ("SW thermal slowdown", "the GPU is too hot for its clocks: check airflow, fans and the room's temperature"),
    0x40: ("HW thermal slowdown", "the GPU hit its hardware thermal limit: check the heatsink, fans and airflow now"),
    0x80: ("HW power brake", "the chassis or PSU asserted the power brake: check the power supply"),
}  # fmt: skip
CLOCK_EVENT_NAMES: dict[int, str] = {
    0x1: "GPU idle",
    0x2: "applications clocks setting",
    0x4: "SW power cap",
    0x10: "sync boost",
    0x100: "display clock setting",
    **{bit: name for bit, (name, _fix) in CLOCK_EVENT_FAULTS.items()},
}
# Under a sustained matmul the SM clock should stay near its maximum; below this share the power cap or
# the cooling is limiting the card more than a healthy one of its kind.
MIN_CLOCK_SHARE = 0.6


class TelemetrySampler:
    """``nvidia-smi --query-gpu=... -lms 250 -i N`` in the background while a GPU works: context manager,
    its rows in ``samples`` afterwards (empty when nvidia-smi is missing or ``enabled`` is false). The
    first row is printed at once; the sampler waits for it (up to FIRST_ROW_S) before it stops nvidia-smi."""

    FIRST_ROW_S = 5.0

    def __init__(self, gpu_index: int, enabled: bool = True, interval_ms: int = 250) -> None:
        self.gpu_index, self.interval_ms = gpu_index, interval_ms
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None
        self._fields: list[str] = []

    def __enter__(self) -> TelemetrySampler:
        if self.enabled:
            self._fields = telemetry_fields()
            argv = ["nvidia-smi", f"--query-gpu={','.join(self._fields)}", "--format=csv,noheader,nounits"]
            argv += [f"-lms={self.interval_ms}", f"-i={self.gpu_index}"]
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
            self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stdout or ():
            self._lines.append(line)

    def __exit__(self, *_exc: object) -> None:
        if self._proc is None or self._reader is None:
            return
        deadline = time.monotonic() + self.FIRST_ROW_S
        while not self._lines and self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=10)
        try:
            self.samples = parse_telemetry("".join(self._lines), self._fields)
        except ValueError:  # a row cut off by the stop, or a message instead of rows: no samples
            self.samples = []


_TELEMETRY_FIELDS_CACHE: list[str] = []


def telemetry_fields() -> list[str]:
    """TELEMETRY_FIELDS in the names this driver knows (asked once)."""
    if not _TELEMETRY_FIELDS_CACHE:
        optional = tuple(TELEMETRY_FALLBACK) + tuple(TELEMETRY_FALLBACK.values()) + ("power.default_limit",)
        _code, _out, _err, fields = query_fields([*TELEMETRY_FIELDS, *TELEMETRY_FALLBACK.values()], optional)
        new_names = [field for field in TELEMETRY_FIELDS if field in fields]
        fallbacks = [old for new, old in TELEMETRY_FALLBACK.items() if new not in fields and old in fields]
        _TELEMETRY_FIELDS_CACHE.extend(new_names + fallbacks)
    return list(_TELEMETRY_FIELDS_CACHE)


def parse_telemetry(text: str, fields: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of the sampler's CSV with the names of TELEMETRY_FIELDS (fallback names mapped back)."""
    names = {old: new for new, old in TELEMETRY_FALLBACK.items()}
    rows = []
    for row in parse_query_csv(text, list(fields)):
        rows.append({names.get(key, key): value for key, value in row.items()})
    return rows


def clock_event_bits(value: str | None) -> int:
    """``0x0000000000000004`` as an int (0 when N/A)."""
    try:
        return int(str(value), 16)
    except (TypeError, ValueError):
        return 0


def clock_event_names(bits: int) -> list[str]:
    return [name for bit, name in sorted(CLOCK_EVENT_NAMES.items()) if bits & bit]


def _numbers(rows: Sequence[dict[str, Any]], field: str) -> list[float]:
    return [value for value in (to_float(row.get(field)) for row in rows) if value is not None]


def clock_findings(samples: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], dict[str, Any]]:
    """(failures, warnings, summary) from the samples taken during the bf16 matmul."""
    failures, warnings = [], []
    bits = 0
    for row in samples:
        bits |= clock_event_bits(row.get("clocks_event_reasons.active"))
    for bit, (name, fix) in CLOCK_EVENT_FAULTS.items():
        if bits & bit:
            failures.append(f"{name} during the matmul: {fix}")
    clocks, max_clock = _numbers(samples, "clocks.sm"), max(_numbers(samples, "clocks.max.sm") or [0.0])
    power, limit = _numbers(samples, "power.draw"), min(_numbers(samples, "power.limit") or [0.0])
    default_limit = max(_numbers(samples, "power.default_limit") or [0.0])
    median_clock = statistics.median(clocks) if clocks else None
    if median_clock and max_clock and median_clock < MIN_CLOCK_SHARE * max_clock:
        warnings.append(
            f"SM clock {median_clock:.0f} of {max_clock:.0f} MHz under load "
            f"({', '.join(clock_event_names(bits)) or 'no reason reported'})"
        )
    if limit and default_limit and limit < 0.95 * default_limit:
        warnings.append(
            f"power limit {limit:.0f} W is below the card's default {default_limit:.0f} W: "
            "`nvidia-smi -pl` or a datacenter policy lowered it"
        )
    summary = {
        "samples": len(samples),
        "sm_clock_median_mhz": median_clock,
        "sm_clock_max_mhz": max_clock or None,
        "power_max_w": max(power) if power else None,
        "power_limit_w": limit or None,
        "power_default_limit_w": default_limit or None,
        "clock_event_reasons": clock_event_names(bits),
    }
    return failures, warnings, summary


def check_clocks(label: int, gpu: GPUInfo | None, telemetry: dict[str, list[dict[str, Any]]]) -> CheckResult:
    samples = telemetry.get("matmul_bf16") or []
    check_id = f"health.clocks[{label}]"
    if not samples:
        return skip(
            check_id,
            "health",
            "no nvidia-smi samples during a bf16 matmul (nvidia-smi missing, or no bf16)",
            required=False,
        )
    failures, warnings, summary = clock_findings(samples)
    name = gpu.name if gpu else f"GPU {label}"
    text = (
        f"GPU {label} {name} under a bf16 matmul: SM {summary['sm_clock_median_mhz'] or '?'} of "
        f"{summary['sm_clock_max_mhz'] or '?'} MHz, {summary['power_max_w'] or '?'} W of "
        f"{summary['power_limit_w'] or '?'} W, reasons: {', '.join(summary['clock_event_reasons']) or 'none'}"
    )
    return judged(check_id, "health", text, failures, warnings, summary)


def card_pcie_gen_max(gpu: GPUInfo | None) -> int | None:
    """The card's own maximum PCIe generation (gpumax), else what the driver reports as max."""
    if gpu is None:
        return None
    return gpu.pcie_gen_gpumax or gpu.pcie_gen_max


def pcie_findings(gpu: GPUInfo, samples: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], dict[str, Any]]:
    """(failures, warnings, summary): the link under load against the card's and the host's maxima."""
    gens = [int(value) for value in _numbers(samples, "pcie.link.gen.gpucurrent")]
    widths = [int(value) for value in _numbers(samples, "pcie.link.width.current")]
    gen = max(gens) if gens else gpu.pcie_gen_current
    width = max(widths) if widths else gpu.pcie_width_current
    card_gen, host_gen, max_width = card_pcie_gen_max(gpu), gpu.pcie_gen_hostmax, gpu.pcie_width_max
    failures, warnings = [], []
    if width and max_width and width < max_width:
        failures.append(
            f"the link runs x{width} of the card's x{max_width}: reseat the card, check the riser and that the "
            "slot is wired x16 (a slot shared with an M.2 drive halves it)"
        )
    if gen and card_gen and gen < card_gen:
        if host_gen and gen >= host_gen:
            warnings.append(
                f"Gen{gen} under load: the card supports Gen{card_gen} but the slot or host only Gen{host_gen} "
                "(host-to-GPU copies run at most at the slot's speed)"
            )
        else:
            failures.append(
                f"the link trained down to Gen{gen} under load (card Gen{card_gen}, host Gen{host_gen or '?'}): "
                "reseat the card or riser, check the BIOS PCIe speed setting; Xid 79 or AER errors in the kernel log "
                "point at the slot"
            )
    summary = {
        "gen_under_load": gen,
        "width_under_load": width,
        "card_gen_max": card_gen,
        "host_gen_max": host_gen,
        "width_max": max_width,
        "sampled": bool(samples),
    }
    return failures, warnings, summary


def check_pcie_link(label: int, gpu: GPUInfo | None, telemetry: dict[str, list[dict[str, Any]]]) -> CheckResult:
    check_id = f"health.pcie[{label}]"
    if gpu is None:
        return skip(check_id, "health", "nvidia-smi does not list this GPU", required=False)
    samples = telemetry.get("h2d") or []
    failures, warnings, summary = pcie_findings(gpu, samples)
    when = "during a host-to-GPU copy" if samples else "at rest (no samples under load)"
    text = f"GPU {label} {gpu.name}: PCIe Gen{summary['gen_under_load']} x{summary['width_under_load']} {when}"
    return judged(check_id, "health", text, failures, warnings, summary)


# --------------------------------------------------------------------------------------------
# NVLink, NVSwitch fabric, Fabric Manager
# --------------------------------------------------------------------------------------------

_NVLINK_GPU_RE = re.compile(r"^GPU (?P<index>\d+):")
_NVLINK_LINK_RE = re.compile(r"^\s*Link (?P<link>\d+):\s*(?P<value>.*)$")
_NVLINK_ERROR_RE = re.compile(r"^\s*(?P<name>[A-Za-z ]+?(?:Errors?|Counter))\s*:\s*(?P<count>\d+)\s*$")


def parse_nvlink_status(text: str) -> dict[int, dict[int, float | None]]:
    """``nvidia-smi nvlink -s``: {gpu: {link: GB/s, or None when the link is inactive}}."""
    result: dict[int, dict[int, float | None]] = {}
    current: dict[int, float | None] | None = None
    for line in text.splitlines():
        gpu = _NVLINK_GPU_RE.match(line)
        if gpu:
            current = result.setdefault(int(gpu.group("index")), {})
            continue
        link = _NVLINK_LINK_RE.match(line)
        if link and current is not None:
            speed = re.match(r"([\d.]+)\s*GB/s", link.group("value").strip())
            current[int(link.group("link"))] = float(speed.group(1)) if speed else None
    return result


def parse_nvlink_errors(text: str) -> dict[int, dict[int, dict[str, int]]]:
    """``nvidia-smi nvlink -e``: {gpu: {link: {counter name: count}}}."""
    result: dict[int, dict[int, dict[str, int]]] = {}
    gpu_links: dict[int, dict[str, int]] | None = None
    link_counters: dict[str, int] | None = None
    for line in text.splitlines():
        gpu = _NVLINK_GPU_RE.match(line)
        if gpu:
            gpu_links, link_counters = result.setdefault(int(gpu.group("index")), {}), None
            continue
        link = _NVLINK_LINK_RE.match(line)
        if link and gpu_links is not None:
            link_counters = gpu_links.setdefault(int(link.group("link")), {})
            rest = link.group("value").strip()
            line = rest  # counters may follow on the same line
        counter = _NVLINK_ERROR_RE.match(line)
        if counter and link_counters is not None:
            link_counters[counter.group("name").strip()] = int(counter.group("count"))
    return result


def nvlink_findings(
    links: dict[int, float | None], errors: dict[int, dict[str, int]], node_active: int
) -> tuple[list[str], list[str]]:
    """(failures, warnings) for one GPU's NVLinks; ``node_active``: the most links up on any GPU of the node
    (bridged PCIe cards use only some of their links by design, so a GPU is compared with its peers)."""
    failures, warnings = [], []
    active = [link for link, speed in links.items() if speed]
    inactive = [link for link, speed in links.items() if not speed]
    if len(active) < node_active:
        failures.append(
            f"{len(active)} NVLinks up where the node's other GPUs have {node_active} (inactive: "
            f"{', '.join(map(str, inactive)) or 'none listed'}): reseat the NVLink bridge or check the baseboard, "
            "restart Fabric Manager on NVSwitch systems, then reset the GPU"
        )
    for link, counters in sorted(errors.items()):
        bad = {name: count for name, count in counters.items() if count and "Recovery" in name}
        noisy = {name: count for name, count in counters.items() if count and "Recovery" not in name}
        if bad:
            failures.append(f"NVLink {link}: {bad} (the link had to retrain): check the bridge or baseboard")
        elif noisy:
            warnings.append(f"NVLink {link}: {noisy} (watch: rising counts mean a marginal link)")
    return failures, warnings


def check_nvlink(
    gpu: GPUInfo, status: dict[int, dict[int, float | None]], errors: dict[int, dict[int, dict[str, int]]]
) -> CheckResult:
    links = status.get(gpu.index, {})
    check_id = f"health.nvlink[{gpu.index}]"
    node_active = max((sum(1 for speed in gpu_links.values() if speed) for gpu_links in status.values()), default=0)
    failures, warnings = nvlink_findings(links, errors.get(gpu.index, {}), node_active)
    speeds = [speed for speed in links.values() if speed]
    text = f"GPU {gpu.index} {gpu.name}: {len(speeds)} of {len(links)} NVLinks up, {sum(speeds):.0f} GB/s per direction"
    details = {"links": links, "errors": errors.get(gpu.index, {}), "bandwidth_gbs": sum(speeds)}
    return judged(check_id, "health", text, failures, warnings, details)


def nvlink_checks(ctx: Context) -> None:
    """One check per GPU that has NVLinks (nothing on PCIe-only hosts)."""
    if ctx.cpu_mode or not ctx.gpus:
        return
    code, out, _err = run_command(["nvidia-smi", "nvlink", "-s"], timeout=60)
    status = parse_nvlink_status(out) if code == 0 else {}
    ctx.nvlink = status
    if not any(status.values()):
        return
    code, out, _err = run_command(["nvidia-smi", "nvlink", "-e"], timeout=60)
    errors = parse_nvlink_errors(out) if code == 0 else {}
    for gpu in ctx.gpus:
        # a GPU nvidia-smi lists without links on a node whose other GPUs have them is judged too
        run_check(ctx, f"health.nvlink[{gpu.index}]", "health", lambda g=gpu: check_nvlink(g, status, errors))


NVSWITCH_CLASS = "0x0680"  # PCI class "bridge, other": how NVSwitches show on the bus (vendor 0x10de)


def nvswitch_count(sys_root: Path = Path("/sys")) -> int:
    """NVIDIA bridges on the PCI bus: the NVSwitches of an HGX baseboard."""
    count = 0
    for device in sorted((sys_root / "bus/pci/devices").glob("*")):
        vendor, klass = _read_sysfs(device / "vendor"), _read_sysfs(device / "class") or ""
        if vendor == NVIDIA_VENDOR and klass.startswith(NVSWITCH_CLASS):
            count += 1
    return count


def parse_fabric(text: str) -> dict[int, dict[str, str | None]]:
    """The ``Fabric`` section of each GPU in ``nvidia-smi -q``: {gpu position: {"state": ..., "status": ...,
    "health summary": ..., "health bandwidth": ...}} (values None where nvidia-smi says N/A)."""
    result: dict[int, dict[str, str | None]] = {}
    position, inside, sub = -1, False, ""
    for line in text.splitlines():
        if re.match(r"^GPU [0-9A-Fa-f:.]+\s*$", line):
            position, inside = position + 1, False
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if stripped == "Fabric" and indent <= 4:
            inside, sub = True, ""
            result[position] = {}
            continue
        if not inside or not stripped:
            continue
        if indent <= 4:  # the next section of the same GPU
            inside = False
            continue
        key, sep, value = stripped.partition(":")
        if not sep:
            sub = key.strip().lower()  # "Health": its lines follow, indented deeper
            continue
        name = key.strip().lower()
        if indent > 8 and sub:
            name = f"{sub} {name}"
        result[position][name] = clean(value.strip())
    return result


def fabric_findings(fabric: dict[int, dict[str, str | None]], switches: int, manager: str) -> list[str]:
    """Failures on an NVSwitch system: every GPU's fabric registration complete and Fabric Manager up."""
    if not switches and not any(info.get("state") for info in fabric.values()):
        return []
    failures = []
    if switches and manager != "active":
        failures.append(
            f"{switches} NVSwitch(es) on the bus but nvidia-fabricmanager is {manager}: `sudo systemctl enable "
            "--now nvidia-fabricmanager` (package nvidia-fabricmanager-<branch>, the driver's exact version); CUDA "
            "fails with error 802 until it runs"
        )
    for position, info in sorted(fabric.items()):
        state, status = (info.get("state") or "").lower(), (info.get("status") or "").lower()
        if (state and state != "completed") or (status and status != "success"):
            failures.append(
                f"GPU {position} fabric state {info.get('state')}, status {info.get('status')}: the GPU is not "
                "registered with the NVSwitch fabric; check `journalctl -u nvidia-fabricmanager`"
            )
        elif (info.get("health summary") or "").lower() == "unhealthy":
            failures.append(
                f"GPU {position} fabric health Unhealthy (bandwidth {info.get('health bandwidth')}): NVLink routes "
                "are degraded; drain the node and see `nvidia-smi -q` Fabric/Health and the Fabric Manager log"
            )
    return failures


def check_fabric(ctx: Context) -> CheckResult | None:
    switches = nvswitch_count()
    code, out, _err = run_command(["nvidia-smi", "-q"], timeout=60)
    fabric = parse_fabric(out) if code == 0 else {}
    if not switches and not any(info.get("state") for info in fabric.values()):
        return None  # not an NVSwitch system
    _code, manager, _ = run_command(["systemctl", "is-active", "nvidia-fabricmanager"], timeout=30)
    failures = fabric_findings(fabric, switches, manager.strip() or "not installed")
    details = {"nvswitches": switches, "fabric": fabric, "fabricmanager": manager.strip()}
    if failures:
        return CheckResult("health.fabric", "health", FAIL, "; ".join(failures), details=details)
    return CheckResult(
        "health.fabric",
        "health",
        PASS,
        f"{switches} NVSwitch(es), Fabric Manager active, every GPU's fabric state completed",
        details=details,
    )


def fabric_checks(ctx: Context) -> None:
    if ctx.cpu_mode or not ctx.gpus:
        return
    result = check_fabric(ctx)
    if result is not None:
        ctx.add(result)


# --------------------------------------------------------------------------------------------
# DCGM diagnostics (when dcgmi is installed)
# --------------------------------------------------------------------------------------------

# Seconds a `dcgmi diag -r N` may take: level 1 is quick, 2 about two minutes, 3 and 4 a long stress test.
DCGM_TIMEOUT_S = {1: 300, 2: 900, 3: 2700, 4: 7200}


def dcgm_results(data: Any, name: str = "", gpu: str | None = None) -> list[dict[str, Any]]:
    """Every ``{"status": ...}`` in ``dcgmi diag -j`` output with the test name and GPU it belongs to and
    its messages (DCGM 3 and 4 nest them differently: the walk needs no fixed layout)."""
    found: list[dict[str, Any]] = []
    if isinstance(data, list):
        for item in data:
            found.extend(dcgm_results(item, name, gpu))
        return found
    if not isinstance(data, dict):
        return found
    name = str(data.get("name") or data.get("test_name") or name)
    if "gpu_id" in data or "gpu_ids" in data:  # DCGM 3
        gpu = str(data.get("gpu_id", data.get("gpu_ids")))
    elif data.get("entity_group") == "GPU" and "entity_id" in data:  # DCGM 4
        gpu = str(data["entity_id"])
    if isinstance(data.get("status"), str):
        messages = []
        for key in ("warnings", "warning", "info", "errors", "error"):
            value = data.get(key)
            items = value if isinstance(value, list) else [value] if value else []
            for item in items:
                text = (
                    item.get("warning") or item.get("message") or item.get("error") if isinstance(item, dict) else item
                )
                if text:
                    messages.append(str(text).strip())
        found.append({"test": name, "gpu": gpu, "status": data["status"].strip().lower(), "messages": messages})
    has_results = bool(data.get("results"))
    for key, value in data.items():
        if key in ("warnings", "info", "errors", "entity_groups", "metadata"):
            continue
        if key == "test_summary" and has_results:  # the per-GPU results already say it
            continue
        if isinstance(value, dict | list):
            found.extend(dcgm_results(value, name, gpu))
    return found


def judge_dcgm(results: Sequence[dict[str, Any]], level: int) -> CheckResult:
    failed = [result for result in results if result["status"] == "fail"]
    warned = [result for result in results if result["status"] == "warn"]
    passed = sum(1 for result in results if result["status"] == "pass")
    details = {"level": level, "results": list(results)}

    def describe(result: dict[str, Any]) -> str:
        where = f" on GPU {result['gpu']}" if result["gpu"] not in (None, "") else ""
        return f"{result['test']}{where}: {'; '.join(result['messages']) or result['status']}"

    if not results:
        return CheckResult(
            "health.dcgm", "health", FAIL, f"dcgmi diag -r {level} reported no test results", details=details
        )
    if failed:
        text = f"dcgmi diag -r {level}: " + " | ".join(describe(result) for result in failed)
        return CheckResult(
            "health.dcgm",
            "health",
            FAIL,
            text + " (see `dcgmi diag` and NVIDIA's DCGM diagnostics guide)",
            details=details,
        )
    if warned:
        text = f"dcgmi diag -r {level}: {passed} passed; " + " | ".join(describe(result) for result in warned)
        return CheckResult("health.dcgm", "health", WARN, text, details=details)
    return CheckResult(
        "health.dcgm", "health", PASS, f"dcgmi diag -r {level}: {passed} test result(s) passed", details=details
    )


def check_dcgm(level: int, timeout: float) -> CheckResult:
    code, out, err = run_command(["dcgmi", "diag", "-r", str(level), "-j"], timeout=timeout)
    if code == 124:
        return CheckResult("health.dcgm", "health", FAIL, f"dcgmi diag -r {level} did not finish in {timeout:g} s")
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        message = (err or out).strip().splitlines()
        hint = (
            " (is nvidia-dcgm running? `sudo systemctl enable --now nvidia-dcgm`)"
            if "host engine" in (err + out).lower()
            else ""
        )
        return CheckResult(
            "health.dcgm",
            "health",
            FAIL,
            f"dcgmi diag -r {level} exited {code}: {message[-1] if message else 'no output'}{hint}",
        )
    return judge_dcgm(dcgm_results(data), level)


def dcgm_checks(ctx: Context) -> None:
    level = ctx.args.dcgm_level
    if ctx.cpu_mode or not ctx.gpus or level == 0:
        return
    if shutil.which("dcgmi") is None:
        ctx.add(
            skip(
                "health.dcgm",
                "health",
                "dcgmi is not installed (datacenter-gpu-manager): no DCGM diagnostic",
                required=False,
            )
        )
        return
    timeout = ctx.args.dcgm_timeout_s or DCGM_TIMEOUT_S[level]
    run_check(ctx, "health.dcgm", "health", lambda: check_dcgm(level, timeout))


# --------------------------------------------------------------------------------------------
# driver state: why there is no working GPU (gathered in one place, judged by a pure function)
# --------------------------------------------------------------------------------------------

NVIDIA_VENDOR = "0x10de"
FACT_FILE = "etc/ansible/facts.d/nvidia_driver.fact"
# the nvidia_driver role's boot guard: which kernel GRUB starts next and which kernels lack a module
GUARD_STATE_FILE = "var/lib/dlstack/nvidia-boot-guard.json"
GUARD_KEYS = ("boot_kernel", "kernels_without_module")
REBOOT_PKGS_FILE = "var/run/reboot-required.pkgs"
SECURE_BOOT_VAR = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
CANONICAL_SIGNER = "canonical"

Runner = Callable[[Sequence[str]], tuple[int, str, str]]

# modprobe's errors (errno strings) and the kernel's log lines, by what they mean
_MODPROBE_REJECTED = re.compile(r"Key was rejected by service|Required key not available", re.IGNORECASE)
_MODPROBE_NO_DEVICE = re.compile(r"No such device", re.IGNORECASE)
_MODPROBE_NOT_FOUND = re.compile(r"Module nvidia not found", re.IGNORECASE)
_LOG_REJECTED = re.compile(
    # kernel/module/signing.c: "Loading of unsigned module is rejected", "... module with unavailable key ..."
    r"Loading of (?:unsigned module|module with unavailable key) is rejected"
    r"|Key was rejected|Required key not available"
    r"|unsigned module loading is restricted|PKCS#7 signature not signed with a trusted key",
    re.IGNORECASE,
)
_LOG_NO_DEVICE = re.compile(
    r"NVRM: No NVIDIA GPU found|NVRM: No NVIDIA devices probed|NVRM: The NVIDIA probe routine was not called",
    re.IGNORECASE,
)
_LOG_RELEVANT = re.compile(
    r"nvidia|NVRM|nouveau|Key was rejected|Loading of .*module|Required key not available|Lockdown:|PKCS#7",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class PciDevice:
    """One NVIDIA function on the PCI bus, from /sys/bus/pci/devices/<address>/."""

    address: str
    pci_class: str
    device_id: str | None = None
    driver: str | None = None  # the kernel driver bound to it (nvidia, nouveau, vfio-pci), None when unbound

    @property
    def is_gpu(self) -> bool:
        """Display controllers (VGA 0x0300, 3D 0x0302): GPUs."""
        return self.pci_class.lower().startswith("0x03")

    @property
    def is_nvswitch(self) -> bool:
        """Bridge, other (0x0680): NVSwitch on HGX/DGX boards."""
        return self.pci_class.lower().startswith("0x0680")


def _read_sysfs(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def nvidia_pci_devices(sys_root: Path = Path("/sys")) -> list[PciDevice]:
    """NVIDIA functions (vendor 0x10de) on the PCI bus, in address order."""
    devices = []
    base = sys_root / "bus" / "pci" / "devices"
    for entry in sorted(base.glob("*")) if base.is_dir() else []:
        if (_read_sysfs(entry / "vendor") or "").lower() != NVIDIA_VENDOR:
            continue
        driver_link = entry / "driver"
        driver = driver_link.readlink().name if driver_link.is_symlink() else None
        devices.append(
            PciDevice(
                address=entry.name,
                pci_class=_read_sysfs(entry / "class") or "",
                device_id=_read_sysfs(entry / "device"),
                driver=driver,
            )
        )
    return devices


def fact_bool(value: Any) -> bool | None:
    """A local fact's boolean, whether JSON wrote it as true or a template as "True"; None if unknown."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_driver_fact(root: Path = Path("/")) -> dict[str, Any]:
    """The nvidia_driver role's local fact; {} when absent or unreadable."""
    return _read_json(root / FACT_FILE)


def read_guard_state(root: Path = Path("/")) -> dict[str, Any]:
    """The boot guard's last decision (boot_kernel, kernels_without_module); {} when absent."""
    return _read_json(root / GUARD_STATE_FILE)


def kernel_driver_installed(fact: dict[str, Any]) -> bool:
    """True when the nvidia_driver role installed kernel modules (not userspace only)."""
    modules = str(fact.get("kernel_modules") or "none").strip().lower()
    return fact_bool(fact.get("userspace_only")) is False or modules not in ("none", "")


def gpu_evidence(root: Path = Path("/")) -> list[str]:
    """Reasons to expect a working NVIDIA GPU here; empty on a host with none (CPU mode is right)."""
    devices = nvidia_pci_devices(root / "sys")
    evidence = []
    gpus = [device.address for device in devices if device.is_gpu]
    switches = [device.address for device in devices if device.is_nvswitch]
    if gpus:
        evidence.append(f"{len(gpus)} NVIDIA GPU(s) on the PCI bus ({', '.join(gpus)})")
    if switches:
        evidence.append(f"{len(switches)} NVSwitch(es) on the PCI bus")
    fact = read_driver_fact(root)
    if kernel_driver_installed(fact):
        evidence.append(f"the nvidia_driver role installed kernel modules ({fact.get('kernel_modules', '?')})")
    if (root / "sys" / "module" / "nvidia").is_dir():
        evidence.append("the nvidia kernel module is loaded")
    # /dev/nvidiactl alone is no evidence: NVML creates it through nvidia-modprobe even where no
    # driver is loaded (seen in the test containers after a first nvidia-smi)
    return evidence


def choose_mode(cpu_flag: bool, expect_gpu_flag: bool, evidence: Sequence[str]) -> tuple[bool, str]:
    """(CPU mode?, why): --cpu wins; else GPU mode when asked for or when there is any evidence of a GPU."""
    if cpu_flag:
        return True, "--cpu given"
    if expect_gpu_flag:
        return False, "--expect-gpu given"
    if evidence:
        return False, "; ".join(evidence)
    return True, "no NVIDIA GPU on the PCI bus and no NVIDIA kernel driver installed"


@dataclasses.dataclass
class DriverState:
    """What the host says about its NVIDIA driver (gather_driver_state); judged by diagnose_driver."""

    kernel: str
    devices: list[PciDevice] = dataclasses.field(default_factory=list)
    module_loaded: bool = False
    loaded_version: str | None = None  # /sys/module/nvidia/version
    userspace_version: str | None = None  # libnvidia-ml file name, else dpkg
    module_present: bool | None = None  # modinfo found nvidia for the running kernel; None: modinfo missing
    module_file: str | None = None
    signer: str | None = None  # modinfo -F signer nvidia; "" when unsigned
    modprobe_error: str | None = None  # a failed `modprobe nvidia` (root only, module not loaded)
    loaded_by_verify: bool = False  # our `modprobe nvidia` loaded it
    kernel_log: list[str] = dataclasses.field(default_factory=list)
    control_node: bool = False  # /dev/nvidiactl
    gpu_nodes: list[str] = dataclasses.field(default_factory=list)  # /dev/nvidia0, /dev/nvidia1, ...
    nouveau_loaded: bool = False
    reboot_required_pkgs: list[str] = dataclasses.field(default_factory=list)
    fact: dict[str, Any] = dataclasses.field(default_factory=dict)
    guard: dict[str, Any] = dataclasses.field(default_factory=dict)  # the boot guard's last decision
    secure_boot: bool | None = None
    in_container: bool = False

    @property
    def gpus(self) -> list[PciDevice]:
        return [device for device in self.devices if device.is_gpu]


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def dpkg_driver_version(run: Runner) -> str | None:
    """The installed libnvidia-compute package's driver version (newest), through dpkg-query."""
    code, out, _ = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package} ${Version}\n", "libnvidia-compute-*"])
    if code != 0:
        return None
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("ii"):
            match = re.match(r"(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", parts[2])
            if match:
                found.append(match.group(1))
    return max(found, key=version_key) if found else None


def _read_loaded(state: DriverState, root: Path) -> None:
    """The loaded module, its version and the device nodes (read again after a modprobe)."""
    module_dir = root / "sys" / "module" / "nvidia"
    state.module_loaded = module_dir.is_dir()
    state.loaded_version = _read_sysfs(module_dir / "version") if state.module_loaded else None
    state.control_node = (root / "dev" / "nvidiactl").exists()
    nodes = (root / "dev").glob("nvidia[0-9]*")
    names = [path.name for path in nodes if re.fullmatch(r"nvidia\d+", path.name)]
    state.gpu_nodes = sorted(names, key=lambda name: int(name[len("nvidia") :]))


def _read_module_info(state: DriverState, run: Runner) -> None:
    code, out, _ = run(["modinfo", "-k", state.kernel, "-n", "nvidia"])
    if code == 127:
        return
    state.module_present = code == 0 and bool(out.strip())
    if state.module_present:
        state.module_file = out.strip()
        code, out, _ = run(["modinfo", "-k", state.kernel, "-F", "signer", "nvidia"])
        state.signer = out.strip() if code == 0 else None


def _try_modprobe(state: DriverState, run: Runner, root: Path) -> None:
    """Load the module once (root only, when not loaded) to hear the kernel's answer."""
    code, out, err = run(["modprobe", "nvidia"])
    if code == 0:
        state.loaded_by_verify = True
        _read_loaded(state, root)
    elif code != 127:
        state.modprobe_error = _first_line(err) or _first_line(out) or f"modprobe exited {code}"
        if _MODPROBE_NOT_FOUND.search(state.modprobe_error):
            state.module_present = False


def _read_secure_boot(root: Path) -> bool | None:
    try:
        data = (root / SECURE_BOOT_VAR).read_bytes()
    except OSError:
        return None
    return data[4] == 1 if len(data) >= 5 else None  # 4 bytes of attributes, then the value


def _read_reboot_pkgs(root: Path) -> list[str]:
    text = read_text(str(root / REBOOT_PKGS_FILE))
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return sorted({name for name in names if "nvidia" in name or name.startswith("linux-")})


def gather_driver_state(
    root: Path = Path("/"), run: Runner = run_command, kernel: str | None = None, is_root: bool | None = None
) -> DriverState:
    """Read everything diagnose_driver needs: sysfs, /dev, the local fact, modinfo, modprobe, dmesg.

    ``root`` prefixes every path and ``run`` runs every command, so tests pass a fake tree and fake
    commands. The only change it can make: as root, with the module not loaded, ``modprobe nvidia``.
    """
    state = DriverState(kernel=kernel or platform.release())
    state.devices = nvidia_pci_devices(root / "sys")
    _read_loaded(state, root)
    state.fact = read_driver_fact(root)
    state.guard = read_guard_state(root)
    state.nouveau_loaded = (root / "sys" / "module" / "nouveau").is_dir()
    state.userspace_version = libnvidia_ml_version(root) or dpkg_driver_version(run)
    _read_module_info(state, run)
    if is_root is None:
        is_root = os.geteuid() == 0
    if is_root and not state.module_loaded and state.module_present is not False:
        _try_modprobe(state, run, root)
    code, out, _ = run(["dmesg"])
    if code == 0:
        state.kernel_log = [line.strip() for line in out.splitlines() if _LOG_RELEVANT.search(line)][-20:]
    state.reboot_required_pkgs = _read_reboot_pkgs(root)
    state.secure_boot = _read_secure_boot(root)
    state.in_container = (root / ".dockerenv").exists() or (root / "run" / ".containerenv").exists()
    return state


# Each rule returns (state name, what is wrong, how to fix it), or None when it does not apply.
Finding = tuple[str, str, str]
REBOOT_FIX = "reboot (`sudo reboot`), or rerun the playbook with `-e nvidia_driver_reboot=auto`"


def modules_package(state: DriverState) -> str:
    """Ubuntu's precompiled module package for the running kernel, as far as the fact tells."""
    branch = str(state.fact.get("branch") or "").strip()
    if not branch:
        return f"linux-modules-nvidia-<branch>-{state.kernel}"
    server = "-server" if fact_bool(state.fact.get("server_line")) and not branch.endswith("-server") else ""
    modules_open = "-open" if str(state.fact.get("kernel_modules") or "").lower() == "open" else ""
    return f"linux-modules-nvidia-{branch}{server}{modules_open}-{state.kernel}"


def _rule_module_missing(state: DriverState) -> Finding | None:
    if state.module_present is not False:
        return None
    problem = f"no nvidia kernel module for the running kernel {state.kernel} (`modinfo -k {state.kernel} nvidia`)"
    boot_kernel = str(state.guard.get("boot_kernel") or "").strip()
    without_module = state.guard.get("kernels_without_module") or []
    if boot_kernel and boot_kernel != state.kernel and boot_kernel not in without_module:
        fix = (
            f"reboot: the boot loader will start {boot_kernel}, which has the module "
            f"(`sudo reboot`, or rerun with `-e nvidia_driver_reboot=auto`)"
        )
    elif str(state.fact.get("module_source") or "").lower() == "dkms":
        fix = (
            f"rebuild it with DKMS: `sudo apt install linux-headers-{state.kernel}` then "
            f"`sudo dkms autoinstall -k {state.kernel}` (see `dkms status`), or rerun the nvidia_driver role"
        )
    else:
        package = modules_package(state)
        fix = (
            f"install the module package for this kernel (`sudo apt install {package}`) or rerun the nvidia_driver role"
        )
    return "module_missing", problem, fix


def _rule_nouveau(state: DriverState) -> Finding | None:
    bound = [gpu.address for gpu in state.gpus if gpu.driver == "nouveau"]
    if not bound and not (state.nouveau_loaded and not state.module_loaded):
        return None
    where = f" and drives GPU {', '.join(bound)}" if bound else ""
    problem = f"the nouveau driver is loaded{where}, so the NVIDIA driver cannot take the GPU"
    fix = (
        "reboot: the nvidia_driver role blacklisted nouveau and updated the initramfs, which takes effect at "
        "the next boot (if nouveau comes back: `grep -r nouveau /etc/modprobe.d`, `sudo update-initramfs -u`, reboot)"
    )
    return "nouveau_bound", problem, fix


def _rejection_evidence(state: DriverState) -> str | None:
    if state.modprobe_error and _MODPROBE_REJECTED.search(state.modprobe_error):
        return f"`modprobe nvidia`: {state.modprobe_error}"
    lines = [line for line in state.kernel_log if _LOG_REJECTED.search(line)]
    return f"kernel log: {lines[-1]}" if lines else None


def _rejected_fix(state: DriverState) -> str:
    certificate = str(state.fact.get("mok_certificate") or "").strip()
    pending = fact_bool(state.fact.get("mok_enrollment_pending"))
    steps = (
        'reboot, and on the blue MokManager screen choose "Enroll MOK", "Continue", "Yes", type the password, '
        '"Reboot" (console access needed once)'
    )
    if pending:
        key = certificate or "<nvidia_driver_mok_dir>/MOK.der"
        return (
            f"enroll the Machine Owner Key at the next boot: `sudo mokutil --import {key}` (choose a one-time "
            f"password; skip this if the role queued it with nvidia_driver_mok_password), then {steps}"
        )
    if state.signer and CANONICAL_SIGNER in state.signer.lower():
        return (
            "Secure Boot refuses Canonical's key, which is rare: check the firmware's db and the MOK list "
            "(`mokutil --sb-state`, `mokutil --list-enrolled`, `mokutil --db`) and update the firmware or shim"
        )
    key = certificate or "<the signing certificate, e.g. /var/lib/shim-signed/mok/MOK.der>"
    return (
        f"the firmware does not trust the module's signing key: enroll it (`sudo mokutil --import {key}`, then "
        f"{steps}), or rerun the nvidia_driver role, which signs DKMS modules with its own Machine Owner Key"
    )


def _rule_rejected(state: DriverState) -> Finding | None:
    evidence = _rejection_evidence(state)
    if evidence is None:
        return None
    signer = f"signed by '{state.signer}'" if state.signer else "unsigned (or signer unknown)"
    secure_boot = {True: ", Secure Boot is on", False: ", Secure Boot is off", None: ""}[state.secure_boot]
    problem = f"the kernel refuses the nvidia module's signature ({evidence}); the module is {signer}{secure_boot}"
    return "module_rejected", problem, _rejected_fix(state)


def _rule_no_device(state: DriverState) -> Finding | None:
    if state.modprobe_error and _MODPROBE_NO_DEVICE.search(state.modprobe_error):
        evidence = f"`modprobe nvidia`: {state.modprobe_error}"
    elif lines := [line for line in state.kernel_log if _LOG_NO_DEVICE.search(line)]:
        evidence = f"kernel log: {lines[-1]}"
    elif not state.gpus:
        evidence = "nothing with vendor 0x10de and class 0x03 in /sys/bus/pci/devices"
    else:
        return None
    others = [f"{gpu.address} is bound to {gpu.driver}" for gpu in state.gpus if gpu.driver not in (None, "nvidia")]
    installed = f"the nvidia module for {state.kernel} is installed but " if state.module_present else ""
    problem = f"{installed}the kernel finds no NVIDIA GPU ({evidence})"
    if others:
        problem += f"; {', '.join(others)}"
    if state.gpus:
        fix = (
            f"the GPU is on the PCI bus ({len(state.gpus)} found) but the driver did not take it: read "
            "`sudo dmesg | grep NVRM` (a GPU this driver branch does not support, or another driver such as "
            "vfio-pci holding it) and look for Xid errors (`sudo dmesg | grep -i xid`)"
        )
    else:
        fix = (
            "check that the GPU is on the bus (`lspci -d 10de:`), its power cables and seating, the BIOS settings "
            "(slot enabled, Above 4G decoding) or, in a VM, the PCI passthrough; look for Xid errors "
            "(`sudo dmesg | grep -i xid`)"
        )
    return "no_device", problem, fix


def _rule_reboot_not_loaded(state: DriverState) -> Finding | None:
    reasons = []
    if fact_bool(state.fact.get("reboot_required")):
        reasons.append("/etc/ansible/facts.d/nvidia_driver.fact says reboot_required")
    if state.reboot_required_pkgs:
        reasons.append(f"/var/run/reboot-required.pkgs lists {', '.join(state.reboot_required_pkgs)}")
    if not reasons:
        return None
    problem = f"the nvidia kernel module is not loaded and a reboot is pending ({'; '.join(reasons)})"
    return "reboot_pending", problem, REBOOT_FIX


def _not_loaded(state: DriverState) -> Finding:
    said = f": `modprobe nvidia` said {state.modprobe_error}" if state.modprobe_error else ""
    fix = "run `sudo modprobe nvidia` and read its error and `sudo dmesg | grep -i -e nvrm -e nvidia`"
    if not state.modprobe_error:
        fix += "; run gpu_verify.py as root for a diagnosis"
    return "module_not_loaded", f"the nvidia kernel module is not loaded{said}", fix


def _rule_version_mismatch(state: DriverState) -> Finding | None:
    if driver_versions_agree(state.loaded_version, state.userspace_version) is not False:
        return None
    problem = (
        f"the loaded nvidia module is {state.loaded_version} but the installed driver is "
        f"{state.userspace_version} (nvidia-smi: 'Driver/library version mismatch')"
    )
    return "reboot_pending", problem, REBOOT_FIX


def _rule_device_nodes(state: DriverState) -> Finding | None:
    missing = [name for name, present in (("/dev/nvidiactl", state.control_node),) if not present]
    if not state.gpu_nodes:
        missing.append("/dev/nvidia0 (no /dev/nvidiaN)")
    if not missing:
        return None
    problem = f"the nvidia module {state.loaded_version or ''} is loaded but {' and '.join(missing)} missing"
    if state.in_container:
        fix = (
            "start the container with the GPUs: `docker run --gpus all ...` (or `--device nvidia.com/gpu=all` "
            "with CDI), with the NVIDIA Container Toolkit installed on the host"
        )
    else:
        fix = (
            "create them: `sudo nvidia-modprobe -c0 -u`, or start the persistence daemon "
            "(`sudo systemctl start nvidia-persistenced`); if they vanish again, check the udev rules "
            "(`udevadm monitor`, /lib/udev/rules.d/*nvidia*)"
        )
    return "device_node_missing", problem.replace("  ", " "), fix


NOT_LOADED_RULES: tuple[Callable[[DriverState], Finding | None], ...] = (
    _rule_module_missing,
    _rule_nouveau,
    _rule_rejected,
    _rule_no_device,
    _rule_reboot_not_loaded,
)
LOADED_RULES: tuple[Callable[[DriverState], Finding | None], ...] = (
    _rule_version_mismatch,
    _rule_nouveau,
    _rule_device_nodes,
)


def driver_state_details(state: DriverState) -> dict[str, Any]:
    """The gathered facts, for the report (machine-readable)."""
    fact_keys = (
        "version", "branch", "kernel_modules", "module_source", "userspace_only", "reboot_required",
        "mok_enrollment_pending", "mok_certificate", "secure_boot", "signatures_enforced",
    )  # fmt: skip
    return {
        "kernel": state.kernel,
        "pci_gpus": [dataclasses.asdict(gpu) for gpu in state.gpus],
        "pci_nvswitches": [device.address for device in state.devices if device.is_nvswitch],
        "module_loaded": state.module_loaded,
        "loaded_version": state.loaded_version,
        "userspace_version": state.userspace_version,
        "module_present": state.module_present,
        "module_file": state.module_file,
        "signer": state.signer,
        "modprobe_error": state.modprobe_error,
        "loaded_by_verify": state.loaded_by_verify,
        "device_nodes": {"nvidiactl": state.control_node, "gpus": state.gpu_nodes},
        "nouveau_loaded": state.nouveau_loaded,
        "reboot_required_pkgs": state.reboot_required_pkgs,
        "secure_boot": state.secure_boot,
        "in_container": state.in_container,
        "kernel_log": state.kernel_log,
        "fact": {key: state.fact[key] for key in fact_keys if key in state.fact},
        "boot_guard": {key: state.guard[key] for key in GUARD_KEYS if key in state.guard},
    }


def diagnose_driver(state: DriverState) -> CheckResult:
    """Judge the driver: PASS (state ok) or FAIL with the state, what is wrong and its fix."""
    details = driver_state_details(state)
    rules = LOADED_RULES if state.module_loaded else NOT_LOADED_RULES
    finding = next((found for rule in rules if (found := rule(state)) is not None), None)
    if finding is None and not state.module_loaded:
        finding = _not_loaded(state)
    if finding is not None:
        name, problem, fix = finding
        details.update(state=name, problem=problem, fix=fix)
        return CheckResult("system.driver_state", "system", FAIL, f"{name}: {problem}. Fix: {fix}", details=details)
    loaded = " (loaded by this check)" if state.loaded_by_verify else ""
    message = (
        f"nvidia module {state.loaded_version} loaded{loaded} on {state.kernel}, userspace "
        f"{state.userspace_version or 'unknown'}, {len(state.gpus)} GPU(s) on the PCI bus, "
        f"/dev/nvidiactl and {', '.join('/dev/' + node for node in state.gpu_nodes)} present"
    )
    details.update(state="ok", problem=None, fix=None)
    return CheckResult("system.driver_state", "system", PASS, message, details=details)


def detect_report(root: Path = Path("/")) -> dict[str, Any]:
    """What --detect prints: the NVIDIA PCI devices and the evidence auto mode goes by."""
    devices = nvidia_pci_devices(root / "sys")
    evidence = gpu_evidence(root)
    return {
        "nvidia_gpus": [device.address for device in devices if device.is_gpu],
        "nvswitches": [device.address for device in devices if device.is_nvswitch],
        "kernel_driver_installed": kernel_driver_installed(read_driver_fact(root)),
        "evidence": evidence,
        "expect_gpu": bool(evidence),
    }


def check_cpu_requested(evidence: Sequence[str]) -> CheckResult:
    """A warning when --cpu was given on a host that has (or should have) an NVIDIA GPU."""
    return CheckResult(
        "system.cpu_mode",
        "system",
        WARN,
        f"CPU mode was requested (--cpu) although {'; '.join(evidence)}: no GPU was verified",
        required=False,
        details={"evidence": list(evidence)},
    )


def system_checks(ctx: Context, evidence: Sequence[str] = ()) -> None:
    """The driver checks in GPU mode; in CPU mode their skips (and a warning if --cpu hides a GPU)."""
    ids = ("system.nvidia_smi", "system.driver_state", "system.kernel_module", "system.cuda_driver")
    if ctx.cpu_mode:
        if ctx.args.cpu and evidence:
            ctx.add(check_cpu_requested(evidence))
        for check_id in ids:
            ctx.add(skip(check_id, "system", ctx.cpu_skip_reason))
        return
    # nvidia-smi first: as root it loads the module and creates the device nodes (nvidia-modprobe),
    # so the driver state read next is what a user of the GPU meets.
    run_check(ctx, ids[0], "system", lambda: check_nvidia_smi(ctx))
    run_check(ctx, ids[1], "system", lambda: diagnose_driver(gather_driver_state()))
    run_check(ctx, ids[2], "system", lambda: check_kernel_module(ctx))
    run_check(ctx, ids[3], "system", lambda: check_cuda_driver(ctx))
    for gpu in ctx.gpus:
        run_check(ctx, f"system.gpu[{gpu.index}]", "system", lambda gpu=gpu: check_gpu_health(ctx, gpu))


# --------------------------------------------------------------------------------------------
# hardware audit
# --------------------------------------------------------------------------------------------


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model, logical CPUs, physical cores and flags from /proc/cpuinfo."""
    model = None
    flags: set[str] = set()
    logical = 0
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = None
    for line in [*text.splitlines(), ""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            logical += 1
        elif key == "model name" and model is None:
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
        elif not line.strip() and core_id is not None:
            cores.add((physical_id or "0", core_id))
            physical_id = core_id = None
    return {"model": model, "logical_cpus": logical, "physical_cores": len(cores) or None, "flags": flags}


def parse_meminfo_total_gib(text: str) -> float | None:
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024**2 if match else None


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def check_cpu(ctx: Context) -> CheckResult:
    info = parse_cpuinfo(read_text("/proc/cpuinfo"))
    cores = info["physical_cores"] or os.cpu_count() or 0
    flags = info["flags"]
    features = {
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_tile": "amx_tile" in flags,
        "amx_bf16": "amx_bf16" in flags,
    }
    details = {"model": info["model"], "physical_cores": cores, "logical_cpus": os.cpu_count(), **features}
    text = (
        f"{info['model']}: {cores} cores, {os.cpu_count()} threads; AVX-512 {'yes' if features['avx512f'] else 'no'}, "
    )
    text += f"AMX {'yes' if features['amx_tile'] else 'no'}"
    findings = []
    if cores < ctx.args.min_cpu_cores:
        findings.append(f"fewer than {ctx.args.min_cpu_cores} cores (--min-cpu-cores)")
    if platform.machine() in ("x86_64", "AMD64") and not features["avx2"]:
        findings.append("no AVX2: CPU-side data loading and frameworks' CPU kernels will be slow")
    status = WARN if findings else PASS
    return CheckResult(
        "hardware.cpu", "hardware", status, text + (": " + "; ".join(findings) if findings else ""), details=details
    )


def total_gpu_memory_gib(gpus: Sequence[GPUInfo]) -> float:
    return sum((gpu.memory_total_mib or 0) for gpu in gpus) / 1024


def check_ram(ctx: Context) -> CheckResult:
    total = parse_meminfo_total_gib(read_text("/proc/meminfo"))
    if total is None:
        return CheckResult("hardware.ram", "hardware", FAIL, "cannot read MemTotal from /proc/meminfo")
    gpu_total = total_gpu_memory_gib(ctx.gpus)
    wanted = max(ctx.args.min_ram_gib, ctx.args.ram_per_gpu_memory * gpu_total)
    details = {"ram_gib": round(total, 1), "gpu_memory_gib": round(gpu_total, 1), "wanted_gib": round(wanted, 1)}
    text = f"{total:.1f} GiB RAM"
    if total < wanted:
        why = f"--min-ram-gib {ctx.args.min_ram_gib:g}"
        if gpu_total:
            why += f", or {ctx.args.ram_per_gpu_memory:g} x {gpu_total:.0f} GiB GPU memory (--ram-per-gpu-memory)"
        return CheckResult("hardware.ram", "hardware", WARN, f"{text}: below {wanted:.0f} GiB ({why})", details=details)
    return CheckResult("hardware.ram", "hardware", PASS, text, details=details)


def block_device_for(path: str) -> str | None:
    """Name of the whole disk (``nvme0n1``, ``sda``) holding a path, via /sys/dev/block."""
    dev = Path(path).stat().st_dev
    sys_path = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sys_path.exists():
        return None
    resolved = sys_path.resolve()
    # a partition's directory sits inside its disk's directory and has a "partition" file
    if (resolved / "partition").exists():
        resolved = resolved.parent
    return resolved.name


def disk_kind(name: str | None, rotational: str | None) -> str:
    """NVMe, virtual, SSD, HDD or unknown, from the disk's name and its queue/rotational flag."""
    if name is None:
        return "unknown"
    if name.startswith("nvme"):
        return "NVMe"
    if re.match(r"x?vd[a-z]", name):
        return "virtual"  # virtio/Xen disks say rotational=1 whatever backs them: the hypervisor knows
    if rotational is None:
        return "unknown"
    return "HDD" if rotational.strip() == "1" else "SSD"


def check_disk(ctx: Context) -> CheckResult:
    data_dir = ctx.args.data_dir or ("/data" if Path("/data").is_dir() else "/")
    if not Path(data_dir).exists():
        return CheckResult("hardware.disk", "hardware", FAIL, f"--data-dir {data_dir} does not exist")
    usage = shutil.disk_usage(data_dir)
    free_gib = usage.free / 1024**3
    name = block_device_for(data_dir)
    rotational = read_text(f"/sys/block/{name}/queue/rotational") if name else None
    kind = disk_kind(name, rotational or None)
    details = {"data_dir": data_dir, "free_gib": round(free_gib, 1), "total_gib": round(usage.total / 1024**3, 1)}
    details |= {"device": name, "kind": kind}
    total_gib = usage.total / 1024**3
    text = f"{data_dir}: {free_gib:.0f} GiB free of {total_gib:.0f} GiB on {name or 'an unknown device'} ({kind})"
    findings = []
    if free_gib < ctx.args.min_free_gib:
        findings.append(f"less than {ctx.args.min_free_gib:g} GiB free (--min-free-gib)")
    if kind == "HDD":
        findings.append("rotating disk: data loading will starve the GPUs; use NVMe")
    status = WARN if findings else PASS
    return CheckResult(
        "hardware.disk", "hardware", status, text + (": " + "; ".join(findings) if findings else ""), details=details
    )


def check_gpu_memory(ctx: Context) -> CheckResult:
    if ctx.cpu_mode:
        return skip("hardware.gpu_memory", "hardware", ctx.cpu_skip_reason)
    if not ctx.gpus:
        return skip("hardware.gpu_memory", "hardware", "no GPU listed by nvidia-smi")
    small = [gpu for gpu in ctx.gpus if (gpu.memory_total_mib or 0) / 1024 < ctx.args.min_gpu_memory_gib]
    sizes = ", ".join(f"{gpu.index}: {(gpu.memory_total_mib or 0) / 1024:.0f} GiB" for gpu in ctx.gpus)
    if small:
        return CheckResult(
            "hardware.gpu_memory",
            "hardware",
            WARN,
            f"{sizes}: below {ctx.args.min_gpu_memory_gib:g} GiB (--min-gpu-memory-gib)",
        )
    return CheckResult("hardware.gpu_memory", "hardware", PASS, sizes)


def hardware_checks(ctx: Context) -> None:
    run_check(ctx, "hardware.cpu", "hardware", lambda: check_cpu(ctx))
    run_check(ctx, "hardware.ram", "hardware", lambda: check_ram(ctx))
    run_check(ctx, "hardware.disk", "hardware", lambda: check_disk(ctx))
    run_check(ctx, "hardware.gpu_memory", "hardware", lambda: check_gpu_memory(ctx))


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------


def import_framework(name: str) -> tuple[Any | None, str | None]:
    """(module, None) or (None, reason)."""
    try:
        if name == "tensorflow":
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        module = __import__(name)
    except ImportError as exc:
        return None, f"{name} not installed ({exc})" if "No module named" not in str(exc) else f"{name} not installed"
    # `import torch` can raise OSError or ValueError (a broken CUDA library), TensorFlow TypeError
    except Exception as exc:
        return None, f"{name} is installed but failed to import: {type(exc).__name__}: {exc}"
    return module, None


def expected_gpu_count(ctx: Context) -> int:
    """GPUs the frameworks should see: nvidia-smi's count, narrowed by CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return len(ctx.gpus)
    entries = [entry for entry in visible.split(",") if entry.strip()]
    return min(len(entries), len(ctx.gpus))


def torch_devices(ctx: Context, torch: Any) -> list[str]:
    if ctx.cpu_mode:
        return ["cpu"]
    return [f"cuda:{index}" for index in range(torch.cuda.device_count())]


def synthetic_mnist(torch: Any, device: str, count: int, seed: int = 0) -> tuple[Any, Any]:
    """MNIST-shaped (N, 1, 28, 28) images whose class is a fixed random template plus noise: learnable."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randn(10, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    images = templates[labels] + 0.5 * torch.randn(count, 1, 28, 28, generator=generator)
    return images.to(device), labels.to(device)


def lenet5(torch: Any) -> Any:
    """LeNet-5 (LeCun et al. 1998) for 28x28 inputs: conv-pool-conv-pool-fc-fc-fc."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def train_lenet(torch: Any, device: str, steps: int, batch: int) -> list[float]:
    """Train LeNet-5 on synthetic data; the loss of every step."""
    torch.manual_seed(0)
    model = lenet5(torch).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = synthetic_mnist(torch, device, batch * 8)
    losses = []
    for step in range(steps):
        start = (step % 8) * batch
        x, y = images[start : start + batch], labels[start : start + batch]
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach().cpu()))
    return losses


def check_torch_lenet(ctx: Context, torch: Any, device: str) -> CheckResult:
    steps, batch = (ctx.args.train_steps, 64) if not ctx.cpu_mode else (min(ctx.args.train_steps, 60), 32)
    k = max(1, steps // 10)
    losses = train_lenet(torch, device, steps, batch)
    details = {"device": device, "steps": steps, "batch": batch, "first_k_mean": sum(losses[:k]) / k}
    details["last_k_mean"] = sum(losses[-k:]) / k
    text = f"LeNet-5 on {device}: loss {details['first_k_mean']:.3f} -> {details['last_k_mean']:.3f} over {steps} steps"
    status = PASS if loss_is_falling(losses, k) else FAIL
    return CheckResult(
        f"torch.lenet[{device}]",
        "framework",
        status,
        text + ("" if status == PASS else ": not falling"),
        details=details,
    )


def amp_steps(torch: Any, device: str, dtype_name: str, steps: int = 5) -> list[float]:
    """A few LeNet-5 training steps under autocast (fp16 with a gradient scaler); the losses."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    device_type = device.split(":")[0]
    torch.manual_seed(0)
    model = lenet5(torch).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = None
    if dtype_name == "fp16" and device_type == "cuda":
        scaler = torch.amp.GradScaler("cuda") if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler") else None
        scaler = scaler or torch.cuda.amp.GradScaler()
    x, y = synthetic_mnist(torch, device, 64)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device_type, dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        losses.append(float(loss.detach().float().cpu()))
    return losses


def check_torch_amp(ctx: Context, torch: Any, device: str, dtype_name: str) -> CheckResult:
    check_id = f"torch.amp_{dtype_name}[{device}]"
    if device.startswith("cuda") and dtype_name == "bf16":
        major, _ = torch.cuda.get_device_capability(torch.device(device))
        if major < 8:
            return skip(check_id, "framework", "bf16 needs compute capability >= 8.0 (Ampere or newer)")
    try:
        losses = amp_steps(torch, device, dtype_name)
    except RuntimeError as exc:
        if device == "cpu" and ("not supported" in str(exc).lower() or "autocast" in str(exc).lower()):
            return skip(check_id, "framework", f"{dtype_name} autocast not supported on CPU by this torch: {exc}")
        raise
    finite = all(math.isfinite(value) for value in losses)
    text = f"{dtype_name} autocast training on {device}: losses {', '.join(f'{v:.3f}' for v in losses)}"
    return CheckResult(check_id, "framework", PASS if finite else FAIL, text + ("" if finite else ": not finite"))


def check_torch_cudnn(ctx: Context, torch: Any, device: str) -> CheckResult:
    check_id = f"torch.cudnn[{device}]"
    if not torch.backends.cudnn.is_available():
        return CheckResult(check_id, "framework", FAIL, "torch.backends.cudnn.is_available() is False")
    if not torch.backends.cudnn.enabled:
        return CheckResult(check_id, "framework", FAIL, "torch.backends.cudnn.enabled is False")
    torch.manual_seed(0)
    x_cpu = torch.randn(8, 16, 32, 32, requires_grad=True)
    conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    ref = conv(x_cpu)
    ref.sum().backward()
    conv_gpu = torch.nn.Conv2d(16, 32, 3, padding=1).to(device)
    conv_gpu.load_state_dict(conv.state_dict())
    x_gpu = x_cpu.detach().to(device).requires_grad_(True)
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        out = conv_gpu(x_gpu)
        out.sum().backward()
        torch.cuda.synchronize(device)
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    same = torch.allclose(out.detach().cpu(), ref.detach(), atol=1e-3, rtol=1e-3)
    same = same and torch.allclose(x_gpu.grad.cpu(), x_cpu.grad, atol=1e-3, rtol=1e-3)
    version = torch.backends.cudnn.version()
    text = f"cuDNN {version} conv2d forward/backward on {device}" + (
        " matches the CPU" if same else " differs from the CPU"
    )
    return CheckResult(check_id, "framework", PASS if same else FAIL, text, details={"cudnn_version": version})


def check_torch_sees_gpus(ctx: Context, torch: Any) -> CheckResult:
    expected = expected_gpu_count(ctx)
    if not torch.cuda.is_available():
        _init, version = cuda_driver_api()
        driver_cuda = cuda_version_string(version) if version else None
        reason = why_no_cuda(torch.version.cuda, driver_cuda, os.environ.get("CUDA_VISIBLE_DEVICES"))
        return CheckResult(
            "torch.gpus",
            "framework",
            FAIL,
            f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA {torch.version.cuda}): {reason}",
            details={"torch_cuda": torch.version.cuda, "driver_cuda": driver_cuda},
        )
    seen = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(index) for index in range(seen)]
    details = {"expected": expected, "seen": seen, "names": names, "torch_cuda": torch.version.cuda}
    status = PASS if seen == expected > 0 else FAIL
    return CheckResult(
        "torch.gpus",
        "framework",
        status,
        f"torch sees {seen} of {expected} GPU(s): {', '.join(names)}",
        details=details,
    )


def torch_checks(ctx: Context) -> None:
    torch, reason = import_framework("torch")
    required = "torch" in ctx.args.require
    ctx.frameworks["torch"] = getattr(torch, "__version__", None)
    if torch is None:
        status = FAIL if required else SKIP
        ctx.add(CheckResult("torch.import", "framework", status, reason or "torch not installed", required=True))
        return
    cuda = getattr(torch.version, "cuda", None)
    ctx.add(CheckResult("torch.import", "framework", PASS, f"torch {torch.__version__} (CUDA {cuda})"))
    if ctx.cpu_mode:
        ctx.add(skip("torch.gpus", "framework", ctx.cpu_skip_reason))
    else:
        result = run_check(ctx, "torch.gpus", "framework", lambda: check_torch_sees_gpus(ctx, torch))
        if result.status == FAIL and not torch.cuda.is_available():
            return
    for device in torch_devices(ctx, torch):
        run_check(ctx, f"torch.lenet[{device}]", "framework", lambda d=device: check_torch_lenet(ctx, torch, d))
        for dtype_name in ("fp16", "bf16"):
            run_check(
                ctx,
                f"torch.amp_{dtype_name}[{device}]",
                "framework",
                lambda d=device, t=dtype_name: check_torch_amp(ctx, torch, d, t),
            )
        if device == "cpu":
            ctx.add(skip("torch.cudnn[cpu]", "framework", "--cpu: cuDNN is GPU-only (CPU convolutions ran in LeNet-5)"))
        else:
            run_check(ctx, f"torch.cudnn[{device}]", "framework", lambda d=device: check_torch_cudnn(ctx, torch, d))
    performance_checks(ctx, torch)
    if not ctx.cpu_mode:
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# performance (PyTorch on the GPU)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """Seconds per call over repeated timed runs: judged on the median, with the best and the spread."""

    samples: list[float]

    def __post_init__(self) -> None:
        if not self.samples or any(value <= 0 for value in self.samples):
            raise ValueError(f"timing samples must be positive, got {self.samples}")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / fastest: a few percent on a quiet, healthy GPU."""
        return (max(self.samples) - self.best) / self.best


def time_cuda(
    torch: Any, device: str, func: Callable[[], Any], min_seconds: float = 0.5, repeats: int = TIMING_REPEATS
) -> Timing:
    """Seconds per call of ``func`` on a CUDA device: ``repeats`` runs timed with CUDA events after a warm-up."""
    with torch.cuda.device(torch.device(device)):  # events and kernels on the same device's stream
        for _ in range(3):
            func()
        torch.cuda.synchronize()
        return Timing([_time_current_device(torch, func, min_seconds / repeats) for _ in range(repeats)])


def _time_current_device(torch: Any, func: Callable[[], Any], min_seconds: float) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    iterations = 0
    start.record()
    wall = time.perf_counter()
    while True:
        for _ in range(5):
            func()
        iterations += 5
        if time.perf_counter() - wall >= min_seconds or iterations >= 2000:
            break
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000 / iterations


def matmul_supported(torch: Any, device: str, dtype_name: str) -> str | None:
    """None when this dtype can run on the device, else the reason it cannot."""
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if dtype_name in ("tf32", "bf16") and major < 8:
        return f"{dtype_name} needs compute capability >= 8.0, this GPU has {major}.{minor}"
    if dtype_name == "fp8":
        if (major, minor) < (8, 9):
            return f"fp8 needs compute capability >= 8.9, this GPU has {major}.{minor}"
        if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
            return f"torch {torch.__version__} has no float8_e4m3fn/_scaled_mm"
    return None


def matmul_callable(torch: Any, device: str, dtype_name: str, n: int) -> Callable[[], Any]:
    """A closure running one n x n x n matmul in the given precision."""
    if dtype_name == "fp8":
        a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
        one = torch.tensor(1.0, device=device)

        def fp8() -> Any:
            out = torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=True)
            return out[0] if isinstance(out, tuple) else out

        return fp8
    dtype = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return lambda: torch.matmul(a, b)


def measure_matmul(torch: Any, device: str, dtype_name: str, n: int) -> Timing:
    """Seconds per n^3 matmul in ``dtype_name`` on ``device`` (repeated: see Timing)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype_name == "tf32" else "highest")
    try:
        return time_cuda(torch, device, matmul_callable(torch, device, dtype_name, n))
    finally:
        torch.set_float32_matmul_precision(previous)


def visible_gpus(gpus: Sequence[GPUInfo], visible: str | None) -> list[GPUInfo]:
    """nvidia-smi's GPUs in CUDA's order: CUDA_VISIBLE_DEVICES (indices or UUIDs, as CUDA reads it: up to
    the first entry it cannot match) narrows and reorders them, so framework device i is entry i here."""
    if visible is None:
        return list(gpus)
    chosen: list[GPUInfo] = []
    for entry in (part.strip() for part in visible.split(",")):
        match = None
        if entry.isdigit():
            match = next((gpu for gpu in gpus if gpu.index == int(entry)), None)
        elif entry:
            match = next((gpu for gpu in gpus if gpu.uuid and gpu.uuid.startswith(entry)), None)
        if match is None:  # CUDA stops at the first invalid entry
            break
        chosen.append(match)
    return chosen


def cuda_gpu(ctx: Context, index: int) -> GPUInfo | None:
    """The nvidia-smi GPU behind CUDA device ``index`` (CUDA_DEVICE_ORDER=PCI_BUS_ID, CUDA_VISIBLE_DEVICES)."""
    gpus = visible_gpus(ctx.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return gpus[index] if index < len(gpus) else None


def gpu_name(ctx: Context, index: int) -> str:
    """nvidia-smi's name for a CUDA device index."""
    gpu = cuda_gpu(ctx, index)
    return gpu.name if gpu else f"GPU {index}"


def gpu_label(ctx: Context, index: int) -> int:
    """The index nvidia-smi gives CUDA device ``index``: checks and reports name GPUs as nvidia-smi does."""
    gpu = cuda_gpu(ctx, index)
    return gpu.index if gpu else index


def min_fraction_for(ctx: Context, name: str, metric: str) -> tuple[float, str]:
    """The minimum fraction of peak for one GPU model and metric, and where it comes from: --min-fraction,
    else HEALTHY_TOLERANCE times the fraction a healthy card of the model measures, else the default."""
    if metric in ctx.fraction_overrides:
        return ctx.fraction_overrides[metric], "--min-fraction"
    healthy = (peaks_for(name, ctx.peaks) or {}).get(f"healthy_{metric}")
    if healthy:
        return round(healthy * HEALTHY_TOLERANCE, 3), (
            f"{HEALTHY_TOLERANCE:.0%} of the {healthy:.0%} a healthy {name} measures"
        )
    return DEFAULT_MIN_FRACTION[metric], "default: no measured figure for this model"


def record_perf(
    ctx: Context, index: int, metric: str, timing: Timing, work: float, unit: str, peak: float | None
) -> CheckResult:
    """Store a measurement (``work`` per timed call, in ``unit`` seconds) and judge its median against the
    model's threshold."""
    name = gpu_name(ctx, index)
    label = gpu_label(ctx, index)
    achieved, best = work / timing.median, work / timing.best
    minimum, basis = min_fraction_for(ctx, name, metric.removeprefix("matmul_"))
    fraction = fraction_of_peak(achieved, peak)
    ctx.perf.append(
        PerfResult(label, name, metric, round(achieved, 2), unit, peak, fraction, minimum, round(best, 2),
                   round(timing.spread, 4))
    )  # fmt: skip
    status = judge_fraction(fraction, minimum)
    spread = f"median of {len(timing.samples)}, best {best:.1f}, spread {timing.spread:.1%}"
    if fraction is None:
        text = (
            f"{achieved:.1f} {unit} ({spread}); no datasheet peak for {name!r} "
            f"(copy {PEAKS_FILE_NAME} beside the script, or give --peaks)"
        )
    else:
        text = f"{achieved:.1f} {unit} = {fraction:.0%} of {peak:g} (minimum {minimum:.0%}: {basis}; {spread})"
    details = {
        "achieved": achieved,
        "best": best,
        "spread": timing.spread,
        "samples_s": timing.samples,
        "unit": unit,
        "peak": peak,
        "fraction": fraction,
        "min_fraction": minimum,
        "threshold_basis": basis,
    }
    return CheckResult(f"perf.{metric}[{label}]", "performance", status, text, details=details)


def check_matmul(ctx: Context, torch: Any, index: int, dtype_name: str) -> CheckResult:
    device = f"cuda:{index}"
    label = gpu_label(ctx, index)
    reason = matmul_supported(torch, device, dtype_name)
    if reason is not None:
        return skip(f"perf.matmul_{dtype_name}[{label}]", "performance", reason)
    n = ctx.args.matmul_size
    with TelemetrySampler(label, enabled=dtype_name == "bf16") as sampler:
        timing = measure_matmul(torch, device, dtype_name, n)
    if sampler.enabled:
        ctx.telemetry.setdefault(label, {})["matmul_bf16"] = sampler.samples
    peak = (peaks_for(gpu_name(ctx, index), ctx.peaks) or {}).get(dtype_name)
    return record_perf(ctx, index, f"matmul_{dtype_name}", timing, 2.0 * n**3 / 1e12, "TFLOP/s", peak)


def check_memory_bandwidth(ctx: Context, torch: Any, index: int) -> CheckResult:
    device = f"cuda:{index}"
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    nbytes = min(1 << 30, free // 8)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    timing = time_cuda(torch, device, lambda: dst.copy_(src))
    peak = (peaks_for(gpu_name(ctx, index), ctx.peaks) or {}).get("mem_bw_gbs")
    # a copy reads and writes every byte
    return record_perf(ctx, index, "mem_bw", timing, 2 * src.numel() * 4 / 1e9, "GB/s", peak)


def check_h2d(ctx: Context, torch: Any, index: int) -> CheckResult:
    device = f"cuda:{index}"
    label = gpu_label(ctx, index)
    host = torch.empty(64 << 20, dtype=torch.float32).pin_memory()  # 256 MiB pinned
    target = torch.empty(host.shape, dtype=host.dtype, device=device)
    with TelemetrySampler(label) as sampler:  # the link trains down when idle: read it under load
        timing = time_cuda(torch, device, lambda: target.copy_(host, non_blocking=True), min_seconds=1.0)
    ctx.telemetry.setdefault(label, {})["h2d"] = sampler.samples
    gpu = cuda_gpu(ctx, index)
    # the card's own maximum: a Gen5 card in a Gen4 slot must not pass as a healthy Gen4 link
    peak = pcie_peak_gbs(card_pcie_gen_max(gpu), gpu.pcie_width_max) if gpu else None
    return record_perf(ctx, index, "h2d", timing, host.numel() * 4 / 1e9, "GB/s", peak)


def performance_checks(ctx: Context, torch: Any) -> None:
    if ctx.cpu_mode:
        ctx.add(skip("perf.gpu", "performance", ctx.cpu_skip_reason))
        return
    if ctx.args.skip_perf:
        ctx.add(skip("perf.gpu", "performance", "--skip-perf given"))
        return
    for index in range(torch.cuda.device_count()):
        label = gpu_label(ctx, index)
        for dtype_name in MATMUL_DTYPES:
            run_check(
                ctx,
                f"perf.matmul_{dtype_name}[{label}]",
                "performance",
                lambda i=index, t=dtype_name: check_matmul(ctx, torch, i, t),
            )
        run_check(ctx, f"perf.mem_bw[{label}]", "performance", lambda i=index: check_memory_bandwidth(ctx, torch, i))
        run_check(ctx, f"perf.h2d[{label}]", "performance", lambda i=index: check_h2d(ctx, torch, i))
        torch.cuda.empty_cache()
        gpu = cuda_gpu(ctx, index)
        telemetry = ctx.telemetry.get(label, {})
        run_check(ctx, f"health.clocks[{label}]", "health", lambda g=gpu, t=telemetry, n=label: check_clocks(n, g, t))
        run_check(ctx, f"health.pcie[{label}]", "health", lambda g=gpu, t=telemetry, n=label: check_pcie_link(n, g, t))
    for result in outlier_checks(ctx.perf):
        ctx.add(result)
    run_check(ctx, "perf.p2p", "performance", lambda: check_p2p(ctx, torch))
    run_check(ctx, "perf.nccl_allreduce", "performance", lambda: check_nccl(ctx, torch))


def outlier_checks(perf: Sequence[PerfResult]) -> list[CheckResult]:
    """Per metric with two or more GPUs: each GPU against the median of the node's other GPUs (so on a
    two-GPU node, against the other card); below OUTLIER_FRACTION of it fails."""
    results = []
    metrics = sorted({item.metric for item in perf if item.gpu_index >= 0})
    for metric in metrics:
        values = {item.gpu_index: item.achieved for item in perf if item.metric == metric and item.gpu_index >= 0}
        if len(values) < 2:
            continue
        others = {index: statistics.median(v for i, v in values.items() if i != index) for index in values}
        slow = {index: value for index, value in values.items() if value < OUTLIER_FRACTION * others[index]}
        details = {"values": values, "others_median": others, "min_fraction_of_others": OUTLIER_FRACTION}
        if slow:
            names = "; ".join(
                f"GPU {index} {value:g} ({value / others[index]:.0%} of the other GPUs' median {others[index]:g})"
                for index, value in slow.items()
            )
            text = (
                f"{names}: below {OUTLIER_FRACTION:.0%}; look at that GPU's clocks, throttle reasons, power limit "
                "and PCIe link (health.clocks, health.pcie)"
            )
            results.append(CheckResult(f"perf.outliers.{metric}", "performance", FAIL, text, details=details))
        else:
            text = f"{len(values)} GPUs, each within {OUTLIER_FRACTION:.0%} of the other GPUs' median"
            results.append(CheckResult(f"perf.outliers.{metric}", "performance", PASS, text, details=details))
    return results


# A pair of GPUs whose peer copy runs below this share of the node's median pair is reported: a link that
# trained down, a pair behind a slower switch, or P2P disabled between them.
P2P_OUTLIER_FRACTION = 0.5


def p2p_findings(matrix: dict[str, float], peer: dict[str, bool]) -> tuple[list[str], list[str]]:
    """(failures, warnings) from the GB/s of each ordered pair "i->j" and whether CUDA offers peer access."""
    failures, warnings = [], []
    no_peer = sorted(pair for pair, ok in peer.items() if not ok)
    if no_peer:
        warnings.append(
            f"no peer access between {', '.join(no_peer)}: copies go through host memory (PCIe ACS, the IOMMU, "
            "or GPUs under different CPU sockets); `nvidia-smi topo -p2p r` shows it"
        )
    if len(matrix) >= 2:
        median = statistics.median(matrix.values())
        slow = {pair: value for pair, value in matrix.items() if value < P2P_OUTLIER_FRACTION * median}
        if slow:
            pairs = ", ".join(f"{pair} {value:.1f} GB/s" for pair, value in sorted(slow.items()))
            failures.append(
                f"{pairs}: below {P2P_OUTLIER_FRACTION:.0%} of the median pair ({median:.1f} GB/s); "
                "check those GPUs' links (health.nvlink, health.pcie)"
            )
    return failures, warnings


def check_p2p(ctx: Context, torch: Any) -> CheckResult:
    """A GPU-to-GPU copy bandwidth matrix (256 MiB per copy) on multi-GPU hosts."""
    count = torch.cuda.device_count()
    if count < 2:
        return skip("perf.p2p", "performance", f"a P2P matrix needs >= 2 GPUs, found {count}", required=False)
    matrix: dict[str, float] = {}
    peer: dict[str, bool] = {}
    nbytes = 256 << 20
    for src in range(count):
        data = torch.empty(nbytes // 4, dtype=torch.float32, device=f"cuda:{src}")
        for dst in range(count):
            if src == dst:
                continue
            pair = f"{gpu_label(ctx, src)}->{gpu_label(ctx, dst)}"
            peer[pair] = bool(torch.cuda.can_device_access_peer(src, dst))
            target = torch.empty_like(data, device=f"cuda:{dst}")
            timing = time_cuda(torch, f"cuda:{src}", lambda t=target, d=data: t.copy_(d), min_seconds=0.25, repeats=3)
            matrix[pair] = round(nbytes / timing.median / 1e9, 2)
            del target
        del data
        torch.cuda.empty_cache()
    failures, warnings = p2p_findings(matrix, peer)
    text = f"{len(matrix)} GPU pairs: {min(matrix.values()):.1f}..{max(matrix.values()):.1f} GB/s"
    details = {"gbs": matrix, "peer_access": peer}
    return judged("perf.p2p", "performance", text, failures, warnings, details)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# All-reduce sizes of the sweep (bytes): latency-bound, middle, bandwidth-bound; judged at the largest.
NCCL_SIZES = (1 << 20, 16 << 20, 256 << 20, 1 << 30)


def nccl_worker(
    rank: int, world_size: int, port: int, sizes: Sequence[int], out_path: str, timeout_s: float = 120.0
) -> None:
    """One rank of the all-reduce sweep (module level: torch.multiprocessing.spawn pickles it)."""
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        seconds: dict[str, float] = {}
        correct = True
        for nbytes in sizes:
            tensor = torch.full((nbytes // 4,), float(rank + 1), device=f"cuda:{rank}")
            dist.all_reduce(tensor)
            correct = correct and bool(torch.all(tensor == world_size * (world_size + 1) / 2).item())
            for _ in range(5):
                dist.all_reduce(tensor)
            torch.cuda.synchronize()
            dist.barrier()
            iterations = 20
            start = time.perf_counter()
            for _ in range(iterations):
                dist.all_reduce(tensor)
            torch.cuda.synchronize()
            seconds[str(nbytes)] = (time.perf_counter() - start) / iterations
            del tensor
        if rank == 0:
            Path(out_path).write_text(json.dumps({"seconds": seconds, "correct": correct}), encoding="utf-8")
    finally:
        dist.destroy_process_group()


def shm_bytes(path: str = "/dev/shm") -> int | None:  # noqa: S108 - only its size is read, nothing is written
    """Size of the shared-memory file system NCCL's intra-node transport uses (None: not there)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_blocks * stat.f_frsize


# Below this, NCCL's shared-memory transport fails ("unhandled system error"): Docker's default is 64 MB.
NCCL_SHM_MIN_BYTES = 1 << 30


def nccl_advice(text: str, shm: int | None) -> str:
    """What to try when the all-reduce failed or hung, from its message and the host."""
    advice = []
    if shm is not None and shm < NCCL_SHM_MIN_BYTES:
        advice.append(
            f"/dev/shm is {shm >> 20} MiB, too small for NCCL: run the container with --ipc=host or "  # noqa: S108 - a message
            "--shm-size=8g"
        )
    if "timed out" in text or "did not finish" in text:
        advice.append(
            "peer-to-peer traffic may be blocked (PCIe ACS or the IOMMU): see `nvidia-smi topo -m`, try "
            "NCCL_P2P_DISABLE=1 to confirm, and disable ACS on the PCIe switches"
        )
    if "unhandled system error" in text and not advice:
        advice.append("rerun with NCCL_DEBUG=INFO for the cause (often shared memory, sockets or a missing device)")
    return "; ".join(advice)


def run_nccl_ranks(torch: Any, count: int, sizes: Sequence[int], out_path: str, timeout: float) -> str | None:
    """Run one rank per GPU under a watchdog; None when they finished, else what went wrong and what to try."""
    shm = shm_bytes()
    try:
        context = torch.multiprocessing.start_processes(
            nccl_worker, args=(count, _free_port(), tuple(sizes), out_path, timeout), nprocs=count, join=False,
            start_method="spawn",
        )  # fmt: skip
        deadline = time.monotonic() + timeout + 30  # the ranks' own timeout first; then the watchdog
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                text = f"the all-reduce did not finish in {timeout + 30:g} s; its processes were killed"
                advice = nccl_advice(text, shm)
                return f"{text}{': ' + advice if advice else ''}"
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        text = f"the all-reduce failed: {type(exc).__name__}: {lines[-1] if lines else ''}"
        advice = nccl_advice(str(exc), shm)
        return f"{text}{' (' + advice + ')' if advice else ''}"
    return None


# Minimum all-reduce bus bandwidth as a share of one GPU's NVLink (or PCIe) bandwidth per direction, by
# topology. Published measurements (tests/fixtures/gpu_verify_sources/nccl_busbw.md): 8x H100 on NVSwitch
# 370 GB/s (ring) to 480 GB/s (NVLink SHARP) of 478 GB/s of links; 8x A100 230 of 300 GB/s; two H100
# PCIe on an NVLink bridge 116 of 319 GB/s (a third). A node that fell back from NVLink to PCIe (about
# 20-25 GB/s) or lost links fails; PCIe pairs through the host, normal on workstations, pass at a quarter.
NCCL_MIN_LINK_SHARE: dict[str, float] = {"nvswitch": 0.5, "nvlink": 0.25, "pcie": 0.25}


def nccl_topology(ctx: Context, switches: int) -> tuple[str, float | None]:
    """(topology, one GPU's link bandwidth per direction in GB/s, the lowest over the GPUs)."""
    nvlink = [sum(speed for speed in (ctx.nvlink.get(gpu.index) or {}).values() if speed) for gpu in ctx.gpus]
    if ctx.gpus and all(nvlink):
        return ("nvswitch" if switches else "nvlink"), min(nvlink)
    pcie = [pcie_peak_gbs(gpu.pcie_gen_max, gpu.pcie_width_max) for gpu in ctx.gpus]
    known = [value for value in pcie if value]
    return "pcie", (min(known) if known and len(known) == len(pcie) else None)


def nccl_minimum(ctx: Context, topology: str, link_gbs: float | None) -> tuple[float, str]:
    """The bus-bandwidth minimum and where it comes from (--min-nccl-busbw-gbs wins)."""
    if ctx.args.min_nccl_busbw_gbs > 0:
        return ctx.args.min_nccl_busbw_gbs, "--min-nccl-busbw-gbs"
    if link_gbs is None:
        return 0.0, f"{topology}: link bandwidth unknown, no minimum"
    share = NCCL_MIN_LINK_SHARE[topology]
    return round(share * link_gbs, 1), f"{share:.0%} of {link_gbs:.1f} GB/s per GPU over {topology}"


def check_nccl(ctx: Context, torch: Any) -> CheckResult:
    count = torch.cuda.device_count()
    if count < 2:
        return skip("perf.nccl_allreduce", "performance", f"NCCL all-reduce needs >= 2 GPUs, found {count}")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_nccl_available():
        return CheckResult("perf.nccl_allreduce", "performance", FAIL, "torch.distributed with NCCL is not available")
    timeout = float(ctx.args.nccl_timeout_s)
    with tempfile.TemporaryDirectory() as tmp:
        out_path = str(Path(tmp) / "nccl.json")
        problem = run_nccl_ranks(torch, count, NCCL_SIZES, out_path, timeout)
        if problem:
            return CheckResult("perf.nccl_allreduce", "performance", FAIL, problem, details={"world_size": count})
        result = json.loads(Path(out_path).read_text(encoding="utf-8"))
    return judge_nccl(ctx, count, result, nvswitch_count())


def judge_nccl(ctx: Context, count: int, result: dict[str, Any], switches: int) -> CheckResult:
    """Bus bandwidth per size of the sweep; the largest is held to the topology's minimum."""
    sweep = {int(size): allreduce_busbw_gbs(int(size), seconds, count) for size, seconds in result["seconds"].items()}
    largest = max(sweep)
    busbw = sweep[largest]
    topology, link_gbs = nccl_topology(ctx, switches)
    minimum, basis = nccl_minimum(ctx, topology, link_gbs)
    ctx.perf.append(
        PerfResult(-1, f"{count} GPUs", "nccl_allreduce_busbw", round(busbw, 2), "GB/s", link_gbs, None, None)
    )
    details = {
        "bus_bandwidth_gbs": busbw,
        "sweep_gbs": {str(size): round(value, 2) for size, value in sorted(sweep.items())},
        "world_size": count,
        "topology": topology,
        "link_gbs": link_gbs,
        "minimum_gbs": minimum,
        "threshold_basis": basis,
        "correct": result["correct"],
    }
    if not result["correct"]:
        return CheckResult(
            "perf.nccl_allreduce", "performance", FAIL, "all-reduce returned a wrong sum", details=details
        )
    status = PASS if busbw >= minimum else FAIL
    steps = ", ".join(f"{size >> 20} MiB {value:.1f}" for size, value in sorted(sweep.items()))
    text = f"all-reduce over {count} GPUs ({topology}), bus bandwidth GB/s: {steps} (minimum {minimum:g}: {basis})"
    if status == FAIL:
        text += ": run `nvidia-smi topo -m` and NCCL_DEBUG=INFO to see which transport NCCL chose (a fallback from "
        text += "NVLink to PCIe, or P2P disabled, shows there)"
    return CheckResult("perf.nccl_allreduce", "performance", status, text, details=details)


# --------------------------------------------------------------------------------------------
# TensorFlow
# --------------------------------------------------------------------------------------------


def keras_cnn(tf: Any) -> Any:
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss=loss)
    return model


def keras_data(tf: Any, count: int) -> tuple[Any, Any]:
    """Template-plus-noise images (as in the PyTorch check): a CNN can learn them."""
    tf.random.set_seed(0)
    templates = tf.random.normal((10, 28, 28, 1), seed=1)
    labels = tf.random.uniform((count,), maxval=10, dtype=tf.int32, seed=2)
    images = tf.gather(templates, labels) + 0.5 * tf.random.normal((count, 28, 28, 1), seed=3)
    return images, labels


def check_tf_fit(ctx: Context, tf: Any, device: str) -> CheckResult:
    count, epochs = (512, 5) if ctx.cpu_mode else (2048, 5)
    with tf.device(device):
        images, labels = keras_data(tf, count)
        model = keras_cnn(tf)
        history = model.fit(images, labels, batch_size=64, epochs=epochs, verbose=0)
    losses = [float(value) for value in history.history["loss"]]
    falling = loss_is_falling(losses, 1)
    text = f"Keras CNN on {device}: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {epochs} epochs"
    return CheckResult(
        f"tensorflow.fit[{device}]", "framework", PASS if falling else FAIL, text, details={"losses": losses}
    )


def tf_gpus(ctx: Context, tf: Any) -> CheckResult:
    gpus = tf.config.list_physical_devices("GPU")
    expected = expected_gpu_count(ctx)
    details = {"expected": expected, "seen": len(gpus), "built_with_cuda": tf.test.is_built_with_cuda()}
    status = PASS if len(gpus) == expected > 0 else FAIL
    text = f"TensorFlow {tf.__version__} sees {len(gpus)} of {expected} GPU(s)"
    if expected == 0:
        text += " (nvidia-smi found none)"
    if not details["built_with_cuda"]:
        text += " (this TensorFlow is built without CUDA)"
    return CheckResult("tensorflow.gpus", "framework", status, text, details=details)


def tensorflow_checks(ctx: Context) -> None:
    tf, reason = import_framework("tensorflow")
    required = "tensorflow" in ctx.args.require
    ctx.frameworks["tensorflow"] = getattr(tf, "__version__", None)
    if tf is None:
        ctx.add(
            CheckResult(
                "tensorflow.import", "framework", FAIL if required else SKIP, reason or "tensorflow not installed"
            )
        )
        return
    ctx.add(CheckResult("tensorflow.import", "framework", PASS, f"tensorflow {tf.__version__}"))
    physical = tf.config.list_physical_devices("GPU")
    if ctx.cpu_mode:
        with contextlib.suppress(RuntimeError):
            tf.config.set_visible_devices([], "GPU")
        ctx.add(skip("tensorflow.gpus", "framework", ctx.cpu_skip_reason))
        devices = ["/CPU:0"]
    else:
        for gpu in physical:
            with contextlib.suppress(RuntimeError):  # must precede GPU initialisation
                tf.config.experimental.set_memory_growth(gpu, True)
        result = run_check(ctx, "tensorflow.gpus", "framework", lambda: tf_gpus(ctx, tf))
        devices = [f"/GPU:{index}" for index in range(len(physical))]
        if result.status == FAIL and not devices:
            return
    for device in devices:
        run_check(ctx, f"tensorflow.fit[{device}]", "framework", lambda d=device: check_tf_fit(ctx, tf, d))


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def host_info() -> dict[str, Any]:
    os_release = read_text("/etc/os-release")
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', os_release, re.MULTILINE)
    return {
        "hostname": socket.gethostname(),
        "os": match.group(1) if match else platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
    }


def default_env_name() -> str:
    """ "system" for the base interpreter, else the virtual environment's directory name."""
    if sys.prefix == sys.base_prefix:
        return "system"
    return Path(sys.prefix).name


def build_report(ctx: Context, started: float) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {
            "name": "gpu_verify",
            "version": TOOL_VERSION,
            "peaks_file": ctx.peaks_file,
            "peak_models": len(ctx.peaks),
        },
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 3),
        "mode": "cpu" if ctx.cpu_mode else "gpu",
        "mode_reason": ctx.mode_reason or ("--cpu given" if ctx.cpu_mode else "GPU mode"),
        "host": host_info(),
        "environment": {
            "name": ctx.args.env_name or default_env_name(),
            "python": sys.executable,
            "python_version": platform.python_version(),
            "jupyter_kernel": ctx.args.jupyter_kernel,
            "frameworks": ctx.frameworks,
            "required_frameworks": sorted(ctx.args.require),
        },
        "gpus": [dataclasses.asdict(gpu) for gpu in ctx.gpus],
        "checks": [dataclasses.asdict(result) for result in ctx.results],
        "performance": [dataclasses.asdict(perf) for perf in ctx.perf],
        "summary": overall(ctx.results, ctx.incomplete),
    }


_COLOURS = {PASS: "32", FAIL: "31", WARN: "33", SKIP: "90"}


def render_table(report: dict[str, Any], colour: bool) -> str:
    """A fixed-width table of the checks, then a one-line verdict."""
    rows = [(check["status"].upper(), check["id"], check["message"]) for check in report["checks"]]
    width = max([len(row[1]) for row in rows] + [5])
    lines = [f"{'STATUS':<6}  {'CHECK':<{width}}  MESSAGE"]
    for status, check_id, message in rows:
        label = f"{status:<6}"
        if colour:
            label = f"\033[{_COLOURS[status.lower()]}m{label}\033[0m"
        lines.append(f"{label}  {check_id:<{width}}  {message}")
    summary = report["summary"]
    counts = ", ".join(f"{summary[status]} {status}" for status in STATUSES)
    lines.append(
        f"\n{report['host']['hostname']} [{report['environment']['name']}]: {summary['status'].upper()} ({counts})"
    )
    return "\n".join(lines)


def junit_xml(report: dict[str, Any]) -> str:
    """The checks as a JUnit test suite (CI systems show it): fail -> failure, skip -> skipped, warn -> a
    passing test case whose system-out says WARN."""
    checks = report["checks"]
    suite = ET.Element(
        "testsuite",
        name=f"gpu_verify {report['host']['hostname']} [{report['environment']['name']}]",
        tests=str(len(checks)),
        failures=str(sum(1 for check in checks if check["status"] == FAIL)),
        skipped=str(sum(1 for check in checks if check["status"] == SKIP)),
        time=str(report["duration_s"]),
        timestamp=report["generated_at"],
    )
    for check in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"gpu_verify.{check['category']}",
            name=check["id"],
            time=str(check["duration_s"]),
        )
        if check["status"] == FAIL:
            ET.SubElement(case, "failure", message=check["message"][:500]).text = check["message"]
        elif check["status"] == SKIP:
            ET.SubElement(case, "skipped", message=check["message"][:500])
        elif check["status"] == WARN:
            ET.SubElement(case, "system-out").text = f"WARN: {check['message']}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _prom_label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(report: dict[str, Any]) -> str:
    """node_exporter textfile-collector metrics: one gauge per check and status (1 for the status it
    ended with), the measured throughputs and the run's outcome, labelled by environment."""
    env = _prom_label(report["environment"]["name"])
    lines = [
        "# HELP dlstack_gpu_verify_check_status 1 for the status a gpu_verify check ended with.",
        "# TYPE dlstack_gpu_verify_check_status gauge",
    ]
    for check in report["checks"]:
        labels = f'env="{env}",check="{_prom_label(check["id"])}",category="{_prom_label(check["category"])}"'
        for status in STATUSES:
            lines.append(
                f'dlstack_gpu_verify_check_status{{{labels},status="{status}"}} {int(check["status"] == status)}'
            )
    lines += [
        "# HELP dlstack_gpu_verify_performance Measured throughput (median of the timed runs).",
        "# TYPE dlstack_gpu_verify_performance gauge",
    ]
    for perf in report["performance"]:
        labels = (
            f'env="{env}",gpu="{perf["gpu_index"]}",name="{_prom_label(perf["gpu_name"])}",'
            f'metric="{perf["metric"]}",unit="{_prom_label(perf["unit"])}"'
        )
        lines.append(f"dlstack_gpu_verify_performance{{{labels}}} {perf['achieved']}")
    summary = report["summary"]
    lines += [
        "# HELP dlstack_gpu_verify_exit_code 0 passed, 1 a required check failed, 3 the run could not finish.",
        "# TYPE dlstack_gpu_verify_exit_code gauge",
        f'dlstack_gpu_verify_exit_code{{env="{env}"}} {summary["exit_code"]}',
        "# HELP dlstack_gpu_verify_last_run_timestamp_seconds When the report was written.",
        "# TYPE dlstack_gpu_verify_last_run_timestamp_seconds gauge",
        f'dlstack_gpu_verify_last_run_timestamp_seconds{{env="{env}"}} {int(time.time())}',
    ]
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write beside the target, then rename: node_exporter never reads half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=target.parent, prefix=f".{target.name}.", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    Path(handle.name).chmod(0o644)
    Path(handle.name).replace(target)


def write_outputs(args: argparse.Namespace, report: dict[str, Any]) -> str | None:
    """The JSON report, JUnit XML and Prometheus textfile asked for; None, or the first write error."""
    outputs: list[tuple[str | None, Callable[[], str]]] = [
        (args.json_out, lambda: json.dumps(report, indent=2) + "\n"),
        (args.junit, lambda: junit_xml(report)),
        (args.prometheus, lambda: prometheus_text(report)),
    ]
    for path, render in outputs:
        if not path:
            continue
        try:
            write_atomically(path, render())
        except OSError as exc:
            return f"cannot write {path}: {exc}"
    return None


def default_peaks_file() -> str | None:
    """The peaks file shipped beside the script (the role and the images put it there), if any."""
    path = Path(__file__).resolve().with_name(PEAKS_FILE_NAME)
    return str(path) if path.is_file() else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu", action="store_true", help="run the framework checks on the CPU; skip GPU checks (asked for by name)"
    )
    parser.add_argument(
        "--expect-gpu",
        action="store_true",
        help="this host must have a working NVIDIA GPU: GPU mode even when none is on the PCI bus "
        "(default: GPU mode when one is on the bus or an NVIDIA kernel driver is installed, else CPU mode)",
    )
    parser.add_argument(
        "--detect", action="store_true", help="print the NVIDIA PCI devices and the mode auto would choose (JSON)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report to stdout (instead of the table)")
    parser.add_argument("--json-out", metavar="FILE", help="write the JSON report to FILE")
    parser.add_argument(
        "--peaks",
        metavar="FILE",
        help='peaks JSON: {"<gpu name>": {"bf16": TFLOPs, ..., "healthy_bf16": fraction}} '
        f"(default: {PEAKS_FILE_NAME} beside the script)",
    )
    parser.add_argument("--junit", metavar="FILE", help="also write the checks as JUnit XML to FILE")
    parser.add_argument(
        "--prometheus", metavar="FILE", help="also write node_exporter textfile-collector metrics to FILE (*.prom)"
    )
    parser.add_argument(
        "--dcgm-level",
        type=int,
        default=1,
        choices=(0, 1, 2, 3, 4),
        help="run `dcgmi diag -r LEVEL` when dcgmi is installed (0: never; 3 for acceptance; default 1)",
    )
    parser.add_argument("--dcgm-timeout-s", type=float, default=0, help="seconds for dcgmi diag (default by level)")
    parser.add_argument("--data-dir", help="directory whose disk is audited (default /data, else /)")
    parser.add_argument("--env-name", help="name of this Python environment in the report (default: sys.prefix name)")
    parser.add_argument(
        "--jupyter-kernel", default="", help="the Jupyter kernel of this environment, listed in the report (IDEs)"
    )
    parser.add_argument(
        "--require", action="append", default=[], choices=FRAMEWORKS, help="fail if missing (repeatable)"
    )
    parser.add_argument("--strict-hardware", action="store_true", help="hardware audit warnings become failures")
    parser.add_argument("--min-cpu-cores", type=int, default=8, help="physical cores (default 8)")
    parser.add_argument("--min-ram-gib", type=float, default=32, help="RAM in GiB (default 32)")
    parser.add_argument(
        "--ram-per-gpu-memory", type=float, default=1.0, help="RAM at least this times total GPU memory (default 1.0)"
    )
    parser.add_argument("--min-free-gib", type=float, default=100, help="free space under --data-dir (default 100)")
    parser.add_argument("--min-gpu-memory-gib", type=float, default=16, help="memory per GPU in GiB (default 16)")
    parser.add_argument("--max-temp-c", type=float, default=85, help="GPU temperature warning threshold (default 85)")
    parser.add_argument(
        "--min-fraction",
        action="append",
        default=[],
        metavar="KEY=F",
        help="minimum fraction of peak, KEY in " + ", ".join(DEFAULT_MIN_FRACTION) + " (repeatable)",
    )
    parser.add_argument("--min-nccl-busbw-gbs", type=float, default=0.0, help="minimum all-reduce bus bandwidth")
    parser.add_argument(
        "--nccl-timeout-s",
        type=float,
        default=120.0,
        help="NCCL's own timeout per rank; a watchdog kills the ranks 30 s after it (default 120)",
    )
    parser.add_argument("--matmul-size", type=int, default=8192, help="n of the n x n matmul (default 8192)")
    parser.add_argument("--train-steps", type=int, default=200, help="LeNet-5 steps per GPU (CPU: at most 60)")
    parser.add_argument("--skip-perf", action="store_true", help="skip the performance checks")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="frameworks to check (default: all)")
    return parser.parse_args(argv)


def _system_phase(ctx: Context) -> None:
    """How the GPU shows itself decides the mode (GPU or CPU checks), then the system checks run."""
    evidence = gpu_evidence()
    ctx.cpu, ctx.mode_reason = choose_mode(ctx.args.cpu, ctx.args.expect_gpu, evidence)
    system_checks(ctx, evidence)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.detect:
        print(json.dumps(detect_report(), indent=2))
        return 0
    for stale in (args.json_out, args.junit, args.prometheus):
        # a report left from an earlier run must never pass for this one's
        with contextlib.suppress(OSError, TypeError):  # absent, or not removable: writing fails later and says so
            Path(stale).unlink()
    try:
        peaks_file = args.peaks or default_peaks_file()
        ctx = Context(args=args, peaks=load_peaks(peaks_file), peaks_file=peaks_file)
        ctx.fraction_overrides = parse_min_fractions(args.min_fraction)
    except (OSError, ValueError) as exc:
        print(f"gpu_verify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    wanted = {name.strip() for name in args.frameworks.split(",") if name.strip()}
    # CUDA's default order is "fastest first"; PCI order makes framework indices match nvidia-smi's.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    run_phase(ctx, "system", _system_phase)
    run_phase(ctx, "health", health_checks)
    run_phase(ctx, "nvlink", nvlink_checks)
    run_phase(ctx, "fabric", fabric_checks)
    run_phase(ctx, "dcgm", dcgm_checks)
    run_phase(ctx, "hardware", hardware_checks)
    if "torch" in wanted:
        run_phase(ctx, "torch", torch_checks)
    if "tensorflow" in wanted:
        run_phase(ctx, "tensorflow", tensorflow_checks)
    report = build_report(ctx, started)
    problem = write_outputs(args, report)
    if problem:
        print(f"gpu_verify: error: {problem}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report, colour=sys.stdout.isatty()))
    return int(report["summary"]["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
