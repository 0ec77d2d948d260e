"""gpu_verify's health checks: ECC, row remapping and Xid errors, from recorded tool output.

The nvidia-smi lines follow `nvidia-smi --query-gpu=index,pci.bus_id,ecc.errors.uncorrected.volatile.total,
ecc.errors.uncorrected.aggregate.total,remapped_rows.pending,remapped_rows.failure --format=csv,noheader,nounits`
(bus ids as nvidia-smi prints them, "[N/A]" where a GeForce card has no ECC); the kernel lines follow the
NVRM Xid format of NVIDIA's Xid catalog (https://docs.nvidia.com/deploy/xid-errors/). What only a sick GPU
proves: that the driver really reports these counters and events as recorded here.
"""

from __future__ import annotations

from gpu_verify_script import gv

SMI_HEALTHY_AND_SICK = "0, 00000000:18:00.0, 0, 0, No, No\n1, 00000000:3B:00.0, 2, 5, Yes, No\n"
SMI_GEFORCE = "0, 00000000:01:00.0, [N/A], [N/A], [N/A], [N/A]\n"
KERNEL_LOG = (
    "[    3.120000] nvidia: module license 'NVIDIA' taints kernel.\n"
    "[ 5123.456789] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
    "[ 5200.000001] NVRM: Xid (PCI:0000:18:00): 13, pid=4242, name=python3, Graphics SM Warp Exception on "
    "(GPC 0, TPC 1)\n"
)


def _gpu(index: int, name: str = "NVIDIA H100 80GB HBM3") -> object:
    return gv.GPUInfo(index=index, name=name)


def test_xid_lines_are_parsed_with_their_bus() -> None:
    events = gv.parse_xids(KERNEL_LOG)
    assert [(e["bus"], e["xid"]) for e in events] == [("0000:3b:00", 79), ("0000:18:00", 13)]


def test_kernel_and_nvidia_smi_bus_ids_are_matched() -> None:
    assert gv._same_bus("0000:3b:00", "00000000:3B:00.0")
    assert not gv._same_bus("0000:3b:00", "00000000:18:00.0")
    assert not gv._same_bus("0000:3b:00", None)


def test_a_sick_gpu_fails_naming_each_signal_and_its_fix() -> None:
    rows = gv.parse_health_csv(SMI_HEALTHY_AND_SICK)
    xids = gv.parse_xids(KERNEL_LOG)
    sick = gv.check_health(_gpu(1), rows, xids, "journalctl -k", KERNEL_LOG)
    assert sick.status == gv.FAIL
    assert sick.message.startswith("GPU 1 NVIDIA H100 80GB HBM3 (00000000:3B:00.0): ")
    assert "2 uncorrectable ECC error(s) since the driver loaded: drain the node" in sick.message
    assert "a row remapping is pending: reset the GPU (nvidia-smi -r) or reboot" in sick.message
    assert "Xid 79 seen 1 time(s) since boot: the GPU has fallen off the bus" in sick.message


def test_an_application_xid_only_warns() -> None:
    rows = gv.parse_health_csv(SMI_HEALTHY_AND_SICK)
    result = gv.check_health(_gpu(0), rows, gv.parse_xids(KERNEL_LOG), "journalctl -k", KERNEL_LOG)
    assert result.status == gv.WARN
    assert "Xid 13 seen 1 time(s) since boot (usually an application error)" in result.message


def test_a_healthy_gpu_passes_and_a_geforce_without_ecc_too() -> None:
    rows = gv.parse_health_csv(SMI_HEALTHY_AND_SICK)
    assert gv.check_health(_gpu(0), rows, [], "journalctl -k", "").status == gv.PASS
    geforce = gv.check_health(_gpu(0, "NVIDIA GeForce RTX 4090"), gv.parse_health_csv(SMI_GEFORCE), [], "dmesg", "")
    assert geforce.status == gv.PASS


def test_failed_row_remapping_and_lifetime_ecc() -> None:
    failures, warnings = gv.health_findings(
        {"remapped_rows.failure": "Yes", "ecc.errors.uncorrected.aggregate.total": "3"}, []
    )
    assert failures == ["row remapping failed: the GPU needs replacement (RMA)"]
    assert warnings == ["3 uncorrectable ECC error(s) in the GPU's lifetime (none since the driver loaded)"]


def test_an_unreadable_kernel_log_is_said(monkeypatch) -> None:
    monkeypatch.setattr(gv, "run_command", lambda argv, timeout=60: (1, "", "permission denied"))
    log, why = gv.kernel_log()
    assert log is None and "kernel.dmesg_restrict" in why
    result = gv.check_health(_gpu(0), gv.parse_health_csv(SMI_HEALTHY_AND_SICK), [], why, None)
    assert result.status == gv.WARN and "Xid errors not checked" in result.message


def test_the_health_phase_reads_nvidia_smi_and_the_kernel_log(monkeypatch) -> None:
    def fake(argv, timeout=60):
        if argv[0] == "nvidia-smi":
            return 0, SMI_HEALTHY_AND_SICK, ""
        if argv[0] == "journalctl":
            return 0, KERNEL_LOG, ""
        return 127, "", "not found"

    monkeypatch.setattr(gv, "run_command", fake)
    ctx = gv.Context(args=gv.parse_args(["--expect-gpu"]))
    ctx.cpu = False
    ctx.gpus = [_gpu(0), _gpu(1)]
    gv.health_checks(ctx)
    assert [(r.id, r.status) for r in ctx.results] == [("health.gpu[0]", gv.WARN), ("health.gpu[1]", gv.FAIL)]
