"""The data files: they load, every fact has a source, the facts agree with NVIDIA's rules, and
malformed data is rejected with a message naming the file, the place and what is expected."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from dlstack import matrix as matrix_module
from dlstack.data import load
from dlstack.matrix import MatrixError, load_matrix, parse_cc

FILES = ("gpus", "cuda", "drivers", "cudnn", "nccl", "pytorch", "tensorflow", "jax", "ubuntu")


def _records(name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every fact record of a data file (the entries that must carry a source)."""
    data = load(name)
    if name == "gpus":
        yield from ((f"gpus[{g['name']}]", g) for g in data["gpus"])
        yield from ((f"architectures[{k}]", v) for k, v in data["architectures"].items())
    elif name in ("pytorch", "tensorflow", "jax"):
        yield from ((f"releases[{i}]", r) for i, r in enumerate(data["releases"]))
    elif name == "drivers":
        yield from ((f"branches[{k}]", v) for k, v in data["branches"].items())
        yield "rules", data["rules"]
    elif name == "cuda":
        yield from ((f"releases[{k}]", v) for k, v in data["releases"].items())
        yield from ((f"minor_version_compatibility[{k}]", v) for k, v in data["minor_version_compatibility"].items())
    else:
        yield from ((f"releases[{k}]", v) for k, v in data["releases"].items())


@pytest.mark.parametrize("name", FILES)
def test_every_fact_has_a_source_url(name: str) -> None:
    records = list(_records(name))
    assert records
    for where, record in records:
        assert str(record.get("source", "")).startswith(("http://", "https://")), f"{name}.yml {where}"


def test_the_matrix_loads_and_is_sorted_newest_first() -> None:
    m = load_matrix()
    assert [c.version for c in m.cuda] == sorted((c.version for c in m.cuda), reverse=True)
    assert [d.branch for d in m.drivers] == sorted((d.branch for d in m.drivers), reverse=True)
    assert m.frameworks["torch"][0].version > m.frameworks["torch"][-1].version


def test_r580_is_the_last_branch_for_maxwell_pascal_volta() -> None:
    m = load_matrix()
    for arch in ("maxwell", "pascal", "volta"):
        supporting = [d.branch for d in m.drivers if arch in d.architectures]
        assert max(supporting) == 580, arch


def test_open_modules_and_blackwell_rules() -> None:
    m = load_matrix()
    assert m.driver_rules.open_min_cc == parse_cc("7.5")
    assert m.driver_rules.open_required_from_cc == parse_cc("10.0")
    assert min(d.branch for d in m.drivers if "open" in d.kernel_modules) == 515
    assert min(d.branch for d in m.drivers if "blackwell" in d.architectures) == 570
    assert max(d.branch for d in m.drivers if "kepler" in d.architectures) == 470


def test_each_cuda_release_runs_on_the_branch_of_its_toolkit_driver() -> None:
    m = load_matrix()
    for cuda in m.cuda:
        branch = m.driver_branch(cuda.toolkit_driver.branch)
        if branch is not None:
            assert branch.max_cuda >= cuda.version, cuda.name
            assert branch.first_version <= cuda.toolkit_driver, cuda.name


def test_cuda_13_starts_at_turing_and_minor_version_floors() -> None:
    m = load_matrix()
    assert all(c.min_cc == (7, 5) for c in m.cuda if c.major == 13)
    assert str(m.minor_compat[12]) == "525.60.13"
    assert str(m.minor_compat[13]) == "580.65.06"


def test_pypi_defaults_from_the_wheel_metadata() -> None:
    torch = {str(r.version): r for r in load_matrix().frameworks["torch"]}
    default = {v: next(x.name for x in r.variants if x.index == "pypi") for v, r in torch.items()}
    assert default["2.15.0"] == "cu132"
    assert default["2.11.0"] == "cu130"
    assert default["2.9.1"] == "cu128"
    assert default["2.6.0"] == "cu124"
    assert torch["2.15.0"].python.contains("3.11") and not torch["2.15.0"].python.contains("3.10")


