"""README's "Controller only": `scripts/bootstrap controller` on a plain Ubuntu 24.04 machine without
Docker, as a user who is not root, and then the preflight play with the toolchain it installed.

The machine is a plain container from the local `dlstack/ubuntu:24.04-base` image (no systemd, no Docker
inside, host networking) with a copy of the checkout's files (`git ls-files`: no .venv, no caches; the
checkout itself is never mounted). First with python3 alone, where the job must refuse with the
`apt-get install` line (exit 2); then with python3-venv, where it installs .venv. Preflight then runs
against the container itself (`ansible_connection: local`, group dlstack_workstations). pip inside trusts
the control machine's CAs (an HTTPS-inspecting proxy, ENVIRONMENT) through `PIP_CERT`, and the proxy
variables are passed through when set. What only a real lab proves: SSH to real hosts, sudo on them.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "dlstack/ubuntu:24.04-base"
USER = "lab-admin"
HOME = f"/home/{USER}"
CHECKOUT = f"{HOME}/dlstack"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_CONTAINER = "/etc/dlstack-host-ca.pem"
CACHE = Path(os.environ.get("DLSTACK_TEST_CACHE", "/var/cache/dlstack-test"))
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
INVENTORY = f"""all:
  children:
    dlstack_workstations:
      hosts:
        controller-itself:
          ansible_connection: local
          ansible_python_interpreter: /usr/bin/python3
          gpu_verify_report_dir: {HOME}/reports/verify
          gpu_verify_fleet_report_dir: {HOME}/reports/fleet
"""

pytestmark = pytest.mark.integration


def docker(*argv: str, stdin: bytes | None = None, timeout: int = 600) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *argv], input=stdin, capture_output=True, check=False, timeout=timeout)


def sh(name: str, script: str, *, user: str = "root", timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run a shell script in the container (as root, or as the lab user in the checkout copy)."""
    env = [
        "-e",
        "DEBIAN_FRONTEND=noninteractive",
        "-e",
        f"PIP_CERT={CA_IN_CONTAINER}",
        "-e",
        "PIP_CACHE_DIR=/var/cache/pip",
    ]
    env += ["-e", f"DLSTACK_TODAY={os.environ.get('DLSTACK_TODAY', '2026-11-30')}", "-e", "ANSIBLE_FORCE_COLOR=0"]
    env += [arg for var in PROXY_VARIABLES if var in os.environ for arg in ("-e", var)]
    where = ["-u", user, "-w", CHECKOUT] if user != "root" else []
    proc = docker("exec", *env, *where, name, "bash", "-c", script, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def checkout_tar() -> bytes:
    """The checkout's files as git sees them (tracked, and new files it does not ignore), as a tar."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode().split("\0")  # fmt: skip
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for relative in sorted(filter(None, listed)):
            path = ROOT / relative
            if path.is_file() or path.is_symlink():
                tar.add(path, arcname=relative, recursive=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def machine() -> Iterator[str]:
    """A plain Ubuntu 24.04 container with the checkout copied in and python3 (but not python3-venv)."""
    name = f"dlstack-controller-{uuid.uuid4().hex[:8]}"
    pip_cache = CACHE / "pip-controller"
    pip_cache.mkdir(parents=True, exist_ok=True)
    run = docker(
        "run", "-d", "--name", name, "--network", "host",
        "-v", f"{HOST_CA_BUNDLE}:{CA_IN_CONTAINER}:ro", "-v", f"{pip_cache}:/var/cache/pip:rw",
        IMAGE, "sleep", "infinity",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    try:
        setup = sh(name, f"""set -e
            grep -q universe /etc/apt/sources.list || sed -i -E 's/^(deb .* main)$/\\1 universe/' /etc/apt/sources.list
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends python3 >/dev/null
            useradd --create-home --shell /bin/bash {USER}
            mkdir -p {CHECKOUT}
            chown {USER}: /var/cache/pip""")  # fmt: skip
        assert setup.returncode == 0, setup.stdout + setup.stderr
        copy = docker("exec", "-i", name, "tar", "-x", "-C", CHECKOUT, stdin=checkout_tar())
        assert copy.returncode == 0, copy.stderr.decode()
        owned = sh(name, f"chown -R {USER}: {CHECKOUT} && test ! -e {CHECKOUT}/.venv")
        assert owned.returncode == 0, owned.stdout + owned.stderr
        yield name
    finally:
        docker("rm", "--force", name)


def test_controller_install_then_preflight(machine):
    started = time.monotonic()
    # python3 without its venv module: the job says what to install, installs nothing, exit 2
    refused = sh(machine, "scripts/bootstrap controller", user=USER)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "    sudo apt-get install -y python3-venv\n" in refused.stderr
    assert sh(machine, f"test ! -e {CHECKOUT}/.venv").returncode == 0

    venv = sh(machine, "apt-get install -y -qq --no-install-recommends python3-venv >/dev/null")
    assert venv.returncode == 0, venv.stdout + venv.stderr
    install = sh(machine, "scripts/bootstrap controller", user=USER, timeout=1200)
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]
    assert "The toolchain is in .venv" in install.stdout
    print(f"scripts/bootstrap controller: {time.monotonic() - started:.0f} s")

    preflight = sh(machine, f"""set -e
        mkdir -p {HOME}/inventory
        printf '%s' '{INVENTORY}' > {HOME}/inventory/hosts.yml
        .venv/bin/ansible-playbook -i {HOME}/inventory/hosts.yml playbooks/preflight.yml""", user=USER)  # fmt: skip
    output = preflight.stdout + preflight.stderr
    assert preflight.returncode == 0, output[-6000:]
    recap = re.search(r"^controller-itself\s*:\s*(.*)$", preflight.stdout, re.MULTILINE)
    assert recap is not None, output[-6000:]
    assert re.search(r"\bfailed=0\b", recap.group(1)) and re.search(r"\bunreachable=0\b", recap.group(1))
    print(recap.group(0))

    # nothing of Docker came with it: no CLI, no engine, no containerd
    assert sh(machine, "command -v docker dockerd containerd").stdout == ""
    assert sh(machine, "ls /usr/bin/docker /usr/sbin/dockerd /usr/local/bin/docker").returncode != 0
    print(f"controller install and preflight: {time.monotonic() - started:.0f} s")
