"""Fleet report: rendering from sample gpu_verify JSON, parsed back, and opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from file_module import load_file

from dlstack import report
from dlstack.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "fixtures" / "verify"


class ReportParser(HTMLParser):
    """Collects what the tests assert on: check rows per host table, SVG bars, external resources."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.bars: list[dict[str, str]] = []
        self.svg_count = 0
        self.external: list[str] = []
        self._host: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "table" and "checks" in attributes.get("class", ""):
            self._host = attributes["data-host"]
            self.tables[self._host] = []
        elif tag == "tr" and self._host is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "svg":
            self.svg_count += 1
        elif tag == "rect" and "achieved" in attributes.get("class", ""):
            self.bars.append(attributes)
        if tag in ("script", "link", "img", "iframe") or attributes.get("src"):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._host is not None and self._row:
            self.tables[self._host].append(self._row)
            self._row = None
        elif tag == "table":
            self._host = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    report.build(SAMPLES, out)
    return out


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def sample_reports() -> list[dict]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(SAMPLES.rglob("*.json"))]


def test_failing_host_comes_first(rendered):
    parsed = parse(rendered / report.HTML_NAME)
    assert next(iter(parsed.tables)) == "gpu02"
    assert set(parsed.tables) == {"gpu01", "gpu02", "ci-container"}


def test_one_row_per_check_and_failures_first(rendered):
    parsed = parse(rendered / report.HTML_NAME)
    for sample in sample_reports():
        rows = parsed.tables[sample["host"]["hostname"]]
        assert sorted(row[2] for row in rows) == sorted(check["id"] for check in sample["checks"])
        order = [report.STATUS_ORDER[row[0].lower()] for row in rows]
        assert order == sorted(order), f"{sample['host']['hostname']}: rows not sorted failures first"
    gpu02 = parsed.tables["gpu02"]
    assert gpu02[0][0] == "FAIL"
    assert any("Driver/library version mismatch" in row[3] for row in gpu02)


def test_svg_has_a_bar_per_gpu_measurement(rendered):
    parsed = parse(rendered / report.HTML_NAME)
    expected = [perf for sample in sample_reports() for perf in sample["performance"] if perf["gpu_index"] >= 0]
    assert parsed.svg_count == 1
    assert len(parsed.bars) == len(expected) == 20
    failing = [bar for bar in parsed.bars if "fail" in bar["class"].split()]
    assert {(bar["data-host"], bar["data-metric"]) for bar in failing} == {("gpu02", "matmul_bf16")}
    assert all(float(bar["width"]) > 0 for bar in parsed.bars)


def test_bar_length_is_fraction_of_peak():
    rows = [
        {"host": "h", "gpu_index": 0, "gpu_name": "g", "metric": "matmul_bf16", "achieved": 500.0, "unit": "TFLOP/s"}
        | {"peak": 1000.0, "fraction": 0.5, "min_fraction": 0.5},
        {"host": "h", "gpu_index": 0, "gpu_name": "g", "metric": "matmul_fp32", "achieved": 25.0, "unit": "TFLOP/s"}
        | {"peak": 100.0, "fraction": 0.25, "min_fraction": 0.5},
    ]
    parser = ReportParser()
    parser.feed(report.render_chart(rows))
    first, second = (float(bar["width"]) for bar in parser.bars)
    assert first == pytest.approx(2 * second)
    assert [bar["class"].split()[-1] for bar in parser.bars] == ["pass", "fail"]


def test_html_is_self_contained(rendered):
    text = (rendered / report.HTML_NAME).read_text(encoding="utf-8")
    parsed = parse(rendered / report.HTML_NAME)
    assert parsed.external == []
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text


def test_messages_are_escaped(tmp_path):
    sample = json.loads((SAMPLES / "gpu01" / "pytorch.json").read_text(encoding="utf-8"))
    sample["checks"][0]["message"] = "<script>alert(1)</script>"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.json").write_text(json.dumps(sample), encoding="utf-8")
    report.build(tmp_path / "in", tmp_path / "out")
    text = (tmp_path / "out" / report.HTML_NAME).read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_summary_json(rendered):
    summary = json.loads((rendered / report.SUMMARY_NAME).read_text(encoding="utf-8"))
    assert summary["schema_version"] == report.SUMMARY_SCHEMA_VERSION
    assert summary["totals"] == {"hosts": 3, "hosts_failed": 1, "reports": 3}
    first = summary["hosts"][0]
    assert (first["host"], first["status"]) == ("gpu02", "fail")
    assert set(first["environments"][0]["failed"]) == {
        "system.kernel_module",
        "perf.matmul_bf16[0]",
        "perf.matmul_bf16[1]",
    }
    bf16 = [row for row in summary["performance"] if row["host"] == "gpu01" and row["metric"] == "matmul_bf16"]
    assert [round(row["fraction"], 2) for row in bf16] == [0.75, 0.75]


