"""The collection dlstack.gpu as a user gets it: built from the checkout, installed away from it, applied
by a playbook of the user's own to a throwaway Ubuntu 24.04 host.

1. `pip wheel --no-deps` builds the dlstack package and `scripts/dlstack collection build` the collection
   tarball, both into tmp_path (the package's sources are copied there first, so the build writes nothing
   into the checkout);
2. a fresh venv in tmp_path sees the toolchain's third-party packages (ansible, PyYAML, Jinja2, the
   collections the `ansible` package bundles) through a .pth file naming a view of .venv's site-packages
   without the checkout's editable dlstack install (neither its import hook nor its metadata): `import
   dlstack` fails there until the wheel is installed, which is done as the collection's requirements.txt
   asks, with no index (its dependencies must already be there);
3. `ansible-galaxy collection install -p` puts the tarball in tmp_path/collections (`--offline`: CI has
   no Galaxy, and the collections it depends on come with the `ansible` package);
4. from a working directory in tmp_path, with an empty ansible.cfg, HOME in tmp_path and nothing of the
   checkout on PATH or any other path, a three-line playbook applies `dlstack.gpu.python_env` with a
   small venv (one pure-Python package from PyPI, no framework, so no resolved stack is needed).

The host is checked afterwards for what the role promises: the environment imports its package, and
the local fact names it. The role's filters only resolve as `dlstack.gpu.*` (the build rewrote them), so
a run that plans the environment proves the rewrite and the installed wheel together.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from throwaway import throwaway_host

import dlstack
from dlstack.data import DATA_DIR

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = Path(sysconfig.get_paths()["purelib"])  # .venv's site-packages
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_CONTAINER = "/etc/dlstack-host-ca.pem"
# The user's own playbook: three lines.
PLAYBOOK = "- hosts: all\n  roles:\n    - dlstack.gpu.python_env\n"
# One small environment: a pure-Python package, no Jupyter kernel; plain pip (uv is a PyPI download more).
# pip inside the container trusts the control machine's CAs (an HTTPS-inspecting proxy, ENVIRONMENT).
SETTINGS = {
    "python_env_environments": [{"name": "tiny", "packages": ["six"], "kernel": False}],
    "python_env_uv": False,
    "python_env_pip_cert": CA_IN_CONTAINER,
}

pytestmark = pytest.mark.integration


@dataclass
class User:
    """The user's side: the built artifacts, the fresh venv and what it saw, the process environment."""

    wheel: Path
    tarball: Path
    python: Path
    work: Path
    env: dict[str, str]
    import_before: subprocess.CompletedProcess[str]
    import_after: subprocess.CompletedProcess[str]
    collection: Path


def run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{' '.join(proc.args)}:\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    return proc


def toolchain_view(directory: Path) -> Path:
    """.venv's site-packages less the checkout's editable dlstack (its .pth, import hook and metadata)."""
    directory.mkdir()
    for entry in TOOLCHAIN.iterdir():
        if not re.match(r"(__editable__[._]+)?dlstack", entry.name, re.IGNORECASE):
            (directory / entry.name).symlink_to(entry)
    return directory


def user_env(tmp: Path, venv: Path) -> dict[str, str]:
    """The environment of a user who has the venv and the collection, and no checkout on any path."""
    drop = ("ANSIBLE_", "PYTHON", "VIRTUAL_ENV", "PIP_", "DLSTACK_DATA_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p).resolve().is_relative_to(ROOT)]
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), *path]),
        HOME=str(tmp / "home"),
        ANSIBLE_CONFIG=str(tmp / "work" / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(tmp / "collections"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOWS="1",
    )
    return env


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> User:
    tmp = tmp_path_factory.mktemp("collection")
    dist, work = tmp / "dist", tmp / "work"
    for directory in (dist, work, tmp / "home"):
        directory.mkdir()
    (work / "ansible.cfg").write_text("", encoding="utf-8")

    src = tmp / "src"
    src.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "dlstack", src / "dlstack", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    ok(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src], cwd=tmp))
    wheel = next(dist.glob("dlstack-*.whl"))
    built = ok(run([sys.executable, ROOT / "scripts" / "dlstack", "collection", "build", "--out", dist], cwd=ROOT))
    tarball = Path(built.stdout.strip().splitlines()[-1])

    venv = tmp / "venv"
    ok(run([sys.executable, "-m", "venv", venv], cwd=tmp))
    python = venv / "bin" / "python"
    site = Path(
        ok(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)).stdout.strip()
    )
    (site / "dlstack-toolchain.pth").write_text(f"{toolchain_view(tmp / 'toolchain')}\n", encoding="utf-8")
    env = user_env(tmp, venv)
    probe = ["-c", "import dlstack, dlstack.data; print(dlstack.__file__); print(dlstack.data.DATA_DIR)"]
    import_before = run([python, *probe], cwd=work, env=env)

    galaxy = [python, "-m", "ansible", "galaxy", "collection", "install", "--offline"]
    installed = ok(run([*galaxy, "-p", tmp / "collections", tarball], cwd=work, env=env))
    collection = tmp / "collections" / "ansible_collections" / "dlstack" / "gpu"
    assert collection.is_dir(), installed.stdout
    ok(run([python, "-m", "pip", "install", "-q", "--no-index", "--find-links", dist,
            "-r", collection / "requirements.txt"], cwd=work, env=env))  # fmt: skip
    import_after = run([python, *probe], cwd=work, env=env)
    return User(wheel, tarball, python, work, env, import_before, import_after, collection)