def test_ubuntu_releases() -> None:
    ubuntu = load_matrix().ubuntu
    assert {v: r.python for v, r in ubuntu.items()} == {"22.04": "3.10", "24.04": "3.12", "26.04": "3.14"}
    assert {v: r.codename for v, r in ubuntu.items()} == {"22.04": "jammy", "24.04": "noble", "26.04": "resolute"}
    for release in ubuntu.values():
        for branch, packaged in release.drivers.items():
            assert packaged.version.startswith(f"{branch}."), (release.version, branch)
            assert packaged.version_for("server").startswith(f"{branch}."), (release.version, branch)
    assert 470 not in ubuntu["26.04"].drivers
    assert ubuntu["24.04"].nvidia_cuda_toolkit == "12.0.1"


def test_ubuntu_lists_no_transitional_branches() -> None:
    # From the archive's Packages indices: these names only depend on another branch's packages.
    ubuntu = load_matrix().ubuntu
    for release in ubuntu.values():
        for transitional in (535, 550, 565, 570, 575, 590, 610):
            assert transitional not in release.drivers, (release.version, transitional)
    # nvidia-driver-615 and -615-server are transitional to their -open variants: open modules only.
    assert {v: r.drivers[615].kernel_modules for v, r in ubuntu.items()} == {v: {"open"} for v in ubuntu}


def test_ubuntu_server_line_has_its_own_version() -> None:
    packaged = load_matrix().ubuntu["24.04"].drivers[595]
    assert (packaged.version_for("open"), packaged.version_for("server-open")) == ("595.99.02", "595.91.07")
    same = load_matrix().ubuntu["24.04"].drivers[580]
    assert same.server_version == "" and same.version_for("server") == same.version_for("proprietary")
    with pytest.raises(ValueError, match="flavour 'beta' is not one of"):
        packaged.version_for("beta")


@pytest.mark.parametrize(
    "name",
    [
        "H100 SXM",
        "H100 PCIe",
        "H200",
        "B200",
        "A100 SXM4 40GB",
        "A100 SXM4 80GB",
        "A100 PCIe 40GB",
        "A100 PCIe 80GB",
        "L4",
        "L40S",
        "A10",
        "A10G",
        "Tesla T4",
        "Tesla V100 SXM2",
        "Tesla P100 PCIe",
        "GeForce RTX 3090",
        "GeForce RTX 4090",
        "GeForce RTX 5090",
        "RTX 6000 Ada",
    ],
)
def test_datasheet_peaks(name: str) -> None:
    gpu = next(g for g in load_matrix().gpus if g.name == name)
    assert gpu.peaks["fp32"] > 0
    assert gpu.peaks["mem_bw_gbs"] > 0
    if gpu.compute_capability >= (8, 0):
        assert gpu.peaks["bf16"] >= gpu.peaks["tf32"] >= gpu.peaks["fp32"] * 0.99
    if gpu.compute_capability >= (8, 9):  # FP8 tensor cores run at twice the FP16 rate
        assert gpu.peaks["fp8"] == pytest.approx(2 * gpu.peaks["fp16"], rel=0.02)


# ----------------------------------------------------------------------------- malformed data


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict[str, Any]]]:
    """Data files as editable copies; load_matrix() reads them instead of the real files."""
    files = {name: copy.deepcopy(load(name)) for name in FILES}
    monkeypatch.setattr(matrix_module, "load", lambda name: files[name])
    load_matrix.cache_clear()
    yield files
    load_matrix.cache_clear()


def _fails(match: str) -> None:
    with pytest.raises(MatrixError, match=match):
        load_matrix()


def test_unknown_cuda_in_a_pytorch_variant(patched: dict[str, dict[str, Any]]) -> None:
    patched["pytorch"]["releases"][0]["variants"]["cu999"] = {"cuda": "99.9", "archs": ["8.0"]}
    _fails(r"pytorch.yml: releases\[0\].variants.cu999.cuda: CUDA 99.9 is not in cuda.yml")


def test_unquoted_version(patched: dict[str, dict[str, Any]]) -> None:
    patched["cuda"]["releases"]["12.6"]["max_compute_capability"] = 9.0
    _fails(r"cuda.yml: releases.12.6.max_compute_capability: expected str, got 9.0 \(float\)")


def test_unknown_architecture(patched: dict[str, dict[str, Any]]) -> None:
    patched["drivers"]["branches"]["580"]["architectures"].append("fermi")
    _fails(r"drivers.yml: branches.580.architectures: unknown architecture 'fermi'")