def test_unsupported_schema_is_rejected(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"schema_version": 99}), encoding="utf-8")
    with pytest.raises(ValueError, match="schema_version 99 is not supported"):
        report.load_reports(tmp_path)


def test_empty_input_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no gpu_verify JSON files"):
        report.load_reports(tmp_path)


def test_cli_report_command(tmp_path, capsys):
    assert cli_main(["report", "--input", str(SAMPLES), "--output", str(tmp_path)]) == 0
    assert "3 host(s), 1 failing" in capsys.readouterr().out
    assert (tmp_path / report.HTML_NAME).is_file()
    assert cli_main(["report", "--input", str(SAMPLES), "--output", str(tmp_path), "--fail-on-failed-hosts"]) == 1


def test_gpu_peaks_from_data_file():
    peaks = report.gpu_peaks(["NVIDIA H100 80GB HBM3", "No Such GPU"])
    assert list(peaks) == ["NVIDIA H100 80GB HBM3"]
    assert peaks["NVIDIA H100 80GB HBM3"]["bf16"] > peaks["NVIDIA H100 80GB HBM3"]["fp32"] > 0
    assert "source" not in peaks["NVIDIA H100 80GB HBM3"]
    healthy = {f"healthy_{key}" for key in ("fp32", "tf32", "fp16", "bf16", "fp8", "mem_bw")}
    assert all(set(metrics) <= set(report.PEAK_METRICS) | healthy for metrics in report.gpu_peaks().values())
    # the share of the peak a healthy H100 SXM measures (gpus.yml `healthy:`, from published measurements)
    assert peaks["NVIDIA H100 80GB HBM3"]["healthy_bf16"] == 0.803


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs Debian's chromium package)")
def test_renders_in_headless_chromium(rendered, tmp_path):
    url = (rendered / report.HTML_NAME).resolve().as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    parsed = ReportParser()
    parsed.feed(dom)
    assert "gpu02" in parsed.tables
    assert len(parsed.tables["gpu02"]) > 5
    assert parsed.svg_count == 1
    assert len(parsed.bars) == 20
    png = tmp_path / "shot.png"
    subprocess.run(
        [*flags, "--window-size=1280,1600", f"--screenshot={png}", url], capture_output=True, timeout=120, check=True
    )
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000  # a blank page compresses to a few hundred bytes


def test_ansible_filter_is_a_thin_adapter():
    module = load_file("dlstack_peaks_filter", ROOT / "plugins" / "filter" / "dlstack_peaks.py")
    filters = module.FilterModule().filters()
    assert filters["dlstack_peaks"]([" NVIDIA H100 80GB HBM3 "]) == report.gpu_peaks(["NVIDIA H100 80GB HBM3"])
    assert filters["dlstack_peaks"]([]) == {}
    with pytest.raises(TypeError, match="expected a list of GPU names"):
        filters["dlstack_peaks"]("NVIDIA H100 80GB HBM3")


def test_role_defaults_and_argument_specs_agree():
    role = ROOT / "roles" / "gpu_verify"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text(encoding="utf-8"))
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    options = specs["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    assert {name: options[name]["default"] for name in defaults} == defaults


def test_each_environment_lists_its_interpreter_and_jupyter_kernel(tmp_path):
    """What an IDE connects to (docs/ide.md) is in the fleet report: the interpreter and the kernel."""
    sample = sample_reports()[0]
    sample["environment"].update(
        name="pytorch", python="/opt/dlstack/envs/pytorch/bin/python", jupyter_kernel="dl-torch"
    )
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "pytorch.json").write_text(json.dumps(sample), encoding="utf-8")
    report.build(tmp_path / "in", tmp_path / "out")
    summary = json.loads((tmp_path / "out" / report.SUMMARY_NAME).read_text(encoding="utf-8"))
    (env,) = summary["hosts"][0]["environments"]
    assert (env["python"], env["jupyter_kernel"]) == ("/opt/dlstack/envs/pytorch/bin/python", "dl-torch")
    text = " ".join("".join(parse(tmp_path / "out" / report.HTML_NAME).text).split())
    assert "pytorch (/opt/dlstack/envs/pytorch/bin/python, Jupyter kernel dl-torch)" in text
