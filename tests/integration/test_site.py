"""The README's run command on a fresh host: site.yml with the sandbox's settings.

A throwaway container from the local 24.04 image gets the sandbox inventory's group_vars (the
same settings `scripts/bootstrap site` uses). Check mode on the fresh host must not fail, the
converge must succeed, a second run must change nothing, and the PyTorch environment must carry
the CUDA build the resolver chose.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from throwaway import throwaway_host

from dlstack.resolver import resolve

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DLSTACK_TEST_CACHE", "/var/cache/dlstack-test"))
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    inventory = tmp_path_factory.mktemp("inventory")
    (inventory / "group_vars").symlink_to(ROOT / "inventories" / "sandbox" / "group_vars")
    volumes = (f"{CACHE}:/var/cache/dlstack-host:rw",)
    with throwaway_host("dlstack-site", "dlstack/ubuntu-systemd:24.04", inventory, volumes) as name:
        yield name, inventory / "hosts.yml"


def site(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # wheels are cached on the host between runs (the shared test cache)
        [
            "ansible-playbook",
            "site.yml",
            "-i",
            str(inventory),
            "-e",
            "python_env_uv_cache_dir=/var/cache/dlstack-host/uv",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )


def recap(proc: subprocess.CompletedProcess[str], host: str) -> dict[str, int]:
    line = next(line for line in proc.stdout.splitlines() if line.startswith(f"{host} ") and "ok=" in line)
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def test_site_on_a_fresh_host(host):
    name, inventory = host

    check = site(inventory, "--check", "--diff")
    assert check.returncode == 0, check.stdout[-5000:]
    assert recap(check, name)["failed"] == 0

    first = site(inventory)
    assert first.returncode == 0, first.stdout[-5000:]
    assert recap(first, name)["changed"] > 0

    second = site(inventory)
    assert second.returncode == 0, second.stdout[-5000:]
    assert recap(second, name)["changed"] == 0, "a second run of site.yml changed something:\n" + "\n".join(
        line for line in second.stdout.splitlines() if line.startswith(("TASK", "changed"))
    )

    expected = resolve(os="24.04", frameworks=["torch"], driver_line="server").to_dict()["frameworks"]["torch"]
    torch = subprocess.run(
        ["docker", "exec", name, "/opt/dlstack/envs/pytorch/bin/python", "-c",
         "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    version, cuda = json.loads(torch.stdout.strip().splitlines()[-1])
    assert version.split("+")[0] == expected["version"]
    assert cuda == expected["cuda"]
