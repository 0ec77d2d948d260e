#!/usr/bin/env python3
"""Prove that a deep-learning host works: GPUs, driver, frameworks, throughput.

Self-contained (standard library plus the frameworks it finds: torch, tensorflow, optional
pynvml) so it can be copied to hosts and into container images. Every check passes, fails,
warns or is skipped with a reason; results go to a terminal table and to JSON (schema in
docs/gpu_verify.md). Exit code: 0 when every required check passed, 1 when one failed,
2 on a usage error.
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
import subprocess
import sys
import tempfile
import time
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
)


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


@dataclasses.dataclass
class Context:
    """Everything a check needs: options, the GPUs found, results gathered so far."""

    args: argparse.Namespace
    gpus: list[GPUInfo] = dataclasses.field(default_factory=list)
    peaks: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    results: list[CheckResult] = dataclasses.field(default_factory=list)
    perf: list[PerfResult] = dataclasses.field(default_factory=list)
    frameworks: dict[str, str | None] = dataclasses.field(default_factory=dict)
    min_fraction: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MIN_FRACTION))

    @property
    def cpu_mode(self) -> bool:
        return bool(self.args.cpu)

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


def clean(value: str | None) -> str | None:
    """Strip a value; None for nvidia-smi's ways of saying "not available"."""
    if value is None:
        return None
    value = value.strip()
    return None if value.lower() in _NA else value


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
    """``--min-fraction bf16=0.6`` values merged over the defaults."""
    result = dict(DEFAULT_MIN_FRACTION)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in result:
            raise ValueError(f"--min-fraction {item!r}: expected KEY=FRACTION with KEY one of {', '.join(result)}")
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


def overall(results: Sequence[CheckResult]) -> dict[str, Any]:
    """Counts per status, overall status and exit code: 1 when a required check failed."""
    counts = {status: sum(1 for result in results if result.status == status) for status in STATUSES}
    failed = [result.id for result in results if result.status == FAIL and result.required]
    return {**counts, "failed": failed, "status": FAIL if failed else PASS, "exit_code": 1 if failed else 0}


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


def skip(check_id: str, category: str, reason: str, required: bool = True) -> CheckResult:
    return CheckResult(check_id, category, SKIP, reason, required=required)


# --------------------------------------------------------------------------------------------
# system checks
# --------------------------------------------------------------------------------------------