def test_first_version_outside_its_branch(patched: dict[str, dict[str, Any]]) -> None:
    patched["drivers"]["branches"]["590"]["first_version"] = "580.65.06"
    _fails(r"branches.590.first_version: 580.65.06 is not in branch 590")


def test_missing_source(patched: dict[str, dict[str, Any]]) -> None:
    del patched["tensorflow"]["releases"][0]["source"]
    _fails(r"tensorflow.yml: releases\[0\]: missing key 'source'")


def test_pinned_cudnn_must_be_known(patched: dict[str, dict[str, Any]]) -> None:
    patched["tensorflow"]["releases"][0]["cudnn"] = "7.6.5"
    _fails(r"cuDNN 7.6.5 is not in cudnn.yml")


def test_default_variant_must_exist(patched: dict[str, dict[str, Any]]) -> None:
    patched["pytorch"]["releases"][0]["pypi_default"] = "cu999"
    _fails(r"pypi_default: 'cu999' is not one of the variants")


def test_duplicate_gpu_alias(patched: dict[str, dict[str, Any]]) -> None:
    patched["gpus"]["gpus"][1]["aliases"].append("Tesla K80")
    _fails(r"name or alias 'tesla k80' is used by two GPUs")


def test_bad_ubuntu_flavour(patched: dict[str, dict[str, Any]]) -> None:
    patched["ubuntu"]["releases"]["24.04"]["drivers"]["580"]["flavours"].append("beta")
    _fails(r"ubuntu.yml: releases.24.04.drivers.580.flavours: unknown flavour 'beta'")


def test_ubuntu_version_outside_its_branch(patched: dict[str, dict[str, Any]]) -> None:
    patched["ubuntu"]["releases"]["24.04"]["drivers"]["595"]["server_version"] = "590.48.01"
    _fails(r"ubuntu.yml: releases.24.04.drivers.595.server_version: 590.48.01 is not in branch 595")


def test_ubuntu_server_version_needs_a_server_flavour(patched: dict[str, dict[str, Any]]) -> None:
    patched["ubuntu"]["releases"]["24.04"]["drivers"]["615"]["server_version"] = "615.71.09"
    patched["ubuntu"]["releases"]["24.04"]["drivers"]["615"]["flavours"] = ["open"]
    _fails(r"drivers.615.server_version: set, but no server or server-open flavour is listed")


def test_ubuntu_packages_source_entries_are_urls(patched: dict[str, dict[str, Any]]) -> None:
    patched["ubuntu"]["releases"]["22.04"]["packages_source"].append("archive.ubuntu.com/multiverse")
    _fails(r"ubuntu.yml: releases.22.04.packages_source\[2\]: expected a URL, got 'archive.ubuntu.com/multiverse'")


def _h100(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return next(g for g in files["gpus"]["gpus"] if g["name"] == "H100 SXM")


def test_healthy_share_is_read_with_its_source() -> None:
    gpu = next(g for g in load_matrix().gpus if g.name == "H100 SXM")
    assert gpu.healthy == {"bf16": 0.803, "fp8": 0.709}


SOURCE = {"source": "https://example.org/measured"}


@pytest.mark.parametrize(
    ("healthy", "message"),
    [
        ({"bf16": 80.3, **SOURCE}, r"healthy.bf16: expected a fraction of the peak in \(0, 1\], got 80.3"),
        ({"int8": 0.9, **SOURCE}, r"healthy.int8: expected one of fp32, tf32, fp16, bf16, fp8, mem_bw"),
        ({"bf16": 0.8}, r"healthy: missing key 'source'"),
    ],
)
def test_bad_healthy_shares_are_refused(
    patched: dict[str, dict[str, Any]], healthy: dict[str, Any], message: str
) -> None:
    _h100(patched)["healthy"] = healthy
    _fails(message)


def test_a_healthy_share_needs_its_peak(patched: dict[str, dict[str, Any]]) -> None:
    gpu = next(g for g in patched["gpus"]["gpus"] if g["name"] == "Tesla T4")
    gpu["healthy"] = {"bf16": 0.8, **SOURCE}
    _fails(r"healthy.bf16: a fraction of which peak\? peaks has no bf16")
