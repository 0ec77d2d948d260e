"""``dlstack data check``: the data against a recorded snapshot of the Ubuntu archive and PyPI.

The committed snapshot (tests/fixtures/datacheck/snapshot.json.xz) was recorded on 2026-11-30 with
``scripts/dlstack data check --record tests/fixtures/datacheck/snapshot.json.xz``; the live run is
``scripts/dlstack data check`` (network). These tests change one fact at a time in a copy of the data
and expect the drift at that file and line.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest

from dlstack import datacheck
from dlstack.cli import main
from dlstack.data import DATA_DIR

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "tests" / "fixtures" / "datacheck" / "snapshot.json.xz"


@pytest.fixture(scope="module")
def snapshot() -> datacheck.Snapshot:
    return datacheck.Snapshot.load(SNAPSHOT)


def test_the_committed_data_has_no_drift_against_the_committed_snapshot(snapshot: datacheck.Snapshot) -> None:
    drifts = datacheck.check(datacheck.DataDir(DATA_DIR), snapshot)
    assert drifts == [], "\n".join(map(str, drifts))


def test_the_snapshot_says_when_and_where_it_was_read(snapshot: datacheck.Snapshot) -> None:
    assert snapshot.recorded == "2026-11-30"
    assert "https://pypi.org/pypi/torch/json" in snapshot.sources
    assert "http://archive.ubuntu.com/ubuntu/dists/noble-updates/InRelease" in snapshot.sources
    assert set(snapshot.ubuntu) == {"22.04", "24.04", "26.04"}


def _copy_with(tmp_path: Path, name: str, old: str, new: str, *, after: str = "") -> tuple[Path, int]:
    """A copy of dlstack/data with the first ``old`` (after the line containing ``after``) replaced; its line."""
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    lines = (data / f"{name}.yml").read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    at = next(i for i in range(start, len(lines)) if old in lines[i])
    lines[at] = lines[at].replace(old, new, 1)
    (data / f"{name}.yml").write_text("".join(lines), encoding="utf-8")
    return data, at + 1


# (file, text to change, its replacement, the line to start looking from, what the drift says)
EDITS = [
    ("pytorch", 'cudnn: "9.26.0.51"', 'cudnn: "9.26.0.50"', "", "torch 2.15.0: cuDNN pin is 9.26.0.51 on PyPI"),
    ("pytorch", 'nccl: "2.30.7"', 'nccl: "2.30.6"', "", "NCCL pin is 2.30.7 on PyPI, the data says 2.30.6"),
    ("pytorch", "pypi_default: cu132", "pypi_default: cu130", "", "CUDA line of PyPI's wheel is 13.2"),
    ("pytorch", '"2.13.0": {torchvision: "0.28.0"', '"2.13.0": {torchvision: "0.27.0"', "", "excludes torch 2.13.0"),
    ("pytorch", 'versions: ["2.15.0"]', 'versions: ["2.15.0", "2.15.9"]', "", "torch 2.15.9 is not a (non-yanked)"),
    ("tensorflow", 'nccl: "2.23.4"', 'nccl: "2.21.5"', "", "tensorflow 2.19.1: [and-cuda] pins nccl 2.23.4"),
    ("tensorflow", 'python: ">=3.10,<3.14"', 'python: ">=3.9,<3.14"', "", "Python floor is 3.10 on PyPI"),
    (
        "ubuntu",
        'version: "595.99.02"',
        'version: "595.99.01"',
        '"24.04":',
        "Ubuntu 24.04 branch 595: version is 595.99.02",
    ),
    (
        "ubuntu",
        'server_version: "595.91.07"',
        'server_version: "595.91.06"',
        '"26.04":',
        "the -server line is 595.91.07",
    ),
    (
        "ubuntu",
        "flavours: [open, server-open]",
        "flavours: [proprietary, open, server-open]",
        '"22.04":',
        "flavours are",
    ),
]

EDITS += [
    ("jax", 'python: ">=3.12,<3.16"', 'python: ">=3.11,<3.16"', "", "jax 0.12.0.1: Python floor is 3.12 on PyPI"),
]


@pytest.mark.parametrize(("name", "old", "new", "after", "says"), EDITS, ids=[f"{e[0]}:{e[1][:24]}" for e in EDITS])
def test_a_fact_changed_by_hand_is_reported_at_its_file_and_line(
    tmp_path: Path, snapshot: datacheck.Snapshot, name: str, old: str, new: str, after: str, says: str
) -> None:
    data, line = _copy_with(tmp_path, name, old, new, after=after)
    drifts = datacheck.check(datacheck.DataDir(data, "data/"), snapshot)
    assert any(d.file == f"data/{name}.yml" and d.line == line and says in d.message for d in drifts), (
        f"expected data/{name}.yml:{line}: ...{says}...; got:\n" + "\n".join(map(str, drifts))
    )


def test_a_missing_pci_id_is_reported(tmp_path: Path, snapshot: datacheck.Snapshot) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = data / "nvidia_pci_ids.yml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    # the first device set written in full ("  name: >-" then its id ranges): drop its first range
    header = next(i for i, line in enumerate(lines) if i > lines.index("device_sets:\n") and line.endswith(": >-\n"))
    indent = lines[header + 1][: len(lines[header + 1]) - len(lines[header + 1].lstrip())]
    lines[header + 1] = indent + " ".join(lines[header + 1].split()[1:]) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    drifts = [
        d for d in datacheck.check(datacheck.DataDir(data, "data/"), snapshot) if d.file == "data/nvidia_pci_ids.yml"
    ]
    assert drifts, "removing an id range from a device set went unnoticed"
    lines = path.read_text(encoding="utf-8").splitlines()
    for drift in drifts:
        assert "run scripts/update_nvidia_pci_ids.py" in drift.message
        assert lines[drift.line - 1].lstrip().startswith(("proprietary:", "open:", "server:", "server-open:")), drift


def test_a_branch_ubuntu_packages_but_drivers_yml_lacks_is_reported(
    tmp_path: Path, snapshot: datacheck.Snapshot
) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = data / "drivers.yml"
    text = path.read_text(encoding="utf-8")
    start = text.index('  "615":\n')
    end = text.index('  "620":\n')
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    drifts = datacheck.check(datacheck.DataDir(data, "data/"), snapshot)
    branches_line = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line == "branches:")
    assert (
        datacheck.Drift(
            "data/drivers.yml",
            branches_line,
            "branch 615 is packaged by Ubuntu 22.04, 24.04, 26.04 (ubuntu.yml) but drivers.yml lacks it: "
            "the resolver can never pick it",
        )
        in drifts
    )


def test_a_branch_the_archive_has_but_ubuntu_yml_lacks_is_reported(
    tmp_path: Path, snapshot: datacheck.Snapshot
) -> None:
    data, line = _copy_with(tmp_path, "ubuntu", '"615": {version: "615.71.09"', "", after='"24.04":')
    path = data / "ubuntu.yml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    del lines[line - 1]  # the 24.04 release's 615 line, now without its key
    path.write_text("".join(lines), encoding="utf-8")
    drivers_line = next(i for i in range(line - 1, 0, -1) if lines[i - 1].strip() == "drivers:")
    assert datacheck.Drift(
        "data/ubuntu.yml",
        drivers_line,
        "Ubuntu 24.04 (noble) packages driver branch 615 (open, server-open; 615.71.09): add it under drivers",
    ) in datacheck.check(datacheck.DataDir(data, "data/"), snapshot)


# ----------------------------------------------------------------------------- pure parts


def _stanza(
    package: str, version: str, depends: str = "", description: str = "x", section: str = "restricted/libs"
) -> dict:
    return {"version": version, "depends": depends, "section": section, "description": description}


def test_archive_branches_counts_a_flavour_only_when_every_role_package_is_real() -> None:
    v = "615.71.09-0ubuntu0.24.04.2"
    packages = {
        "nvidia-driver-615": _stanza(
            "", v, "nvidia-driver-615-open", "Transitional package for nvidia-driver-615-open"
        ),
        "nvidia-driver-615-open": _stanza("", v, "libnvidia-compute-615 (= 615.71.09)"),
        "nvidia-headless-615-open": _stanza("", v),
        "nvidia-headless-no-dkms-615-open": _stanza("", v),
        "nvidia-utils-615": _stanza("", v),
        "libnvidia-compute-615": _stanza("", v),
        "nvidia-headless-615": _stanza("", v, "nvidia-headless-616"),  # names another branch: not real
        "nvidia-fabricmanager-615": _stanza("", "615.71.09-0ubuntu1"),
    }
    branches = datacheck.archive_branches(packages)
    assert branches["615"].flavours == {"open"}
    assert branches["615"].version == "615.71.09"
    assert branches["615"].server_version == ""


def test_fabric_manager_behind_the_server_driver_is_reported() -> None:
    v = "595.91.07-0ubuntu0.24.04.1"
    names = ["nvidia-driver", "nvidia-headless", "nvidia-headless-no-dkms", "nvidia-utils", "libnvidia-compute"]
    packages = {f"{n}-595-server": _stanza("", v) for n in names}
    packages["nvidia-fabricmanager-595"] = _stanza("", "595.58.03-0ubuntu1")
    branch = datacheck.archive_branches(packages)["595"]
    assert (branch.server_version, branch.fabricmanager) == ("595.91.07", "595.58.03")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('nvidia-cudnn-cu13==9.19.0.56; platform_system == "Linux"', ("nvidia-cudnn-cu13", "9.19.0.56")),
        ("torch (==2.6.0)", ("torch", "2.6.0")),
        ("torch ==2.9.0", ("torch", "2.9.0")),
        ('cuda-toolkit[cublas,cudart]==13.0.2; platform_system == "Linux"', ("cuda-toolkit", "13.0.2")),
        ('nvidia-nccl-cu12<3.0,>=2.25.1; extra == "and-cuda"', None),
        ("torch>=2.11", None),
        ("not a requirement ((", None),
    ],
)
def test_pins_are_read_from_both_metadata_styles(text: str, expected: tuple[str, str] | None) -> None:
    assert datacheck.pin(text) == expected


def test_the_cuda_line_comes_from_cuda_toolkit_or_the_runtime_wheel() -> None:
    assert datacheck._cuda_line({"cuda-toolkit": "13.2.2"}) == "13.2"
    assert datacheck._cuda_line({"nvidia-cuda-runtime-cu12": "12.8.90"}) == "12.8"
    assert datacheck._cuda_line({"nvidia-cudnn-cu12": "9.10.2.21"}) == ""


def test_wheel_metadata_is_read_from_the_zip_with_range_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("torch/__init__.py", "x" * 5000)
        wheel.writestr("torch-2.9.0.dist-info/METADATA", "Name: torch\nRequires-Dist: nvidia-nccl-cu12==2.27.5\n")
        wheel.writestr("torch-2.9.0.dist-info/RECORD", "")
    blob = buffer.getvalue()

    def fake_get(url: str, first: int | None = None, last: int | None = None) -> bytes:
        assert first is not None, "the whole wheel was downloaded"
        return blob[first:] if first < 0 else blob[first : None if last is None else last + 1]

    monkeypatch.setattr(datacheck, "_get", fake_get)
    assert "Requires-Dist: nvidia-nccl-cu12==2.27.5" in datacheck._zip_metadata("https://files.pythonhosted.org/x.whl")


def test_the_wheel_read_is_linux_x86_64_for_the_newest_cpython() -> None:
    files = [
        {"filename": "torch-2.9.0-cp314-cp314t-manylinux_2_28_x86_64.whl", "url": "a"},
        {"filename": "torch-2.9.0-cp314-cp314-manylinux_2_28_x86_64.whl", "url": "b"},
        {"filename": "torch-2.9.0-cp39-cp39-manylinux_2_28_x86_64.whl", "url": "c"},
        {"filename": "torch-2.9.0-cp314-cp314-manylinux_2_28_aarch64.whl", "url": "d"},
        {"filename": "torch-2.9.0-cp314-cp314-win_amd64.whl", "url": "e"},
    ]
    assert datacheck._wheel_choice(files)["url"] == "b"


def test_the_command_exits_1_and_prints_file_and_line_for_each_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "check", "--snapshot", str(SNAPSHOT)]) == 0
    assert "0 drift(s) against sources read 2026-11-30" in capsys.readouterr().out
    data, line = _copy_with(tmp_path, "pytorch", 'cudnn: "9.26.0.51"', 'cudnn: "9.26.0.52"')
    assert main(["data", "check", "--snapshot", str(SNAPSHOT), "--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert f"pytorch.yml:{line}: torch 2.15.0: cuDNN pin is 9.26.0.51 on PyPI, the data says 9.26.0.52" in out


def test_a_jax_variant_without_a_plugin_on_pypi_is_reported(tmp_path: Path, snapshot: datacheck.Snapshot) -> None:
    # jax 0.7.1 declares a cuda13 extra, but PyPI has no jax-cuda13-plugin 0.7.1
    data, line = _copy_with(
        tmp_path,
        "jax",
        '      cuda12: {cuda: "12.9", archs: *j12_060',
        '      cuda13: {cuda: "13.0", archs: *j13_072, ptx: "12.0", cudnn: "9.12.0", nccl: "2.27.7"}\n'
        '      cuda12: {cuda: "12.9", archs: *j12_060',
        after='versions: ["0.7.1"]',
    )
    drifts = [str(d) for d in datacheck.check(datacheck.DataDir(data, "data/"), snapshot)]
    assert any(
        d.startswith(f"data/jax.yml:{line}: jax 0.7.1: PyPI has no jax-cuda13-plugin for jax[cuda13]") for d in drifts
    ), drifts


def test_a_jax_variant_pypi_serves_but_the_data_lacks_is_reported(tmp_path: Path, snapshot: datacheck.Snapshot) -> None:
    data, line = _copy_with(tmp_path, "jax", '      cuda12: {cuda: "12.9"', '      #cuda12: {cuda: "12.9"')
    variants_line = line - 2  # "    variants:" above cuda13 and the commented-out cuda12
    drifts = datacheck.check(datacheck.DataDir(data, "data/"), snapshot)
    assert any(
        d.line == variants_line and d.message.startswith("jax 0.12.0.1: PyPI serves jax[cuda12]") for d in drifts
    ), drifts