def query_gpus() -> tuple[list[GPUInfo], str | None]:
    """GPUs from ``nvidia-smi --query-gpu``; (gpus, error message or None)."""
    fields = list(QUERY_FIELDS)
    code, out, err = run_command(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    if code != 0 and "compute_cap" in (out + err):
        # drivers before 510 do not know the compute_cap field
        fields.remove("compute_cap")
        code, out, err = run_command(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
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


def userspace_driver_version(ctx: Context) -> str | None:
    """The userspace driver version: nvidia-smi's answer, else the libnvidia-ml file name."""
    if ctx.gpus and ctx.gpus[0].driver_version:
        return ctx.gpus[0].driver_version
    patterns = ["/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.*.*", "/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.*.*"]
    patterns += ["/usr/lib64/libnvidia-ml.so.*.*", "/usr/lib/libnvidia-ml.so.*.*"]
    for pattern in patterns:
        directory, _, name_glob = pattern.rpartition("/")
        for path in sorted(Path(directory).glob(name_glob)):
            match = re.search(r"libnvidia-ml\.so\.(\d+\.\d+(?:\.\d+)?)$", path.name)
            if match:
                return match.group(1)
    return None


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
            f"cuInit failed with CUresult {init} (CUDA driver API {details['cuda_driver_version']})",
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


def system_checks(ctx: Context) -> None:
    ids = ("system.nvidia_smi", "system.kernel_module", "system.cuda_driver")
    if ctx.cpu_mode:
        for check_id in ids:
            ctx.add(skip(check_id, "system", "--cpu: GPU checks skipped"))
        return
    run_check(ctx, ids[0], "system", lambda: check_nvidia_smi(ctx))
    run_check(ctx, ids[1], "system", lambda: check_kernel_module(ctx))
    run_check(ctx, ids[2], "system", lambda: check_cuda_driver(ctx))
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
    """NVMe, SSD, HDD or unknown, from the disk's name and its queue/rotational flag."""
    if name is None:
        return "unknown"
    if name.startswith("nvme"):
        return "NVMe"
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
        return skip("hardware.gpu_memory", "hardware", "--cpu: GPU checks skipped")
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
        return CheckResult(
            "torch.gpus",
            "framework",
            FAIL,
            f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA {torch.version.cuda})",
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
        ctx.add(skip("torch.gpus", "framework", "--cpu: GPU checks skipped"))
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


def time_cuda(torch: Any, device: str, func: Callable[[], Any], min_seconds: float = 0.5) -> float:
    """Seconds per call of ``func`` on a CUDA device, timed with CUDA events after a warm-up."""
    with torch.cuda.device(torch.device(device)):  # events and kernels on the same device's stream
        return _time_current_device(torch, func, min_seconds)


def _time_current_device(torch: Any, func: Callable[[], Any], min_seconds: float) -> float:
    for _ in range(3):
        func()
    torch.cuda.synchronize()
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


def measure_matmul(torch: Any, device: str, dtype_name: str, n: int) -> float:
    """Achieved TFLOP/s of an n^3 matmul in ``dtype_name`` on ``device``."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype_name == "tf32" else "highest")
    try:
        seconds = time_cuda(torch, device, matmul_callable(torch, device, dtype_name, n))
    finally:
        torch.set_float32_matmul_precision(previous)
    return matmul_tflops(n, seconds)


def gpu_name(ctx: Context, index: int) -> str:
    """nvidia-smi's name for a CUDA device index (the same order: CUDA_DEVICE_ORDER=PCI_BUS_ID)."""
    return ctx.gpus[index].name if index < len(ctx.gpus) else f"GPU {index}"


def record_perf(
    ctx: Context, gpu_index: int, metric: str, achieved: float, unit: str, peak: float | None, min_fraction: float
) -> CheckResult:
    """Store a measurement and judge it against its peak."""
    name = gpu_name(ctx, gpu_index)
    fraction = fraction_of_peak(achieved, peak)
    ctx.perf.append(PerfResult(gpu_index, name, metric, round(achieved, 2), unit, peak, fraction, min_fraction))
    status = judge_fraction(fraction, min_fraction)
    if fraction is None:
        text = f"{achieved:.1f} {unit}; no datasheet peak for {name!r} in --peaks"
    else:
        text = f"{achieved:.1f} {unit} = {fraction:.0%} of {peak:g} (minimum {min_fraction:.0%})"
    details = {"achieved": achieved, "unit": unit, "peak": peak, "fraction": fraction, "min_fraction": min_fraction}
    return CheckResult(f"perf.{metric}[{gpu_index}]", "performance", status, text, details=details)


def check_matmul(ctx: Context, torch: Any, index: int, dtype_name: str) -> CheckResult:
    device = f"cuda:{index}"
    reason = matmul_supported(torch, device, dtype_name)
    if reason is not None:
        return skip(f"perf.matmul_{dtype_name}[{index}]", "performance", reason)
    achieved = measure_matmul(torch, device, dtype_name, ctx.args.matmul_size)
    peak = (peaks_for(gpu_name(ctx, index), ctx.peaks) or {}).get(dtype_name)
    return record_perf(ctx, index, f"matmul_{dtype_name}", achieved, "TFLOP/s", peak, ctx.min_fraction[dtype_name])


def check_memory_bandwidth(ctx: Context, torch: Any, index: int) -> CheckResult:
    device = f"cuda:{index}"
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    nbytes = min(1 << 30, free // 8)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = time_cuda(torch, device, lambda: dst.copy_(src))
    achieved = 2 * src.numel() * 4 / seconds / 1e9  # a copy reads and writes every byte
    peak = (peaks_for(gpu_name(ctx, index), ctx.peaks) or {}).get("mem_bw_gbs")
    return record_perf(ctx, index, "mem_bw", achieved, "GB/s", peak, ctx.min_fraction["mem_bw"])


def check_h2d(ctx: Context, torch: Any, index: int) -> CheckResult:
    device = f"cuda:{index}"
    host = torch.empty(64 << 20, dtype=torch.float32).pin_memory()  # 256 MiB pinned
    target = torch.empty(host.shape, dtype=host.dtype, device=device)
    seconds = time_cuda(torch, device, lambda: target.copy_(host, non_blocking=True))
    achieved = host.numel() * 4 / seconds / 1e9
    gpu = ctx.gpus[index] if index < len(ctx.gpus) else None
    peak = pcie_peak_gbs(gpu.pcie_gen_max, gpu.pcie_width_max) if gpu else None
    return record_perf(ctx, index, "h2d", achieved, "GB/s", peak, ctx.min_fraction["h2d"])


def performance_checks(ctx: Context, torch: Any) -> None:
    if ctx.cpu_mode:
        ctx.add(skip("perf.gpu", "performance", "--cpu: GPU checks skipped"))
        return
    if ctx.args.skip_perf:
        ctx.add(skip("perf.gpu", "performance", "--skip-perf given"))
        return
    for index in range(torch.cuda.device_count()):
        for dtype_name in MATMUL_DTYPES:
            run_check(
                ctx,
                f"perf.matmul_{dtype_name}[{index}]",
                "performance",
                lambda i=index, t=dtype_name: check_matmul(ctx, torch, i, t),
            )
        run_check(ctx, f"perf.mem_bw[{index}]", "performance", lambda i=index: check_memory_bandwidth(ctx, torch, i))
        run_check(ctx, f"perf.h2d[{index}]", "performance", lambda i=index: check_h2d(ctx, torch, i))
        torch.cuda.empty_cache()
    run_check(ctx, "perf.nccl_allreduce", "performance", lambda: check_nccl(ctx, torch))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nccl_worker(rank: int, world_size: int, port: int, nbytes: int, out_path: str) -> None:
    """One rank of the all-reduce benchmark (module level: torch.multiprocessing.spawn pickles it)."""
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        tensor = torch.full((nbytes // 4,), float(rank + 1), device=f"cuda:{rank}")
        dist.all_reduce(tensor)
        correct = bool(torch.all(tensor == world_size * (world_size + 1) / 2).item())
        for _ in range(5):
            dist.all_reduce(tensor)
        torch.cuda.synchronize()
        dist.barrier()
        iterations = 20
        start = time.perf_counter()
        for _ in range(iterations):
            dist.all_reduce(tensor)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / iterations
        if rank == 0:
            Path(out_path).write_text(json.dumps({"seconds": seconds, "correct": correct}), encoding="utf-8")
    finally:
        dist.destroy_process_group()


def check_nccl(ctx: Context, torch: Any) -> CheckResult:
    count = torch.cuda.device_count()
    if count < 2:
        return skip("perf.nccl_allreduce", "performance", f"NCCL all-reduce needs >= 2 GPUs, found {count}")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_nccl_available():
        return CheckResult("perf.nccl_allreduce", "performance", FAIL, "torch.distributed with NCCL is not available")
    nbytes = 256 << 20
    with tempfile.TemporaryDirectory() as tmp:
        out_path = str(Path(tmp) / "nccl.json")
        torch.multiprocessing.spawn(nccl_worker, args=(count, _free_port(), nbytes, out_path), nprocs=count, join=True)
        result = json.loads(Path(out_path).read_text(encoding="utf-8"))
    busbw = allreduce_busbw_gbs(nbytes, result["seconds"], count)
    ctx.perf.append(PerfResult(-1, f"{count} GPUs", "nccl_allreduce_busbw", round(busbw, 2), "GB/s"))
    details = {"bus_bandwidth_gbs": busbw, "world_size": count, "bytes": nbytes, "correct": result["correct"]}
    if not result["correct"]:
        return CheckResult(
            "perf.nccl_allreduce", "performance", FAIL, "all-reduce returned a wrong sum", details=details
        )
    minimum = ctx.args.min_nccl_busbw_gbs
    status = PASS if busbw >= minimum else FAIL
    text = f"all-reduce of {nbytes >> 20} MiB over {count} GPUs: bus bandwidth {busbw:.1f} GB/s"
    return CheckResult("perf.nccl_allreduce", "performance", status, text + f" (minimum {minimum:g})", details=details)


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
        ctx.add(skip("tensorflow.gpus", "framework", "--cpu: GPU checks skipped"))
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
        "tool": {"name": "gpu_verify", "version": TOOL_VERSION},
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 3),
        "mode": "cpu" if ctx.cpu_mode else "gpu",
        "host": host_info(),
        "environment": {
            "name": ctx.args.env_name or default_env_name(),
            "python": sys.executable,
            "python_version": platform.python_version(),
            "frameworks": ctx.frameworks,
            "required_frameworks": sorted(ctx.args.require),
        },
        "gpus": [dataclasses.asdict(gpu) for gpu in ctx.gpus],
        "checks": [dataclasses.asdict(result) for result in ctx.results],
        "performance": [dataclasses.asdict(perf) for perf in ctx.perf],
        "summary": overall(ctx.results),
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run the framework checks on the CPU; skip GPU checks")
    parser.add_argument("--json", action="store_true", help="print the JSON report to stdout (instead of the table)")
    parser.add_argument("--json-out", metavar="FILE", help="write the JSON report to FILE")
    parser.add_argument("--peaks", metavar="FILE", help='datasheet peaks JSON: {"<gpu name>": {"bf16": TFLOPs, ...}}')
    parser.add_argument("--data-dir", help="directory whose disk is audited (default /data, else /)")
    parser.add_argument("--env-name", help="name of this Python environment in the report (default: sys.prefix name)")
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
    parser.add_argument("--matmul-size", type=int, default=8192, help="n of the n x n matmul (default 8192)")
    parser.add_argument("--train-steps", type=int, default=200, help="LeNet-5 steps per GPU (CPU: at most 60)")
    parser.add_argument("--skip-perf", action="store_true", help="skip the performance checks")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="frameworks to check (default: all)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    try:
        ctx = Context(args=args, peaks=load_peaks(args.peaks))
        ctx.min_fraction = parse_min_fractions(args.min_fraction)
    except (OSError, ValueError) as exc:
        print(f"gpu_verify: error: {exc}", file=sys.stderr)
        return 2
    wanted = {name.strip() for name in args.frameworks.split(",") if name.strip()}
    # CUDA's default order is "fastest first"; PCI order makes framework indices match nvidia-smi's.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    system_checks(ctx)
    hardware_checks(ctx)
    if "torch" in wanted:
        torch_checks(ctx)
    if "tensorflow" in wanted:
        tensorflow_checks(ctx)
    report = build_report(ctx, started)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report, colour=sys.stdout.isatty()))
    return int(report["summary"]["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
