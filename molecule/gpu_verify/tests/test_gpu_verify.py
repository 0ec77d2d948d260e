"""Facts about a host verified with the gpu_verify role in --cpu mode (no GPU, no frameworks)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPORT = "/var/lib/dlstack/verify/system.json"


@pytest.fixture(scope="module")
def report(host):
    return json.loads(host.file(REPORT).content_string)


@pytest.fixture(scope="module")
def checks(report):
    return {check["id"]: check for check in report["checks"]}


def test_script_installed(host):
    script = host.file("/usr/local/lib/dlstack/gpu_verify.py")
    assert script.is_file
    assert script.mode == 0o755


def test_the_peaks_table_is_beside_the_script(host, report):
    # every model dlstack knows (a copy of the directory judges any host), from dlstack/data/gpus.yml
    peaks = json.loads(host.file("/usr/local/lib/dlstack/gpu_verify_peaks.json").content_string)
    assert peaks["NVIDIA H100 80GB HBM3"]["bf16"] == 989.5
    assert peaks["NVIDIA H100 80GB HBM3"]["healthy_bf16"] == 0.803
    assert not host.file("/usr/local/lib/dlstack/peaks.json").exists
    # the script found it without --peaks
    assert report["tool"]["peaks_file"] == "/usr/local/lib/dlstack/gpu_verify_peaks.json"
    assert report["tool"]["peak_models"] == len(peaks)


def test_schema_version(report):
    assert report["schema_version"] == 1


def test_ran_on_the_cpu_in_the_system_python(report):
    assert report["mode"] == "cpu"
    assert report["mode_reason"] == "--cpu given"
    assert report["environment"]["name"] == "system"
    assert report["environment"]["python"].startswith("/usr/bin/python3")


@pytest.mark.parametrize(
    "check_id", ["system.nvidia_smi", "system.driver_state", "system.kernel_module", "system.cuda_driver"]
)
def test_system_checks_skipped_with_reason(checks, check_id):
    assert checks[check_id]["status"] == "skip"
    assert checks[check_id]["message"] == "--cpu: GPU checks skipped"


def test_no_warning_about_a_gpu_hidden_by_cpu_mode(checks):
    # auto chose CPU mode because there is no NVIDIA device: nothing to warn about
    assert "system.cpu_mode" not in checks


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_frameworks_skipped_as_not_installed(checks, framework):
    assert checks[f"{framework}.import"]["status"] == "skip"
    assert checks[f"{framework}.import"]["message"] == f"{framework} not installed"


def test_hardware_audit_counts_cpu_cores(checks):
    assert checks["hardware.cpu"]["details"]["physical_cores"] > 0
    assert checks["hardware.cpu"]["status"] in {"pass", "warn"}


def test_hardware_audit_reads_ram(checks):
    assert checks["hardware.ram"]["details"]["ram_gib"] > 0


def test_overall_status_passes(report):
    assert report["summary"]["status"] == "pass"
    assert report["summary"]["exit_code"] == 0
    assert report["summary"]["failed"] == []


def test_fleet_report_rendered_on_the_controller(host):
    # the converge ran playbooks/verify.yml, whose last play renders the fleet report locally
    fleet = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "reports" / "fleet"
    summary = json.loads((fleet / "summary.json").read_text(encoding="utf-8"))
    (entry,) = [item for item in summary["hosts"] if item["host"] == host.backend.get_hostname()]
    assert entry["status"] == "pass"
    html = (fleet / "fleet-report.html").read_text(encoding="utf-8")
    assert f'<table class="checks" data-host="{entry["host"]}">' in html


def test_the_passing_verification_is_recorded_for_the_next_run(host):
    """A re-run verifies again only when what this record's fingerprint covers changed (gpu_verify_rerun)."""
    record = json.loads(host.file("/var/lib/dlstack/verify/last-pass.json").content_string)
    assert record["environments"] == ["system"]
    assert len(record["fingerprint"]) == 64 and record["verified_at"]


def _converge(*extra: str) -> subprocess.CompletedProcess[str]:
    """The scenario's converge (playbooks/verify.yml) once more, against this host."""
    playbook = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"]]
    return subprocess.run([*argv, str(playbook), *extra], capture_output=True, text=True, timeout=900, check=False)


def test_a_rerun_verifies_again_only_when_something_changed_or_when_asked(host):
    """Last in this file: it runs the verification again. Nothing changed since the converge, so the report
    stays as it was (dlstack_verify: changed); with dlstack_verify=always it is written anew."""
    before = json.loads(host.file(REPORT).content_string)["generated_at"]
    again = _converge()
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Verification not re-run on " in " ".join(again.stdout.split()), again.stdout[-3000:]
    assert json.loads(host.file(REPORT).content_string)["generated_at"] == before
    time.sleep(1.1)  # generated_at has whole seconds
    forced = _converge("-e", "dlstack_verify=always")
    assert forced.returncode == 0, forced.stdout[-3000:]
    assert "Verification not re-run" not in forced.stdout
    assert json.loads(host.file(REPORT).content_string)["generated_at"] != before
