"""gpu_verify's parsers against real nvidia-smi outputs (tests/fixtures/nvidia_smi, sources inside)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpu_verify_script import gv

ROOT = Path(__file__).resolve().parents[2]
SMI = ROOT / "tests" / "fixtures" / "nvidia_smi"


def read(name: str) -> str:
    return (SMI / name).read_text(encoding="utf-8")


def test_every_fixture_names_its_source():
    for path in SMI.iterdir():
        if path.suffix == ".source":
            continue
        text = path.read_text(encoding="utf-8")
        sidecar = path.with_name(path.name + ".source")
        assert "# source: https://" in text or sidecar.exists(), f"{path.name} has no source"


@pytest.mark.parametrize(
    ("fixture", "name", "driver", "cuda", "persistence", "uuid"),
    [
        (
            "a100_sxm4_80gb_q.txt",
            "NVIDIA A100-SXM4-80GB",
            "470.103.01",
            "11.4",
            "Enabled",
            "GPU-a75cda02-62ce-2c30-9150-555ef08935e2",
        ),
        ("tesla_t4_q.txt", "Tesla T4", "460.32.03", "11.2", "Disabled", "GPU-1b965d81-1d0f-6501-027c-1ecc1437f5ea"),
        ("tesla_k80_q.txt", "Tesla K80", "418.40.04", "10.1", "Disabled", "GPU-fa47c254-9528-4baf-b9fc-b669a1124986"),
    ],
)
def test_q_text_product_and_versions(fixture, name, driver, cuda, persistence, uuid):
    versions, gpus = gv.parse_smi_q_text(read(fixture))
    assert versions == {"driver_version": driver, "cuda_version": cuda}
    assert len(gpus) == 1
    assert gpus[0].name == name
    assert gpus[0].persistence_mode == persistence
    assert gpus[0].uuid == uuid
    assert gpus[0].driver_version == driver


def test_q_text_nested_keys_do_not_leak_into_gpu_fields():
    # "MIG Mode > Current : Disabled" and "Driver Model > Current : N/A" must not be read as ECC
    _, gpus = gv.parse_smi_q_text(read("a100_sxm4_80gb_q.txt"))
    assert gpus[0].ecc_mode is None
    assert gpus[0].memory_total_mib is None


def test_q_text_cuda_not_found_is_none():
    versions, gpus = gv.parse_smi_q_text(read("rtx_pro_6000_q_memory.txt"))
    assert versions == {"driver_version": "580.105.06", "cuda_version": None}
    assert len(gpus) == 1
    assert gpus[0].name == "unknown"  # -d MEMORY,PERFORMANCE prints no product name


def test_q_text_fragment_reads_nested_pcie_generation():
    # "PCI > GPU Link Info > PCIe Generation > Max/Current", not "GPU Operation Mode > Current"
    versions, (gpu,) = gv.parse_smi_q_text(read("gtx960_q_pci_fragment.txt"))
    assert versions == {"driver_version": None, "cuda_version": None}
    assert (gpu.pcie_gen_max, gpu.pcie_gen_current) == (2, 1)
    assert gpu.pcie_width_max is None


def test_xml_without_cuda_version():
    versions, (gpu,) = gv.parse_smi_xml(read("geforce_410m.xml"))
    assert versions == {"driver_version": "390.157", "cuda_version": None}
    assert gpu.name == "GeForce 410M"
    assert gpu.persistence_mode == "Disabled"
    assert gpu.memory_total_mib is None
    assert gpu.uuid == "GPU-xxxxx11f-ce5d-xxxx-xxxx-6ea62fb1xxxx"


def test_xml_v100s():
    versions, gpus = gv.parse_smi_xml(read("tesla_v100s_pcie_32gb.xml"))
    assert versions == {"driver_version": "460.73.01", "cuda_version": "11.2"}
    (gpu,) = gpus
    assert gpu.name == "Tesla V100S-PCIE-32GB"
    assert gpu.memory_total_mib == 32510
    assert gpu.ecc_mode == "Enabled"
    assert gpu.persistence_mode == "Disabled"
    assert (gpu.pcie_gen_current, gpu.pcie_gen_max, gpu.pcie_width_current, gpu.pcie_width_max) == (3, 3, 16, 16)
    assert gpu.temperature_c == 66.0
    assert gpu.compute_capability is None  # driver 460 has no <compute_cap>


def test_xml_v100s_health_reports_disabled_persistence_only():
    _, (gpu,) = gv.parse_smi_xml(read("tesla_v100s_pcie_32gb.xml"))
    findings = gv.gpu_health_findings(gpu, max_temp_c=85)
    assert findings == ["persistence mode disabled (enable nvidia-persistenced)"]
    assert gv.gpu_health_findings(gpu, max_temp_c=60)[-1] == "temperature 66 C above 60 C"


def test_query_csv_with_header():
    rows = gv.parse_query_csv(read("titan_v_rtx5880_query.csv"))
    assert [row["name"] for row in rows] == ["NVIDIA TITAN V", "NVIDIA RTX 5880 Ada Generation"]
    gpus = gv.gpus_from_query(rows)
    assert [(gpu.index, gpu.compute_capability, gpu.driver_version) for gpu in gpus] == [
        (0, "7.0", "570.86.15"),
        (1, "8.9", "570.86.15"),
    ]


def test_query_csv_noheader_nounits_as_gpu_verify_asks():
    # the shape of `--format=csv,noheader,nounits` for QUERY_FIELDS, values as on an H100 SXM
    line = "0, NVIDIA H100 80GB HBM3, GPU-x, 81559, 550.54.15, Enabled, Enabled, 5, 5, 16, 16, 28, 9.0, 5, 5"
    (gpu,) = gv.gpus_from_query(gv.parse_query_csv(line, gv.QUERY_FIELDS))
    assert gpu.memory_total_mib == 81559
    assert (gpu.pcie_gen_max, gpu.pcie_width_current) == (5, 16)
    assert gpu.compute_capability == "9.0"
    assert gpu.temperature_c == 28.0
    assert (gpu.pcie_gen_gpumax, gpu.pcie_gen_hostmax) == (5, 5)


def test_query_csv_na_values_become_none():
    line = "0, Tesla T4, GPU-y, 15360, 460.32.03, [N/A], Disabled, [N/A], 3, 16, 16, 40, 7.5, [N/A], [N/A]"
    (gpu,) = gv.gpus_from_query(gv.parse_query_csv(line, gv.QUERY_FIELDS))
    assert gpu.ecc_mode is None
    assert gpu.pcie_gen_current is None


def test_query_csv_rejects_wrong_field_count():
    with pytest.raises(ValueError, match="2 values for 3 fields"):
        gv.parse_query_csv("a, b", ["index", "uuid", "memory.total"])


@pytest.mark.parametrize(
    ("text", "version"),
    [
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
            "GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04)\n",
            "535.104.05",
        ),
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  "
            "(dvs-builder@U16-I3-B03-4-3)  Thu Jan 23 2025\n",
            "570.86.15",
        ),
        ("NVRM version: NVIDIA UNIX aarch64 Kernel Module  550.54.15  Tue Mar  5 2024\n", "550.54.15"),
        ("garbage\n", None),
    ],
)
def test_kernel_module_version(text, version):
    assert gv.parse_kernel_module_version(text) == version


def test_cpuinfo_cores_and_flags():
    block = "processor\t: {p}\nmodel name\t: Xeon\nphysical id\t: 0\ncore id\t\t: {c}\n"
    block += "flags\t\t: fpu avx2 avx512f amx_tile\n\n"
    text = "".join(block.format(p=p, c=p // 2) for p in range(4))  # 4 threads on 2 cores
    info = gv.parse_cpuinfo(text)
    assert (info["logical_cpus"], info["physical_cores"]) == (4, 2)
    assert {"avx512f", "amx_tile"} <= info["flags"]


def test_meminfo_total():
    assert gv.parse_meminfo_total_gib("MemTotal:       263921716 kB\nMemFree: 1 kB\n") == pytest.approx(251.7, abs=0.1)


@pytest.mark.parametrize(
    ("name", "rotational", "kind"),
    [("nvme0n1", "0\n", "NVMe"), ("sda", "0\n", "SSD"), ("sdb", "1\n", "HDD"), (None, None, "unknown")],
)
def test_disk_kind(name, rotational, kind):
    assert gv.disk_kind(name, rotational) == kind
