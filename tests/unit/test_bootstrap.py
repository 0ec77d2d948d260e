"""scripts/bootstrap without installing anything: its functions run against stand-ins for dpkg-query,
apt-get, docker and python on a PATH of their own (the script is sourced: it defines, runs nothing).

What only a real machine proves: `controller` on a fresh Ubuntu container, then preflight with the
toolchain it installed (tests/integration/test_controller_install.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "scripts" / "bootstrap"
APT_LOG = "apt.log"


def stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/bash\n{body}\n", encoding="utf-8")
    path.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH with only what the functions need: no real docker, dpkg-query or apt-get."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for tool in ("dirname", "grep", "cat", "sha256sum", "cut", "timeout"):
        (directory / tool).symlink_to(shutil.which(tool))
    # dpkg-query -W -f='${Status}' NAME: "installed" for the names in $FAKE_INSTALLED
    stub(directory, "dpkg-query", 'for p in $FAKE_INSTALLED; do [ "$p" = "${!#}" ] && { printf "install ok installed"; '
         "exit 0; }; done; exit 1")  # fmt: skip
    stub(directory, "apt-get", f'echo "apt-get $*" >> "{tmp_path / APT_LOG}"')
    stub(directory, "apt-cache", "exit 1")
    return directory


def run_function(bin_dir: Path, call: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = f'source "{BOOTSTRAP}"; export PATH="{bin_dir}"; {call}'
    return subprocess.run(
        ["/bin/bash", "-c", script],
        env={"HOME": str(bin_dir.parent), **env},
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def apt_installs(bin_dir: Path) -> list[str]:
    log = bin_dir.parent / APT_LOG
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return [word for line in lines if " install " in line for word in line.split() if not word.startswith("-")][2:]


def test_a_machine_without_docker_gets_docker_io(bin_dir):
    proc = run_function(bin_dir, "install_apt_packages", FAKE_INSTALLED="")
    assert proc.returncode == 0, proc.stderr
    assert "docker.io" in apt_installs(bin_dir)
    assert "keeping it" not in proc.stdout


@pytest.mark.parametrize("package", ["docker-ce", "containerd.io"])
def test_dockers_own_packages_are_kept(bin_dir, package):
    proc = run_function(bin_dir, "install_apt_packages", FAKE_INSTALLED=package)
    assert proc.returncode == 0, proc.stderr
    assert f"Docker is already installed (the {package} package): keeping it; docker.io is not installed" in proc.stdout
    installs = apt_installs(bin_dir)
    assert "docker.io" not in installs
    assert {"debootstrap", "python3-venv"} <= set(installs)


def docker_client(bin_dir: Path, *, engine: bool) -> None:
    """A `docker` that prints its version; `docker info` answers only when an engine runs."""
    stub(bin_dir, "docker", f"""case "$1" in
  --version) echo "Docker version 28.2.2, build e6534b4" ;;
  info) exit {0 if engine else 1} ;;
esac""")  # fmt: skip


@pytest.mark.parametrize("how", ["engine answering", "dockerd to start"])
def test_a_docker_cli_with_an_engine_is_kept(bin_dir, how):
    docker_client(bin_dir, engine=how == "engine answering")
    if how == "dockerd to start":
        stub(bin_dir, "dockerd", "exit 0")
    proc = run_function(bin_dir, "install_apt_packages", FAKE_INSTALLED="")
    assert proc.returncode == 0, proc.stderr
    assert f"({bin_dir}/docker (Docker version 28.2.2, build e6534b4)): keeping it" in proc.stdout
    assert "docker.io" not in apt_installs(bin_dir)


def test_a_docker_client_alone_gets_docker_io(bin_dir):
    # This kind of CI machine ships a static docker client in /usr/local/bin and no engine
    docker_client(bin_dir, engine=False)
    proc = run_function(bin_dir, "install_apt_packages", FAKE_INSTALLED="")
    assert proc.returncode == 0, proc.stderr
    assert "keeping it" not in proc.stdout
    assert "docker.io" in apt_installs(bin_dir)


def test_an_installed_docker_io_is_not_reported(bin_dir):
    stub(bin_dir, "docker", 'echo "Docker version 20.10.24"')
    proc = run_function(bin_dir, "install_apt_packages", FAKE_INSTALLED="docker.io")
    assert "keeping it" not in proc.stdout
    assert "docker.io" not in apt_installs(bin_dir)


def fake_python(bin_dir: Path, version: str, *, venv: bool) -> str:
    """A python3 that answers the version questions and has, or lacks, ensurepip."""
    major, minor = version.split(".")
    stub(bin_dir, "python-fake", f"""case "$2" in
  *ensurepip*) exit {0 if venv else 1} ;;
  *version_info\\ \\<*) exit {1 if (int(major), int(minor)) < (3, 11) else 0} ;;
  *print*) echo {version} ;;
esac""")  # fmt: skip
    return "python-fake"


@pytest.mark.parametrize(
    ("version", "venv", "message"),
    [
        ("3.12", False, "    sudo apt-get install -y python3.12-venv"),
        ("3.10", True, "ansible-core 2.19 needs Python >= 3.11"),
    ],
)
def test_controller_says_what_to_install(bin_dir, version, venv, message):
    python = fake_python(bin_dir, version, venv=venv)
    proc = run_function(bin_dir, "check_controller_python", DLSTACK_PYTHON=python)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_controller_names_python3_venv_for_the_system_python(bin_dir):
    # the distribution's python3 without its venv module: the package to install is python3-venv
    python = fake_python(bin_dir, "3.12", venv=False)
    (bin_dir / "python3").symlink_to(bin_dir / python)
    proc = run_function(bin_dir, 'system_python() { echo "$PATH/python3"; }; check_controller_python')
    assert proc.returncode == 2
    assert proc.stderr.endswith("    sudo apt-get install -y python3-venv\n")


def test_controller_accepts_a_python_with_venv(bin_dir):
    python = fake_python(bin_dir, "3.12", venv=True)
    proc = run_function(bin_dir, "check_controller_python", DLSTACK_PYTHON=python)
    assert proc.returncode == 0, proc.stderr


def test_unknown_job_lists_controller():
    proc = subprocess.run([str(BOOTSTRAP), "nope"], capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 2
    assert "usage: scripts/bootstrap [setup|site|test|controller]" in proc.stderr
