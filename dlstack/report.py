"""Fleet report: gpu_verify JSON files in, one self-contained HTML file and ``summary.json`` out.

The HTML has no external resources (no JavaScript, no CDN, inline CSS and SVG), so it can be
mailed or opened from a file share. Hosts with failures come first, and inside each host table
failed checks come first. The chart shows, per host, GPU and metric, the achieved throughput as
a fraction of the datasheet peak, with the pass threshold marked.

Also home of :func:`gpu_peaks`, the datasheet peaks that gpu_verify compares against, read from
``dlstack/data/gpus.yml`` (one source of truth) and keyed by the names nvidia-smi prints.
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dlstack.data import load
from dlstack.errors import UserError

SUPPORTED_SCHEMA_VERSIONS = (1,)
SUMMARY_SCHEMA_VERSION = 1
STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
HTML_NAME = "fleet-report.html"
SUMMARY_NAME = "summary.json"
PEAK_METRICS = ("fp32", "tf32", "fp16", "bf16", "fp8", "mem_bw_gbs")


# --------------------------------------------------------------------------------------------
# peaks from the data file
# --------------------------------------------------------------------------------------------


def gpu_peaks(names: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Datasheet peaks keyed by every nvidia-smi name (alias) of each GPU that has them.

    With ``names``, only those names (unknown ones are left out). Values are TFLOP/s for the
    matmul precisions and GB/s for ``mem_bw_gbs``, as gpu_verify's ``--peaks`` file expects, and
    ``healthy_<metric>``: the fraction of that peak a healthy card of the model measures.
    """
    table: dict[str, dict[str, float]] = {}
    for gpu in load("gpus")["gpus"]:
        peaks = gpu.get("peaks") or {}
        metrics = {key: float(peaks[key]) for key in PEAK_METRICS if peaks.get(key) is not None}
        if not metrics:
            continue
        healthy = gpu.get("healthy") or {}
        metrics |= {f"healthy_{key}": float(value) for key, value in healthy.items() if key != "source"}
        for alias in [gpu["name"], *gpu.get("aliases", [])]:
            table[alias] = metrics
    if names is None:
        return table
    return {name: table[name] for name in names if name in table}


# --------------------------------------------------------------------------------------------
# reading gpu_verify output
# --------------------------------------------------------------------------------------------


def load_reports(input_dir: Path) -> list[dict[str, Any]]:
    """Every gpu_verify JSON report under ``input_dir`` (recursively), each tagged with its file."""
    if not input_dir.is_dir():
        raise UserError(f"--input {input_dir}: not a directory (expected the fetched gpu_verify JSON files)")
    reports = []
    for path in sorted(input_dir.rglob("*.json")):
        if path.name == SUMMARY_NAME:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not JSON ({exc})") from exc
        if not isinstance(data, dict) or "schema_version" not in data:
            raise UserError(f"{path}: not a gpu_verify report (no schema_version)")
        if data["schema_version"] not in SUPPORTED_SCHEMA_VERSIONS:
            raise UserError(
                f"{path}: schema_version {data['schema_version']!r} is not supported "
                f"(supported: {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))})"
            )
        if problem := shape_problem(data):
            raise UserError(f"{path}: not a complete gpu_verify report: {problem}")
        data["_source"] = str(path.relative_to(input_dir))
        reports.append(data)
    if not reports:
        raise UserError(f"--input {input_dir}: no gpu_verify JSON files found")
    return reports


# What the report reads from each gpu_verify report without a default (docs/gpu_verify.md has the
# schema): the key, whether it must be there, its JSON type, and the keys it (or each of its items) must have.
REPORT_SHAPE: tuple[tuple[str, bool, type, tuple[str, ...]], ...] = (
    ("summary", True, dict, ("status",)),
    ("checks", False, list, ("id", "status", "message")),
    ("gpus", False, list, ("index", "name")),
    ("performance", False, list, ("gpu_index", "gpu_name", "metric", "achieved", "unit")),
)
_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
}


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def shape_problem(data: dict[str, Any]) -> str | None:
    """What a report lacks that the fleet report needs (see REPORT_SHAPE), or None."""
    for key, required, kind, keys in REPORT_SHAPE:
        if key not in data:
            if required:
                return f"no {key!r} (expected {_JSON_TYPES[kind]} with {', '.join(map(repr, keys))})"
            continue
        value = data[key]
        if not isinstance(value, kind):
            return f"{key!r} is {_json_type(value)}, expected {_JSON_TYPES[kind]}"
        items = [(key, value)] if kind is dict else [(f"{key}[{i}]", item) for i, item in enumerate(value)]
        for where, item in items:
            if not isinstance(item, dict):
                return f"{where} is {_json_type(item)}, expected an object"
            if missing := [name for name in keys if name not in item]:
                return f"{where} has no {', '.join(map(repr, missing))}"
            if "status" in keys and item["status"] not in STATUS_ORDER:
                return f"{where}.status is {item['status']!r}, expected one of {', '.join(STATUS_ORDER)}"
    return None


