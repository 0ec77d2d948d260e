"""The integration tests' throwaway hosts keep their verification reports beside their inventory.

tests/integration/throwaway.py writes each throwaway host's inventory; the report directories are host
variables there, so no playbook a test runs against such a host writes into the checkout's reports/
(the user's). Read back here with ansible-inventory, in the layout test_site.py uses (the sandbox's
group_vars beside it), and checked against the preflight's variable checks. What only the integration
tier proves: that a run of site.yml, verify.yml or upgrade.yml then really writes there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from file_module import load_file

from dlstack import inventory_checks

ROOT = Path(__file__).resolve().parents[2]
HOST = "dlstack-site-0123abcd"


def _throwaway() -> ModuleType:
    module = load_file("throwaway", ROOT / "tests" / "integration" / "throwaway.py")
    return module


def _host_vars(inventory_dir: Path) -> dict[str, object]:
    (inventory_dir / "group_vars").symlink_to(ROOT / "inventories" / "sandbox" / "group_vars")
    hosts = inventory_dir / "hosts.yml"
    hosts.write_text(_throwaway().inventory_text(HOST, inventory_dir), encoding="utf-8")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(hosts), "--host", HOST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


def test_reports_go_beside_the_inventory_not_into_the_checkout(tmp_path: Path) -> None:
    host_vars = _host_vars(tmp_path)
    assert host_vars["gpu_verify_report_dir"] == str(tmp_path / "reports" / "verify")
    assert host_vars["gpu_verify_fleet_report_dir"] == str(tmp_path / "reports" / "fleet")


def test_the_preflight_accepts_the_report_variables(tmp_path: Path) -> None:
    host_vars = _host_vars(tmp_path)
    report_vars = {name: value for name, value in host_vars.items() if name.startswith("gpu_verify_")}
    assert set(report_vars) == {"gpu_verify_report_dir", "gpu_verify_fleet_report_dir"}
    roles = ROOT / "roles"
    assert inventory_checks.unknown_variables(report_vars, inventory_checks.role_options(roles)) == []
    assert inventory_checks.type_problems(report_vars, inventory_checks.role_specs(roles)) == []
