"""Lied to: every signed source dlstack adds, served with the wrong key or the wrong bytes.

For each source the role that adds it on a real host runs against a stand-in on a fresh Ubuntu 24.04
container (``files/build-signed-sources.sh``: the packages the role would install, in the real
repository's layout, signed by the key the role pins or by another). The run must stop with a message
that says what did not match and which setting to look at, and leave nothing from the source behind:
no package from it installed, no source or key of it in apt's configuration, no Miniforge, no uv.

- key swapped: the key URL serves another key, which also signed the repository (a compromised
  mirror, or a rotation the pin was not updated for). Only the fingerprint check stands between it and
  the host: without it apt would trust the key and install the stand-in packages (remove the assert in
  ``nvidia_driver/tasks/repository.yml`` or ``container_runtime/tasks/signing_key.yml`` and these fail).
- key file changed (Docker's, whose bytes are pinned by SHA-256 too): refused before gpg reads it.
- re-signed: the key is the pinned one, the repository's InRelease is signed by another. apt refuses
  the index; the role must say so and take its source out again, so that the host's next
  ``apt-get update`` (unattended-upgrades, the user's own) does not fail on it.
- Miniforge from a mirror and uv from a package index, each serving a file with the right name and the
  wrong bytes: the pinned SHA-256 refuses them.

What only the real sources can prove: that the pinned fingerprints are the vendors' current keys (the
roles' scenarios and ``dlstack/data`` carry their sources), and that a real rotation looks like this.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import harness
from throwaway import throwaway_host

from dlstack import python_env

pytestmark = pytest.mark.faults
HERE = Path(__file__).resolve().parent
PLAYBOOK = HERE / "wrong_source.yml"
BUILDER = "/usr/local/bin/build-signed-sources"
TOOLKIT = yaml.safe_load((harness.ROOT / "dlstack" / "data" / "container_toolkit.yml").read_text(encoding="utf-8"))
# what each role would install from the source, at the versions it would ask for
PACKAGES = {
    "cuda": ("flat:ubuntu2404/x86_64", {"cuda-toolkit-12-8": "12.8.93-1"}),
    "nvidia-container-toolkit": (
        "flat:amd64",
        dict.fromkeys(TOOLKIT["nvidia_container_toolkit"]["packages"], TOOLKIT["nvidia_container_toolkit"]["version"]),
    ),
    "docker": ("dists", dict.fromkeys(TOOLKIT["docker"]["packages"], "5:99.0.0-1~ubuntu")),
}
# the setting a user of each source is told to check
SETTING = {
    "cuda": "cuda_toolkit_cuda_repo_key_fingerprint",
    "nvidia-container-toolkit": "container_runtime_nvidia_repository",
    "docker": "container_runtime_docker_repository",
}
GROUP_VARS = """---
common_ca_certificates: "{{ query('ansible.builtin.fileglob', '/usr/local/share/ca-certificates/*.crt') \
| map('community.general.dict_kv', 'src') | list }}"
"""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh 24.04 host with the tools the stand-ins are built with."""
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(GROUP_VARS, encoding="utf-8")
    with throwaway_host("dlstack-wrongkey", "dlstack/ubuntu-systemd:24.04", tmp_path) as name:
        harness.docker_exec(name, "sh", "-c", "apt-get update -qq && apt-get install -qq -y --no-install-recommends "
                            "apt-utils gpg gpg-agent python3-debian >/dev/null")  # fmt: skip
        subprocess.run(
            ["docker", "cp", str(HERE / "files" / "build-signed-sources.sh"), f"{name}:{BUILDER}"], check=True
        )
        yield name, tmp_path / "hosts.yml"


def read(name: str, path: str) -> str:
    return harness.docker_exec(name, "cat", path).stdout.strip()


def attempt(inventory: Path, source: str, signer: str, key: str, fingerprint: str, sha256: str = "") -> harness.Run:
    extra = {"test_source": source, "test_signer": signer, "test_key": key,
             "test_fingerprint": fingerprint, "test_key_sha256": sha256}  # fmt: skip
    return harness.play(inventory, PLAYBOOK, "-e", json.dumps(extra))


