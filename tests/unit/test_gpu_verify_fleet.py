"""gpu_verify's GPU paths on a fake GPU host (tests/unit/fake_gpu.py): recorded nvidia-smi/dcgmi outputs and a
torch stand-in whose measurements the test decides. Each check's pass, fail and advice is exercised; what only
a real GPU proves is left to scripts/gpu_acceptance."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from fake_gpu import FIXTURES, FakeHost, FakeTorch
from gpu_verify_script import gv

SMI = FIXTURES / "nvidia_smi"
H100 = "NVIDIA H100 80GB HBM3"
# datasheet peaks and the healthy share, as the role and the images ship them (from dlstack/data/gpus.yml)
PEAKS = {H100: {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0, "fp8": 1979.0, "mem_bw_gbs": 3350.0,
                "healthy_bf16": 0.803, "healthy_fp8": 0.709}}  # fmt: skip


def gpu_row(index: int, **values: Any) -> dict[str, Any]:
    """One ``--query-gpu`` row of an H100 SXM (driver 580) as nvidia-smi prints it with nounits."""
    row = {
        "index": index,
        "name": H100,
        "uuid": f"GPU-{index:08d}-0000-0000-0000-000000000000",
        "memory.total": 81559,
        "driver_version": "580.95.05",
        "ecc.mode.current": "Enabled",
        "persistence_mode": "Enabled",
        "pcie.link.gen.current": 5,
        "pcie.link.gen.max": 5,
        "pcie.link.width.current": 16,
        "pcie.link.width.max": 16,
        "temperature.gpu": 35,
        "compute_cap": "9.0",
        "pcie.link.gen.gpumax": 5,
        "pcie.link.gen.hostmax": 5,
    }
    return row | values


def load_row(**values: Any) -> dict[str, Any]:
    """One ``-lms`` telemetry row of a healthy H100 SXM under a bf16 matmul."""
    row = {
        "index": 0,
        "clocks.sm": 1980,
        "clocks.max.sm": 1980,
        "power.draw": 690.5,
        "power.limit": 700.0,
        "power.default_limit": 700.0,
        "temperature.gpu": 62,
        "clocks_event_reasons.active": "0x0000000000000000",
        "pcie.link.gen.gpucurrent": 5,
        "pcie.link.width.current": 16,
    }
    return row | values


def healthy_rates(**changes: Any) -> dict[str, Any]:
    """What a healthy H100 SXM measures (TFLOP/s, GB/s)."""
    rates = {
        "tflops": {"fp32": 51.0, "tf32": 378.0, "fp16": 760.0, "bf16": 760.0, "fp8": 1300.0},
        "mem_bw": 2900.0,
        "h2d": 52.0,
        "p2p": 350.0,
    }
    return rates | changes


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    monkeypatch.setattr(gv, "_TELEMETRY_FIELDS_CACHE", [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return FakeHost(tmp_path / "host", monkeypatch).set(gpus=[gpu_row(0), gpu_row(1)])


def context(*argv: str) -> gv.Context:
    ctx = gv.Context(args=gv.parse_args(list(argv)), peaks=dict(PEAKS))
    ctx.fraction_overrides = gv.parse_min_fractions(ctx.args.min_fraction)
    ctx.cpu = False
    ctx.gpus, error = gv.query_gpus()
    assert error is None, error
    return ctx


def run_perf(ctx: gv.Context, torch: FakeTorch, monkeypatch: pytest.MonkeyPatch) -> dict[str, gv.CheckResult]:
    monkeypatch.setattr(gv, "check_nccl", lambda ctx, torch: gv.skip("perf.nccl_allreduce", "performance", "not here"))
    gv.performance_checks(ctx, torch)
    return {result.id: result for result in ctx.results}


# ----------------------------------------------------------------------------- nvidia-smi queries


def test_an_old_driver_is_asked_without_the_fields_it_does_not_know(host: FakeHost) -> None:
    host.set(unknown_fields=["pcie.link.gen.gpumax", "pcie.link.gen.hostmax"])
    gpus, error = gv.query_gpus()
    assert error is None
    assert [(gpu.index, gpu.pcie_gen_max, gpu.pcie_gen_gpumax) for gpu in gpus] == [(0, 5, None), (1, 5, None)]


def test_a_required_field_refused_is_an_error(host: FakeHost) -> None:
    host.set(unknown_fields=["uuid"])
    gpus, error = gv.query_gpus()
    assert gpus == [] and error is not None and 'Field "uuid" is not a valid field to query.' in error


def test_the_sampler_reads_nvidia_smi_while_the_gpu_works(host: FakeHost) -> None:
    host.set(telemetry={"1": [load_row(index=1), load_row(index=1, **{"clocks.sm": 1755})]})
    with gv.TelemetrySampler(1) as sampler:
        pass
    assert [row["clocks.sm"] for row in sampler.samples] == ["1980", "1755"]


def test_an_old_drivers_throttle_field_is_read_under_the_new_name(host: FakeHost) -> None:
    host.set(
        unknown_fields=["clocks_event_reasons.active", "pcie.link.gen.gpucurrent"],
        telemetry={"0": [{"clocks_throttle_reasons.active": "0x0000000000000004", "pcie.link.gen.current": 3}]},
    )
    with gv.TelemetrySampler(0) as sampler:
        pass
    (row,) = sampler.samples
    assert row["clocks_event_reasons.active"] == "0x0000000000000004"
    assert row["pcie.link.gen.gpucurrent"] == "3"


def test_the_recorded_t4_power_cap_rows_are_read() -> None:
    # real `-lms 500` rows of a Tesla T4 at its 70 W cap: reason 0x4, SW power cap (fixture's .source)
    fields = ["utilization.gpu", "clocks.sm", "power.draw", "clocks_event_reasons.active"]
    text = (SMI / "query_throttle_active_t4_sw_power_cap.csv").read_text().replace(" %", "").replace(" MHz", "")
    rows = gv.parse_telemetry(text.replace(" W,", ","), fields)
    failures, warnings, summary = gv.clock_findings([row | {"clocks.max.sm": "1590"} for row in rows])
    assert summary["clock_event_reasons"] == ["SW power cap"]
    assert (failures, warnings) == ([], [])  # 1290 of 1590 MHz at the cap: what a T4 does


# ----------------------------------------------------------------------------- throughput, thresholds, outliers


def test_a_healthy_node_passes_every_performance_and_load_check(host: FakeHost, monkeypatch) -> None:
    host.set(telemetry={"0": [load_row()], "1": [load_row(index=1)]})
    ctx = context()
    results = run_perf(ctx, FakeTorch([healthy_rates(), healthy_rates()]), monkeypatch)
    failed = {key: result.message for key, result in results.items() if result.status == gv.FAIL}
    assert failed == {}
    bf16 = results["perf.matmul_bf16[0]"]
    assert bf16.details["min_fraction"] == pytest.approx(0.803 * gv.HEALTHY_TOLERANCE, abs=1e-3)
    assert "of the 80% a healthy NVIDIA H100 80GB HBM3 measures" in bf16.message
    assert bf16.details["achieved"] == pytest.approx(760.0, rel=1e-6)
    assert results["perf.outliers.matmul_bf16"].status == gv.PASS
    assert results["health.clocks[0]"].status == gv.PASS
    assert results["perf.p2p"].status == gv.PASS


def test_a_card_that_lost_a_third_of_its_speed_fails_and_says_why(host: FakeHost, monkeypatch) -> None:
    throttled = [load_row(index=1, **{"clocks.sm": 1185, "clocks_event_reasons.active": "0x000000000000000C"})]
    host.set(telemetry={"0": [load_row()], "1": throttled})
    slow = healthy_rates(tflops={"fp32": 34.0, "tf32": 252.0, "fp16": 507.0, "bf16": 507.0, "fp8": 867.0})
    results = run_perf(context(), FakeTorch([healthy_rates(), slow]), monkeypatch)
    # 507 TFLOP/s is 51 % of the datasheet: the old 50 % bar passed it; a healthy H100 SXM measures 80 %
    assert results["perf.matmul_bf16[1]"].status == gv.FAIL
    assert results["perf.matmul_bf16[0]"].status == gv.PASS
    outliers = results["perf.outliers.matmul_bf16"]
    assert outliers.status == gv.FAIL and outliers.message.startswith("GPU 1 507")
    clocks = results["health.clocks[1]"]
    assert clocks.status == gv.FAIL
    assert "HW slowdown during the matmul: the board slowed the GPU (power supply or temperature sensor)" in (
        clocks.message
    )
    assert "SM 1185.0 of 1980.0 MHz" in clocks.message


def test_a_gpu_only_slower_than_its_peers_fails_the_outlier_rule(host: FakeHost, monkeypatch) -> None:
    # above its own minimum (64 % of 989.5 = 634 TFLOP/s) but 16 % below the other card: the other cards'
    # median (here the one other card) is the yardstick, so two-GPU workstations are covered too
    host.set(telemetry={"0": [load_row()], "1": [load_row(index=1)]})
    rates = [healthy_rates(), healthy_rates(tflops=healthy_rates()["tflops"] | {"bf16": 640.0})]
    results = run_perf(context(), FakeTorch(rates), monkeypatch)
    assert results["perf.matmul_bf16[1]"].status == gv.PASS
    assert results["perf.outliers.matmul_bf16"].status == gv.FAIL
    assert "GPU 1 640 (84% of the other GPUs' median 760)" in results["perf.outliers.matmul_bf16"].message


def test_min_fraction_overrides_the_model_threshold(host: FakeHost, monkeypatch) -> None:
    host.set(telemetry={"0": [load_row()], "1": [load_row(index=1)]})
    results = run_perf(context("--min-fraction", "bf16=0.9"), FakeTorch([healthy_rates()] * 2), monkeypatch)
    assert results["perf.matmul_bf16[0]"].status == gv.FAIL
    assert "(minimum 90%: --min-fraction;" in results["perf.matmul_bf16[0]"].message


def test_a_lowered_power_limit_warns(host: FakeHost) -> None:
    failures, warnings, _ = gv.clock_findings([load_row(**{"power.limit": 450.0})])
    assert failures == []
    assert warnings == [
        "power limit 450 W is below the card's default 700 W: `nvidia-smi -pl` or a datacenter policy lowered it"
    ]


@pytest.mark.parametrize(
    ("bits", "name"),
    [(0x8, "HW slowdown"), (0x20, "SW thermal slowdown"), (0x40, "HW thermal slowdown"), (0x80, "HW power brake")],
)
def test_each_slowdown_reason_fails_with_its_fix(bits: int, name: str) -> None:
    failures, _, summary = gv.clock_findings([load_row(**{"clocks_event_reasons.active": f"0x{bits:016X}"})])
    assert len(failures) == 1 and failures[0].startswith(f"{name} during the matmul: ")
    assert summary["clock_event_reasons"] == [name]


# ----------------------------------------------------------------------------- PCIe under load


def test_a_gen5_card_in_a_gen4_slot_is_judged_against_the_card(host: FakeHost, monkeypatch) -> None:
    host.set(
        gpus=[gpu_row(0, **{"pcie.link.gen.max": 4, "pcie.link.gen.hostmax": 4})],
        telemetry={"0": [load_row(**{"pcie.link.gen.gpucurrent": 4})]},
    )
    results = run_perf(context(), FakeTorch([healthy_rates(h2d=25.0)]), monkeypatch)
    h2d = results["perf.h2d[0]"]
    # the peak is the card's own Gen5 x16 (63 GB/s), not the slot-capped Gen4 one (31.5 GB/s)
    assert h2d.details["peak"] == pytest.approx(63.0, abs=0.1)
    assert h2d.status == gv.FAIL
    pcie = results["health.pcie[0]"]
    assert pcie.status == gv.WARN
    assert "the card supports Gen5 but the slot or host only Gen4" in pcie.message


def test_a_link_that_trained_down_under_load_fails(host: FakeHost, monkeypatch) -> None:
    host.set(telemetry={"0": [load_row(**{"pcie.link.gen.gpucurrent": 3, "pcie.link.width.current": 8})]})
    ctx = context()
    result = gv.check_pcie_link(0, ctx.gpus[0], {"h2d": gv.parse_telemetry(
        "0, 1980, 1980, 600, 700, 700, 60, 0x0, 3, 8", gv.TELEMETRY_FIELDS)})  # fmt: skip
    assert result.status == gv.FAIL
    assert "the link runs x8 of the card's x16: reseat the card" in result.message
    assert "trained down to Gen3 under load (card Gen5, host Gen5)" in result.message


# ----------------------------------------------------------------------------- NVLink, fabric


def test_recorded_nvlink_status_is_parsed() -> None:
    a100 = gv.parse_nvlink_status((SMI / "nvlink_status_a100_sxm4_40gb.txt").read_text())
    assert a100[0] == dict.fromkeys(range(12), 25.0)
    bridge = gv.parse_nvlink_status((SMI / "nvlink_status_h100_pcie_bridge.txt").read_text())
    assert sum(1 for speed in bridge[1].values() if speed) == 12 and len(bridge[1]) == 18
    assert gv.parse_nvlink_status((SMI / "nvlink_status_a100_pcie_no_nvlink.txt").read_text()) == {0: {}, 1: {}}


def test_bridged_cards_with_their_usual_inactive_links_pass(host: FakeHost) -> None:
    host.set(nvlink_status=str(SMI / "nvlink_status_h100_pcie_bridge.txt"))
    ctx = context()
    gv.nvlink_checks(ctx)
    assert [(result.id, result.status) for result in ctx.results] == [
        ("health.nvlink[0]", gv.PASS),
        ("health.nvlink[1]", gv.PASS),
    ]


def test_a_gpu_with_fewer_links_than_its_peers_fails(host: FakeHost, tmp_path: Path) -> None:
    text = (SMI / "nvlink_status_h100_pcie_bridge.txt").read_text()
    gpu1 = text.index("GPU 1:")
    broken = text[:gpu1] + text[gpu1:].replace("Link 0: 26.562 GB/s", "Link 0: <inactive>", 1)
    (tmp_path / "status.txt").write_text(broken)
    host.set(nvlink_status=str(tmp_path / "status.txt"))
    ctx = context()
    gv.nvlink_checks(ctx)
    results = {result.id: result for result in ctx.results}
    assert results["health.nvlink[0]"].status == gv.PASS
    assert results["health.nvlink[1]"].status == gv.FAIL
    assert "11 NVLinks up where the node's other GPUs have 12 (inactive: 0, 4, 5, 10, 11, 16, 17)" in (
        results["health.nvlink[1]"].message
    )


def test_nvlink_error_counters_are_read_and_judged(host: FakeHost, tmp_path: Path) -> None:
    errors = gv.parse_nvlink_errors((SMI / "nvlink_errors_a100_sxm4_40gb.txt").read_text())
    assert errors[0][0] == {"Replay Errors": 0, "Recovery Errors": 0, "CRC Errors": 0}
    links = dict.fromkeys(range(12), 25.0)
    assert gv.nvlink_findings(links, errors[0], 12) == ([], [])
    errors[0][3]["Recovery Errors"] = 2
    errors[0][5]["CRC Errors"] = 40
    failures, warnings = gv.nvlink_findings(links, errors[0], 12)
    assert failures == ["NVLink 3: {'Recovery Errors': 2} (the link had to retrain): check the bridge or baseboard"]
    assert warnings == ["NVLink 5: {'CRC Errors': 40} (watch: rising counts mean a marginal link)"]


def test_a_pcie_node_has_no_nvlink_checks(host: FakeHost) -> None:
    host.set(nvlink_status=str(SMI / "nvlink_status_a100_pcie_no_nvlink.txt"))
    ctx = context()
    gv.nvlink_checks(ctx)
    assert ctx.results == []


def test_recorded_fabric_sections_are_parsed() -> None:
    hgx = gv.parse_fabric((SMI / "fabric_h100_sxm_hgx_completed_q.txt").read_text())
    assert hgx[0]["state"] == "Completed" and hgx[0]["status"] == "Success"
    assert len(hgx) == 2
    nvl = gv.parse_fabric((SMI / "fabric_h100_nvl_pcie_na_q.txt").read_text())
    assert all(info["state"] is None for info in nvl.values())


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("fabric_in_progress_excerpt.txt", "GPU -1 fabric state In Progress, status None: the GPU is not registered"),
        ("fabric_completed_health_unhealthy_excerpt.txt", "GPU -1 fabric health Unhealthy (bandwidth Full)"),
    ],
)
def test_an_unregistered_or_unhealthy_fabric_fails(fixture: str, expected: str) -> None:
    failures = gv.fabric_findings(gv.parse_fabric((SMI / fixture).read_text()), 4, "active")
    assert len(failures) == 1 and failures[0].startswith(expected)


def test_fabric_manager_down_on_an_nvswitch_host_fails_with_the_fix(host: FakeHost, monkeypatch) -> None:
    host.set(q=str(SMI / "fabric_h100_sxm_hgx_completed_q.txt"), fabricmanager="inactive")
    monkeypatch.setattr(gv, "nvswitch_count", lambda sys_root=None: 4)
    result = gv.check_fabric(context())
    assert result is not None and result.status == gv.FAIL
    assert result.message.startswith("4 NVSwitch(es) on the bus but nvidia-fabricmanager is inactive: `sudo systemctl")
    host.set(fabricmanager="active")
    result = gv.check_fabric(context())
    assert result is not None and result.status == gv.PASS


def test_a_pcie_host_has_no_fabric_check(host: FakeHost, monkeypatch) -> None:
    host.set(q=str(SMI / "fabric_h100_nvl_pcie_na_q.txt"))
    monkeypatch.setattr(gv, "nvswitch_count", lambda sys_root=None: 0)
    assert gv.check_fabric(context()) is None


def test_nvswitches_are_counted_from_the_pci_bus(tmp_path: Path) -> None:
    for name, klass in (("0000:05:00.0", "0x068000"), ("0000:18:00.0", "0x030200"), ("0000:06:00.0", "0x068000")):
        device = tmp_path / "bus/pci/devices" / name
        device.mkdir(parents=True)
        (device / "vendor").write_text("0x10de\n")
        (device / "class").write_text(klass + "\n")
    assert gv.nvswitch_count(tmp_path) == 2


# ----------------------------------------------------------------------------- P2P and NCCL


def test_a_slow_or_peerless_pair_is_reported(host: FakeHost, monkeypatch) -> None:
    host.set(gpus=[gpu_row(0), gpu_row(1), gpu_row(2)])
    torch = FakeTorch([healthy_rates(), healthy_rates(), healthy_rates(p2p=20.0)], no_peer=frozenset({(2, 0)}))
    result = gv.check_p2p(context(), torch)
    assert result.status == gv.FAIL
    assert "2->0 20.0 GB/s, 2->1 20.0 GB/s: below 50% of the median pair (350.0 GB/s)" in result.message
    assert "no peer access between 2->0" in result.message
    assert result.details["gbs"]["0->1"] == pytest.approx(350.0)


def nccl_result(busbw_gbs: float, world: int = 8) -> dict[str, Any]:
    seconds = {str(size): size / (busbw_gbs * 1e9) * 2 * (world - 1) / world for size in gv.NCCL_SIZES}
    return {"seconds": seconds, "correct": True}


def eight_gpus(host: FakeHost, links: int) -> gv.Context:
    host.set(gpus=[gpu_row(index) for index in range(8)])
    ctx = context()
    ctx.nvlink = {index: dict.fromkeys(range(links), 26.562) for index in range(8)}
    return ctx


def test_nccl_on_nvswitch_is_held_to_half_the_nvlink_bandwidth(host: FakeHost) -> None:
    ctx = eight_gpus(host, 18)
    result = gv.judge_nccl(ctx, 8, nccl_result(370.0), switches=4)
    assert result.status == gv.PASS
    assert "(minimum 239.1: 50% of 478.1 GB/s per GPU over nvswitch)" in result.message
    assert result.details["sweep_gbs"][str(1 << 30)] == pytest.approx(370.0)
    # the same node fallen back to PCIe: ~22 GB/s
    result = gv.judge_nccl(ctx, 8, nccl_result(22.0), switches=4)
    assert result.status == gv.FAIL
    assert "NCCL_DEBUG=INFO" in result.message


def test_nccl_on_a_bridged_pair_and_on_pcie(host: FakeHost) -> None:
    ctx = context()
    ctx.nvlink = {0: dict.fromkeys(range(12), 26.562), 1: dict.fromkeys(range(12), 26.562)}
    # the published two-H100-PCIe-on-a-bridge figure passes
    assert gv.judge_nccl(ctx, 2, nccl_result(115.4, world=2), switches=0).status == gv.PASS
    ctx.nvlink = {}
    result = gv.judge_nccl(ctx, 2, nccl_result(20.0, world=2), switches=0)
    assert result.status == gv.PASS and result.details["topology"] == "pcie"
    assert gv.judge_nccl(ctx, 2, nccl_result(5.0, world=2), switches=0).status == gv.FAIL
    override = context("--min-nccl-busbw-gbs", "30")
    assert gv.judge_nccl(override, 2, nccl_result(20.0, world=2), switches=0).status == gv.FAIL


def test_a_wrong_all_reduce_sum_fails(host: FakeHost) -> None:
    result = gv.judge_nccl(context(), 2, nccl_result(20.0, world=2) | {"correct": False}, switches=0)
    assert result.status == gv.FAIL and result.message == "all-reduce returned a wrong sum"


# ----------------------------------------------------------------------------- DCGM


def test_the_recorded_dcgm4_failure_names_the_gpu_and_the_fix(host: FakeHost) -> None:
    host.install("dcgmi")
    host.set(dcgmi={"stdout": str(FIXTURES / "dcgmi/diag_r1_4.2.3.json"), "exit": 226})
    result = gv.check_dcgm(1, 30)
    assert result.status == gv.FAIL
    assert result.message.startswith("dcgmi diag -r 1: software on GPU 0: Persistence Mode: Persistence mode for GPU")
    assert "nvidia-smi -i <gpuId> -pm 1" in result.message


def test_dcgm_passes_warns_and_times_out(host: FakeHost, tmp_path: Path) -> None:
    document = {"DCGM GPU Diagnostic": {"test_categories": [{"category": "Deployment", "tests": [
        {"name": "Denylist", "results": [{"status": "Pass"}]},
        {"name": "PCIe", "results": [{"gpu_ids": "0", "status": "Warn", "warnings": [{"warning": "PCIe replays"}]}]},
    ]}]}}  # fmt: skip
    (tmp_path / "diag.json").write_text(json.dumps(document))
    host.install("dcgmi")
    host.set(dcgmi={"stdout": str(tmp_path / "diag.json")})
    result = gv.check_dcgm(1, 30)
    assert (result.status, result.message) == (gv.WARN, "dcgmi diag -r 1: 1 passed; PCIe on GPU 0: PCIe replays")
    host.set(dcgmi={"hang": True})
    started = time.monotonic()
    assert gv.check_dcgm(1, 1).message == "dcgmi diag -r 1 did not finish in 1 s"
    assert time.monotonic() - started < 30, "the timeout stopped dcgmi (the fake hangs for 300 s)"
    host.set(dcgmi={"stderr": "Error: unable to establish a connection to the specified host engine\n", "exit": 235})
    result = gv.check_dcgm(1, 30)
    assert result.status == gv.FAIL and "sudo systemctl enable --now nvidia-dcgm" in result.message


def test_dcgm_is_skipped_when_absent_and_never_run_at_level_0(host: FakeHost) -> None:
    ctx = context()
    gv.dcgm_checks(ctx)
    assert [(r.id, r.status, r.required) for r in ctx.results] == [("health.dcgm", gv.SKIP, False)]
    host.install("dcgmi")
    host.set(dcgmi={"hang": True})
    ctx = context("--dcgm-level", "0")
    gv.dcgm_checks(ctx)
    assert ctx.results == []


# ----------------------------------------------------------------------------- labels, disks, outputs


def test_cuda_visible_devices_subsets_keep_nvidia_smi_labels(host: FakeHost, monkeypatch) -> None:
    host.set(gpus=[gpu_row(0), gpu_row(1, name="NVIDIA H100 PCIe"), gpu_row(2)])
    ctx = context()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,1")
    assert [(gv.gpu_label(ctx, i), gv.gpu_name(ctx, i)) for i in range(2)] == [(2, H100), (1, "NVIDIA H100 PCIe")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000001,7,0")  # CUDA stops at the first it cannot match
    assert [gpu.index for gpu in gv.visible_gpus(ctx.gpus, "GPU-00000001,7,0")] == [1]


@pytest.mark.parametrize(
    ("name", "rotational", "kind"),
    [("vda", "1", "virtual"), ("xvdb", "1", "virtual"), ("sda", "1", "HDD"), ("nvme0n1", "0", "NVMe")],
)
def test_disk_kinds(name: str, rotational: str, kind: str) -> None:
    assert gv.disk_kind(name, rotational) == kind


def test_junit_and_prometheus_outputs(tmp_path: Path) -> None:
    paths = {kind: tmp_path / "out" / f"verify.{kind}" for kind in ("json", "xml", "prom")}
    paths["prom"].parent.mkdir()
    paths["prom"].write_text("stale 1\n")
    code = gv.main(["--cpu", "--frameworks", "torch", "--env-name", "ci", "--json-out", str(paths["json"]),
                    "--junit", str(paths["xml"]), "--prometheus", str(paths["prom"])])  # fmt: skip
    report = json.loads(paths["json"].read_text())
    suite = ET.fromstring(paths["xml"].read_text())  # noqa: S314 - the XML the test just wrote
    assert suite.tag == "testsuite" and int(suite.get("tests")) == len(report["checks"])
    assert int(suite.get("skipped")) == sum(1 for check in report["checks"] if check["status"] == "skip")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["system.nvidia_smi"].find("skipped") is not None
    prom = paths["prom"].read_text()
    assert "stale" not in prom
    assert 'dlstack_gpu_verify_check_status{env="ci",check="torch.import",category="framework",status="skip"} 1' in prom
    assert f'dlstack_gpu_verify_exit_code{{env="ci"}} {code}' in prom
    assert not list(paths["prom"].parent.glob(".verify.prom.*")), "no temporary file is left behind"


def test_a_failed_check_is_a_junit_failure() -> None:
    report = {
        "host": {"hostname": "gpu01"},
        "environment": {"name": "pytorch"},
        "duration_s": 1.0,
        "generated_at": "2026-12-07T00:00:00+00:00",
        "checks": [
            {"id": "health.gpu[0]", "category": "health", "status": "fail", "message": "Xid 79", "duration_s": 0}
        ],
    }
    suite = ET.fromstring(gv.junit_xml(report))  # noqa: S314 - the XML gpu_verify just made
    assert suite.get("failures") == "1"
    assert suite.find("testcase/failure").get("message") == "Xid 79"


def test_timing_is_judged_on_the_median_and_reports_best_and_spread() -> None:
    timing = gv.Timing([0.010, 0.011, 0.020, 0.012, 0.010])
    assert (timing.median, timing.best) == (0.011, 0.010)
    assert timing.spread == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        gv.Timing([])