@pytest.fixture(scope="module")
def converged(user: User) -> Iterator[tuple[str, subprocess.CompletedProcess[str], float]]:
    """The user's playbook run against a throwaway 24.04 host; (host, run, seconds)."""
    (user.work / "playbook.yml").write_text(PLAYBOOK, encoding="utf-8")
    (user.work / "group_vars").mkdir()
    (user.work / "group_vars" / "all.yml").write_text(yaml.safe_dump(SETTINGS), encoding="utf-8")
    volumes = (f"{HOST_CA_BUNDLE}:{CA_IN_CONTAINER}:ro",)
    with throwaway_host("dlstack-collection", "dlstack/ubuntu-systemd:24.04", user.work, volumes) as name:
        # a real host has package lists; the debootstrapped image has none
        ok(run(["docker", "exec", name, "apt-get", "update", "-qq"], cwd=user.work))
        started = time.monotonic()
        play = run([user.python, "-m", "ansible", "playbook", "-i", "hosts.yml", "playbook.yml"], cwd=user.work,
                   env=user.env)  # fmt: skip
        yield name, play, time.monotonic() - started


def on_host(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", name, *argv], capture_output=True, text=True, check=False, timeout=60)


def test_the_fresh_python_does_not_see_the_checkout_until_the_wheel_is_installed(user):
    assert user.import_before.returncode != 0
    assert "No module named 'dlstack'" in user.import_before.stderr
    package, data = ok(user.import_after).stdout.split()
    assert Path(package).is_relative_to(user.python.parent.parent), package
    assert not Path(package).resolve().is_relative_to(ROOT)
    assert sorted(p.name for p in Path(data).glob("*.yml")) == sorted(p.name for p in DATA_DIR.glob("*.yml"))


def test_the_wheel_carries_the_data_files(user):
    names = set(zipfile.ZipFile(user.wheel).namelist())
    assert {f"dlstack/data/{p.name}" for p in DATA_DIR.glob("*.yml")} <= names


def test_the_installed_collection_has_the_package_version(user):
    assert user.tarball.name == f"dlstack-gpu-{dlstack.__version__}.tar.gz"
    manifest = json.loads((user.collection / "MANIFEST.json").read_text(encoding="utf-8"))["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == ("dlstack", "gpu", dlstack.__version__)


def test_the_users_playbook_converges_the_host(converged):
    name, play, seconds = converged
    assert play.returncode == 0, play.stdout[-8000:] + play.stderr[-4000:]
    recap = next(line for line in play.stdout.splitlines() if line.startswith(name) and "ok=" in line)
    assert "failed=0" in recap and "unreachable=0" in recap, recap
    print(f"user's playbook: {seconds:.0f} s")


def test_the_environment_imports_its_package_on_the_host(converged):
    name, _, _ = converged
    probe = on_host(name, "/opt/dlstack/envs/tiny/bin/python", "-c", "import six; print(six.__version__)")
    assert probe.returncode == 0, probe.stderr
    lock = on_host(name, "cat", "/opt/dlstack/envs/tiny/dlstack-lock.txt")
    assert f"six=={probe.stdout.strip()}" in lock.stdout


def test_the_local_fact_names_the_environment(converged):
    name, _, _ = converged
    fact = json.loads(ok(on_host(name, "cat", "/etc/ansible/facts.d/python_env.fact")).stdout)
    assert [(e["name"], e["python"], e["frameworks"]) for e in fact["environments"]] == [
        ("tiny", "/opt/dlstack/envs/tiny/bin/python", [])
    ]
