"""Static checks: ansible-lint (production profile), yamllint, ruff, and playbook syntax."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = ["site.yml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "playbooks").glob("*.yml"))]

pytestmark = pytest.mark.lint


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"


def test_ruff_check():
    assert_ok(run(str(BIN / "ruff"), "check", "."))


def test_ruff_format():
    assert_ok(run(str(BIN / "ruff"), "format", "--check", "."))


def test_yamllint():
    assert_ok(run(str(BIN / "yamllint"), "--strict", "."))


def test_ansible_lint_production_profile():
    assert_ok(run(str(BIN / "ansible-lint"), "--profile", "production", "--offline"))


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook):
    assert_ok(run(str(BIN / "ansible-playbook"), "--syntax-check", playbook))
