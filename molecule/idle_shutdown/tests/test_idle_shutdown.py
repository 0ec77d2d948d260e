"""The idle-shutdown timer and script on a converged host."""

from __future__ import annotations

import json

SCRIPT = "/usr/local/libexec/dlstack-idle-shutdown.py"
STATE = "/var/lib/dlstack/idle-shutdown.json"


def test_script_is_installed_executable(host):
    script = host.file(SCRIPT)
    assert script.is_file
    assert script.mode == 0o755
    assert script.user == "root"


def test_timer_is_enabled(host):
    assert host.service("dlstack-idle-shutdown.timer").is_enabled


def test_timer_is_active(host):
    assert host.run("systemctl is-active dlstack-idle-shutdown.timer").stdout.strip() == "active"


def test_service_carries_the_settings(host):
    exec_start = host.run("systemctl show -p ExecStart --value dlstack-idle-shutdown.service").stdout
    assert "--idle-hours 3" in exec_start
    assert "--threshold 10" in exec_start
    assert "--dry-run" in exec_start


def test_a_check_without_gpu_reading_records_use_and_keeps_running(host):
    with host.sudo():
        result = host.run("systemctl start dlstack-idle-shutdown.service")
        assert result.rc == 0, result.stderr
        state = json.loads(host.file(STATE).content_string)
    assert state["last_used"] > 0
    assert host.run("systemctl is-system-running --wait").stdout.strip() in {"running", "degraded"}