def left_behind(name: str, source: str) -> list[str]:
    """What of the source is on the host: its packages, its apt source, its keys."""
    found = []
    for package in PACKAGES[source][1]:
        status = harness.docker_exec(name, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}", package, check=False)
        if status.returncode == 0 and status.stdout.strip() not in ("", "un"):
            found.append(f"package {package} ({status.stdout.strip()})")
    listing = harness.docker_exec(name, "sh", "-c", "ls -A /etc/apt/sources.list.d /etc/apt/keyrings 2>/dev/null")
    apt_files = (f for f in listing.stdout.split() if f.endswith((".sources", ".list", ".asc", ".gpg", ".new")))
    found += [f"apt file {f}" for f in apt_files if f != "ubuntu.sources"]
    return found


def assert_nothing_left(name: str, source: str, case: str) -> None:
    found = left_behind(name, source)
    assert found == [], f"{source}, {case}: left behind {found}"


def refused(run: harness.Run, *expected: str) -> None:
    assert not run.converged, f"the run accepted the source:\n{run.output[-6000:]}"
    for text in expected:
        assert text in run.output, f"the refusal does not say {text!r}:\n{run.output[-6000:]}"


@pytest.mark.parametrize("source", sorted(PACKAGES))
def test_a_signed_apt_source_with_the_wrong_key_is_refused(host: tuple[str, Path], source: str) -> None:
    name, inventory = host
    layout, packages = PACKAGES[source]
    harness.docker_exec(name, BUILDER, source, layout, *(f"{p}={v}" for p, v in packages.items()))
    pinned, other = read(name, "/srv/sources/pinned.fpr"), read(name, "/srv/sources/other.fpr")

    # key swapped, repository signed by that key: the fingerprint check is all that stops it
    run = attempt(inventory, source, "other", "other", pinned)
    refused(run, other, pinned, SETTING[source])
    assert_nothing_left(name, source, "key swapped")

    if source == "docker":  # Docker's key file is pinned by its bytes as well
        run = attempt(inventory, source, "other", "other", pinned, read(name, "/srv/sources/pinned.sha256"))
        refused(run, "checksum", read(name, "/srv/sources/pinned.sha256"))
        assert_nothing_left(name, source, "key file changed")

    # the pinned key, an index signed by another: apt refuses it, the role says so and takes the source out
    run = attempt(inventory, source, "other", "pinned", pinned)
    refused(run, "not signed by the key", SETTING[source])
    assert_nothing_left(name, source, "re-signed")

    # the control: the same stand-in signed by the pinned key is accepted (the refusals above were the keys')
    run = attempt(inventory, source, "pinned", "pinned", pinned)
    listed = harness.docker_exec(name, "apt-cache", "policy", next(iter(packages))).stdout
    assert "/srv/sources/pinned/" in listed, (
        f"{source}: the correctly signed stand-in was not read:\n{run.output[-6000:]}"
    )


# the downloads dlstack pins by SHA-256, each served by a mirror with the right name and the wrong bytes
MINIFORGE = python_env.miniforge_installer(mirror="file:///srv/sources/miniforge")
UV = python_env.load("miniforge")["uv"]
UV_SHA256 = UV["sha256"]["x86_64"]
UV_WHEEL = f"uv-{UV['version']}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
# what the download's own check says: the bytes were checked, the download itself did not fail
MISMATCH = {"miniforge": "did not match", "uv": "DO NOT MATCH THE HASHES"}
TAMPERED = {
    "miniforge": (MINIFORGE["url"].removeprefix("file://"), MINIFORGE["sha256"], "python_env_miniforge_mirror"),
    "uv": (f"/srv/sources/pypi/files/{UV_WHEEL}", UV_SHA256, "python_env_pip_index_url"),
}
# where each would be installed
INSTALLED = {"miniforge": "/opt/miniforge3", "uv": "/opt/dlstack/tools/uv/bin/uv"}


@pytest.mark.parametrize("source", sorted(TAMPERED))
def test_a_pinned_download_with_the_wrong_bytes_is_refused(host: tuple[str, Path], source: str) -> None:
    name, inventory = host
    path, sha256, setting = TAMPERED[source]
    index = f"<a href='../../files/{UV_WHEEL}'>{UV_WHEEL}</a>"
    simple = "/srv/sources/pypi/simple/uv"
    serve = f"mkdir -p $(dirname {path}) {simple} && head -c 4096 /dev/urandom > {path}"
    harness.docker_exec(name, "sh", "-c", f'{serve} && echo "{index}" > {simple}/index.html')
    run = attempt(inventory, source, "pinned", "pinned", "")
    refused(run, sha256, setting, "Nothing was installed", MISMATCH[source])
    assert harness.docker_exec(name, "test", "-e", INSTALLED[source], check=False).returncode == 1, run.output[-6000:]
