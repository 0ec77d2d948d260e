"""A GPU host without a GPU, for gpu_verify's GPU code paths (a helper beside the tests, not a test module).

- ``FakeHost``: ``nvidia-smi``, ``dcgmi`` and ``systemctl`` executables on PATH that answer from a scenario:
  recorded real outputs (``tests/fixtures/nvidia_smi``, ``tests/fixtures/dcgmi``, each with a ``.source``)
  or rows a test writes. ``nvidia-smi -lms`` prints its rows and then keeps running until it is stopped, as
  the real one does; a field the scenario marks as unknown is refused with the real tool's message.
- ``FakeTorch``: the part of the torch API gpu_verify's performance checks call. Work advances a per-device
  clock at the rate the scenario gives each GPU (TFLOP/s per precision, GB/s per copy kind), and CUDA events
  read that clock, so a test decides what every measurement comes out as.

What only a real GPU can prove: that the real calls (cuBLAS matmuls, ``torch._scaled_mm``, CUDA events,
NCCL) behave as this stand-in says; the acceptance script (scripts/gpu_acceptance) runs them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

_NVIDIA_SMI = r"""
import json, os, sys, time
scenario = json.load(open(os.environ["FAKE_GPU_SCENARIO"]))
args = sys.argv[1:]
def text(key):
    value = scenario.get(key)
    if value is None:
        print(f"fake nvidia-smi: nothing recorded for {key}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.write(open(value).read() if value.startswith("/") else value)
    sys.exit(0)
if args[:2] == ["nvlink", "-s"]:
    text("nvlink_status")
if args[:2] == ["nvlink", "-e"]:
    text("nvlink_errors")
if args == ["-q"]:
    text("q")
query = [arg for arg in args if arg.startswith("--query-gpu=")]
if not query:
    sys.exit(1)
fields = query[0].split("=", 1)[1].split(",")
for field in fields:
    if field in scenario.get("unknown_fields", []):
        print(f'Field "{field}" is not a valid field to query.')
        print("")
        print("Use 'nvidia-smi --help-query-gpu' for a list of available fields.")
        sys.exit(2)
def line(row):
    return ", ".join(str(row.get(field, "[N/A]")) for field in fields)
index = [arg.split("=", 1)[1] for arg in args if arg.startswith("-i=")]
if any(arg.startswith("-lms") for arg in args):
    for row in scenario.get("telemetry", {}).get(index[0] if index else "0", []):
        print(line(row), flush=True)
    time.sleep(300)  # -lms runs until it is stopped
    sys.exit(0)
for row in scenario.get("gpus", []):
    print(line(row))
"""

_DCGMI = r"""
import json, os, sys, time
scenario = json.load(open(os.environ["FAKE_GPU_SCENARIO"]))
dcgm = scenario["dcgmi"]
if dcgm.get("hang"):
    time.sleep(300)
if dcgm.get("stdout"):
    sys.stdout.write(open(dcgm["stdout"]).read())
if dcgm.get("stderr"):
    sys.stderr.write(dcgm["stderr"])
sys.exit(dcgm.get("exit", 0))
"""

_SYSTEMCTL = r"""
import json, os, sys
scenario = json.load(open(os.environ["FAKE_GPU_SCENARIO"]))
state = scenario.get("fabricmanager", "inactive")
print(state)
sys.exit(0 if state == "active" else 3)
"""


class FakeHost:
    """Fake tools on PATH answering from ``scenario`` (write it, then call ``save()``)."""

    def __init__(self, root: Path, monkeypatch: Any, tools: tuple[str, ...] = ("nvidia-smi", "systemctl")) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.scenario_path = root / "scenario.json"
        self.scenario: dict[str, Any] = {}
        for name in tools:
            self.install(name)
        monkeypatch.setenv("FAKE_GPU_SCENARIO", str(self.scenario_path))
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ['PATH']}")
        self.save()

    def install(self, name: str) -> None:
        body = {"nvidia-smi": _NVIDIA_SMI, "dcgmi": _DCGMI, "systemctl": _SYSTEMCTL}[name]
        path = self.bin / name
        path.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def save(self) -> None:
        self.scenario_path.write_text(json.dumps(self.scenario), encoding="utf-8")

    def set(self, **values: Any) -> FakeHost:
        self.scenario.update(values)
        self.save()
        return self


# ----------------------------------------------------------------------------- torch


class _Tensor:
    def __init__(self, torch: FakeTorch, device: str, numel: int, dtype: str) -> None:
        self.torch, self.device, self._numel, self.dtype = torch, device, numel, dtype

    @property
    def shape(self) -> tuple[int]:
        return (self._numel,)

    def numel(self) -> int:
        return self._numel

    def to(self, dtype: str) -> _Tensor:
        return _Tensor(self.torch, self.device, self._numel, dtype)

    def t(self) -> _Tensor:
        return self

    def fill_(self, _value: float) -> _Tensor:
        return self

    def pin_memory(self) -> _Tensor:
        return self

    def copy_(self, src: _Tensor, non_blocking: bool = False) -> _Tensor:
        self.torch.copy(src, self)
        return self


class _Event:
    def __init__(self, torch: FakeTorch) -> None:
        self.torch, self.ms = torch, 0.0

    def record(self) -> None:
        self.ms = self.torch.clock[self.torch.current]

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: _Event) -> float:
        return end.ms - self.ms


class _Cuda:
    def __init__(self, torch: FakeTorch) -> None:
        self.torch = torch

    def device_count(self) -> int:
        return len(self.torch.gpus)

    def is_available(self) -> bool:
        return True

    @contextlib.contextmanager
    def device(self, device: str) -> Iterator[None]:
        previous, self.torch.current = self.torch.current, device
        try:
            yield
        finally:
            self.torch.current = previous

    def synchronize(self) -> None:
        pass

    def Event(self, enable_timing: bool = False) -> _Event:  # noqa: N802 - torch's name
        return _Event(self.torch)

    def get_device_capability(self, _device: str) -> tuple[int, int]:
        return (9, 0)

    def mem_get_info(self, _device: str) -> tuple[int, int]:
        return (80 << 30, 80 << 30)

    def empty_cache(self) -> None:
        pass

    def can_device_access_peer(self, a: int, b: int) -> bool:
        return (a, b) not in self.torch.no_peer


class FakeTorch:
    """torch for gpu_verify's performance checks: ``gpus[i]`` gives device i's rates: ``tflops`` per
    precision, ``mem_bw`` (GB/s, a device-to-device copy), ``h2d`` and ``p2p`` (GB/s)."""

    __version__ = "2.99.0+fake"
    float32, float16, bfloat16, float8_e4m3fn = "float32", "float16", "bfloat16", "float8_e4m3fn"

    def __init__(self, gpus: list[dict[str, Any]], no_peer: frozenset[tuple[int, int]] = frozenset()) -> None:
        self.gpus, self.no_peer = gpus, no_peer
        self.clock: dict[str, float] = {f"cuda:{index}": 0.0 for index in range(len(gpus))}
        self.current = "cuda:0"
        self.precision = "highest"
        self.cuda = _Cuda(self)

    # --- what gpu_verify calls
    def device(self, name: str) -> str:
        return name

    def get_float32_matmul_precision(self) -> str:
        return self.precision

    def set_float32_matmul_precision(self, value: str) -> None:
        self.precision = value

    def randn(self, *shape: int, device: str = "cpu", dtype: str = "float32") -> _Tensor:
        return _Tensor(self, device, math.prod(shape), dtype)

    def empty(self, size: int | tuple[int, ...], dtype: str = "float32", device: str = "cpu") -> _Tensor:
        return _Tensor(self, device, math.prod(size) if isinstance(size, tuple) else size, dtype)

    def empty_like(self, tensor: _Tensor, device: str | None = None) -> _Tensor:
        return _Tensor(self, device or tensor.device, tensor.numel(), tensor.dtype)

    def tensor(self, _value: float, device: str = "cpu") -> _Tensor:
        return _Tensor(self, device, 1, "float32")

    def matmul(self, a: _Tensor, _b: _Tensor) -> _Tensor:
        precision = {"float16": "fp16", "bfloat16": "bf16"}.get(a.dtype)
        if precision is None:
            precision = "tf32" if self.precision == "high" else "fp32"
        self._work(a, precision)
        return a

    def _scaled_mm(self, a: _Tensor, _b: _Tensor, **_kwargs: Any) -> _Tensor:
        self._work(a, "fp8")
        return a

    # --- the cost model
    def _rates(self, device: str) -> dict[str, Any]:
        return self.gpus[int(device.split(":")[1])]

    def _work(self, a: _Tensor, precision: str) -> None:
        n = math.isqrt(a.numel())
        tflops = self._rates(a.device)["tflops"][precision]
        self.clock[self.current] += 2 * n**3 / (tflops * 1e12) * 1e3

    def copy(self, src: _Tensor, dst: _Tensor) -> None:
        nbytes = src.numel() * 4
        if src.device == "cpu":
            rate = self._rates(dst.device)["h2d"]
        elif src.device == dst.device:
            rate, nbytes = self._rates(src.device)["mem_bw"], 2 * nbytes  # a copy reads and writes
        else:
            rate = self._rates(src.device)["p2p"]
        self.clock[self.current] += nbytes / (rate * 1e9) * 1e3