def host_name(report: dict[str, Any]) -> str:
    """The inventory name (the directory the playbook fetched the file into), else the host's own."""
    return Path(report["_source"]).parent.name or str(report.get("host", {}).get("hostname") or "unknown")


def by_host(reports: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Reports grouped per host; hosts with a failure first, then by name."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        groups.setdefault(host_name(report), []).append(report)
    for group in groups.values():
        group.sort(key=lambda report: report.get("environment", {}).get("name", ""))
    return dict(sorted(groups.items(), key=lambda item: (host_status(item[1]) != "fail", item[0])))


def host_status(reports: Sequence[dict[str, Any]]) -> str:
    return "fail" if any(report["summary"]["status"] == "fail" for report in reports) else "pass"


# --------------------------------------------------------------------------------------------
# summary.json
# --------------------------------------------------------------------------------------------


def summarise(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The machine-readable fleet summary (schema documented in docs/gpu_verify.md)."""
    hosts = []
    performance = []
    for host, group in by_host(reports).items():
        environments = []
        for report in group:
            environment = report.get("environment", {}).get("name", "unknown")
            summary = report["summary"]
            environments.append(
                {
                    "name": environment,
                    "status": summary["status"],
                    "mode": report.get("mode"),
                    "failed": summary.get("failed", []),
                    "counts": {status: summary.get(status, 0) for status in STATUS_ORDER},
                    "frameworks": report.get("environment", {}).get("frameworks", {}),
                    # what an IDE connects to: the interpreter path and the Jupyter kernel
                    "python": report.get("environment", {}).get("python", ""),
                    "jupyter_kernel": report.get("environment", {}).get("jupyter_kernel", ""),
                    "source": report["_source"],
                }
            )
            for perf in report.get("performance", []):
                performance.append({"host": host, "environment": environment, **perf})
        gpus = group[0].get("gpus", [])
        hosts.append({"host": host, "status": host_status(group), "gpus": gpus, "environments": environments})
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "totals": {
            "hosts": len(hosts),
            "hosts_failed": sum(1 for host in hosts if host["status"] == "fail"),
            "reports": len(reports),
        },
        "hosts": hosts,
        "performance": performance,
    }


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0 1em;width:100%}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top;font-size:.9em}
th{background:#f0f0f0}
.status-fail td.status{background:#f8d0d0;font-weight:bold}
.status-warn td.status{background:#fbeec0}
.status-pass td.status{background:#d5f0d5}
.status-skip td.status{color:#777}
.badge{display:inline-block;padding:.1em .6em;border-radius:.6em;color:#fff;font-size:.8em}
.badge.fail{background:#c0392b} .badge.pass{background:#27ae60}
svg text{font-size:12px;font-family:system-ui,sans-serif}
"""

BAR_COLOURS = {"pass": "#27ae60", "fail": "#c0392b", "warn": "#999999"}


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def perf_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Performance entries that belong in the chart (per GPU, not the NCCL all-reduce)."""
    return [row for row in summary["performance"] if row.get("gpu_index", -1) >= 0]


def _bar_status(row: dict[str, Any]) -> str:
    fraction, minimum = row.get("fraction"), row.get("min_fraction")
    if fraction is None:
        return "warn"
    return "pass" if minimum is None or fraction >= minimum else "fail"


def render_chart(rows: Sequence[dict[str, Any]]) -> str:
    """Inline SVG: one horizontal bar per measurement, length = achieved / peak."""
    if not rows:
        return "<p>No performance measurements (CPU-only runs or --skip-perf).</p>"
    label_w, bar_w, row_h, top = 360, 420, 22, 24
    width, height = label_w + bar_w + 240, top + row_h * len(rows) + 10
    scale_max = max(1.0, max((row.get("fraction") or 0) for row in rows))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="perf-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="achieved versus datasheet peak">',
        f'<text x="{label_w}" y="14">0%</text>',
        f'<text x="{label_w + bar_w / scale_max - 30:.1f}" y="14">100% of peak</text>',
        f'<line x1="{label_w + bar_w / scale_max:.1f}" y1="18" x2="{label_w + bar_w / scale_max:.1f}" '
        f'y2="{height - 6}" stroke="#333" stroke-dasharray="4 3"/>',
    ]
    for position, row in enumerate(rows):
        y = top + position * row_h
        fraction = row.get("fraction")
        status = _bar_status(row)
        label = f"{row['host']} · GPU {row['gpu_index']} {row['gpu_name']} · {row['metric']}"
        length = bar_w * (fraction if fraction is not None else 0) / scale_max
        value = (
            f"{row['achieved']:g} / {row['peak']:g} {row['unit']} ({fraction:.0%})"
            if fraction is not None
            else (f"{row['achieved']:g} {row['unit']} (no datasheet peak)")
        )
        parts.append(f'<text x="4" y="{y + 15}">{_esc(label)}</text>')
        parts.append(
            f'<rect class="bar peak" x="{label_w}" y="{y + 3}" width="{bar_w / scale_max:.1f}" height="{row_h - 6}" '
            'fill="#e6e6e6"/>'
        )
        parts.append(
            f'<rect class="bar achieved {status}" data-metric="{_esc(row["metric"])}" data-host="{_esc(row["host"])}" '
            f'x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row_h - 6}" fill="{BAR_COLOURS[status]}">'
            f"<title>{_esc(label)}: {_esc(value)}</title></rect>"
        )
        if row.get("min_fraction") is not None:
            tick = label_w + bar_w * row["min_fraction"] / scale_max
            parts.append(
                f'<line class="threshold" x1="{tick:.1f}" y1="{y + 1}" x2="{tick:.1f}" y2="{y + row_h - 1}" '
                'stroke="#000" stroke-width="2"/>'
            )
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 15}">{_esc(value)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _environment_text(report: Mapping[str, Any]) -> str:
    """An environment as an IDE user needs it: its name, interpreter and Jupyter kernel."""
    env = report.get("environment", {})
    where = [f"<code>{_esc(env['python'])}</code>"] if env.get("python") else []
    where += [f"Jupyter kernel <code>{_esc(env['jupyter_kernel'])}</code>"] if env.get("jupyter_kernel") else []
    return _esc(env.get("name", "?")) + (f" ({', '.join(where)})" if where else "")


def render_host(host: str, group: Sequence[dict[str, Any]]) -> str:
    """One host: its GPUs and one table of every environment's checks, failures first."""
    status = host_status(group)
    rows = []
    for report in group:
        environment = report.get("environment", {}).get("name", "unknown")
        for check in report.get("checks", []):
            rows.append((STATUS_ORDER.get(check["status"], 9), environment, check))
    rows.sort(key=lambda item: (item[0], item[1], item[2]["id"]))
    gpus = ", ".join(f"{gpu['index']}: {gpu['name']}" for gpu in group[0].get("gpus", [])) or "none found"
    out = [
        f'<section class="host" id="host-{_esc(host)}">',
        f'<h2>{_esc(host)} <span class="badge {status}">{status.upper()}</span></h2>',
        f"<p>GPUs: {_esc(gpus)}. Environments: " + ", ".join(_environment_text(report) for report in group) + "</p>",
        f'<table class="checks" data-host="{_esc(host)}">',
        "<thead><tr><th>Status</th><th>Environment</th><th>Check</th><th>Message</th></tr></thead><tbody>",
    ]
    for _, environment, check in rows:
        out.append(
            f'<tr class="status-{_esc(check["status"])}"><td class="status">{_esc(check["status"].upper())}</td>'
            f"<td>{_esc(environment)}</td><td>{_esc(check['id'])}</td><td>{_esc(check['message'])}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return "\n".join(out)


def render_html(reports: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The whole self-contained report."""
    groups = by_host(reports)
    totals = summary["totals"]
    overview = [
        '<table class="overview"><thead><tr><th>Host</th><th>Status</th><th>Failed checks</th></tr></thead><tbody>'
    ]
    for host in summary["hosts"]:
        failed = sorted({f"{env['name']}: {check}" for env in host["environments"] for check in env["failed"]})
        overview.append(
            f'<tr class="status-{host["status"]}">'
            f'<td><a href="#host-{_esc(host["host"])}">{_esc(host["host"])}</a></td>'
            f'<td class="status">{host["status"].upper()}</td><td>{_esc("; ".join(failed) or "-")}</td></tr>'
        )
    overview.append("</tbody></table>")
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>dlstack GPU verification</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>dlstack GPU verification</h1>",
        f"<p>{totals['hosts']} host(s), {totals['hosts_failed']} failing, {totals['reports']} report(s); "
        f"generated {_esc(summary['generated_at'])}.</p>",
        *overview,
        "<h2>Throughput against datasheet peak</h2>",
        "<p>Bar: achieved as a fraction of the datasheet dense peak (grey: 100 %); black tick: the pass "
        "threshold; red: below it; grey bar only: no datasheet peak known for that GPU.</p>",
        render_chart(perf_rows(summary)),
        *(render_host(host, group) for host, group in groups.items()),
        "</body></html>",
    ]
    return "\n".join(body) + "\n"


def build(input_dir: Path, output_dir: Path) -> dict[str, Any]:
    """Read the reports, write ``fleet-report.html`` and ``summary.json``; return the summary."""
    reports = load_reports(input_dir)
    summary = summarise(reports)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / HTML_NAME).write_text(render_html(reports, summary), encoding="utf-8")
    (output_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
