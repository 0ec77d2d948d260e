"""Faults: a converge is interrupted, locked out, cut off or starved of disk; a plain re-run converges.

Each test is one fault injected at a random point of ``site.yml`` on a fresh throwaway Ubuntu 24.04
container (the real apt, dpkg and archive; PyPI for the environment). Then, with nothing fixed by
hand, ``site.yml`` runs again and must converge, and once more with changed=0. The files a user keeps
in the data directory are checksummed before the fault and after the last run.

Trials: ``DLSTACK_FAULT_TRIALS`` per fault (1 in CI, where the tier's time is budgeted; 20 or more
with ``scripts/benchmark faults --trials 20``). ``DLSTACK_FAULT_SEED`` replays a run's random points.
Each trial appends its outcome to ``.cache/logs/faults.jsonl``, which ``scripts/benchmark faults``
tabulates.

What a container cannot prove: a power cut of the host itself (the kernel's page cache and the
filesystem journal); the VM tier's reboot tests cover a clean reboot only.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# harness and throwaway (tests/integration) are imported as top-level modules, as the integration tests do
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import harness
from throwaway import throwaway_host

pytestmark = pytest.mark.faults
TRIALS = int(os.environ.get("DLSTACK_FAULT_TRIALS", "1"))
SEED = int(os.environ.get("DLSTACK_FAULT_SEED", str(random.SystemRandom().randrange(2**32))))
SITE = harness.ROOT / "site.yml"
RESULTS = Path(os.environ.get("DLSTACK_FAULT_RESULTS", harness.ROOT / ".cache" / "logs" / "faults.jsonl"))
DATA = "/data"
# the user's own files, made before the first run (the data directory of a lab machine in use)
USER_FILES = ("datasets/imagenet-subset.bin", "models/checkpoint-0042.pt", "notes.txt")
GROUP_VARS = """---
common_ca_certificates: "{{ query('ansible.builtin.fileglob', '/usr/local/share/ca-certificates/*.crt') \
| map('community.general.dict_kv', 'src') | list }}"
common_data_dir: /data
"""
SANDBOX_RUNTIME_VARS = harness.ROOT / "inventories" / "sandbox" / "group_vars" / "all" / "container_runtime.yml"
# keys a user put in daemon.json before dlstack came (a lab registry mirror, the lab's DNS)
USER_DAEMON_JSON = {"registry-mirrors": ["https://registry-mirror.lab.invalid"], "dns": ["10.0.0.53"]}


def rng_for(fault: str, trial: int) -> random.Random:
    """The random points of one trial: reproducible from the seed printed in the failure message."""
    return random.Random(f"{SEED}-{fault}-{trial}")  # noqa: S311 - test randomness, not a secret


@pytest.fixture
def host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """A fresh 24.04 host with a user's files in /data (a small tmpfs where the test asks for one)."""
    marker = request.node.get_closest_marker("data_tmpfs")
    # exec: Docker mounts a tmpfs noexec by default, and an environment's compiled modules are mapped executable
    tmpfs = (f"{DATA}:size={marker.args[0]},exec",) if marker else ()
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "main.yml").write_text(GROUP_VARS, encoding="utf-8")
    # Docker in a container without NET_ADMIN: the sandbox's own settings
    (tmp_path / "group_vars" / "all" / "container_runtime.yml").symlink_to(SANDBOX_RUNTIME_VARS)
    with throwaway_host("dlstack-faults", "dlstack/ubuntu-systemd:24.04", tmp_path, tmpfs=tmpfs) as name:
        for path in USER_FILES:
            make = f"mkdir -p $(dirname {DATA}/{path}) && head -c 1500000 /dev/urandom > {DATA}/{path}"
            harness.docker_exec(name, "sh", "-c", make)
        yield name, tmp_path / "hosts.yml"


def record(fault: str, trial: int, **outcome: object) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"fault": fault, "trial": trial, "seed": SEED, "time": time.time(), **outcome}) + "\n")


def recover(
    fault: str, trial: int, name: str, inventory: Path, before: dict[str, str], *extra: str, **seen: object
) -> None:
    """The plain re-run: it must converge, the next must change nothing, the user's files must be as they were."""
    rerun = harness.play(inventory, SITE, *extra)
    again = harness.play(inventory, SITE, *extra) if rerun.converged else rerun
    after = harness.data_checksums(name, DATA)
    intact = all(after.get(path) == digest for path, digest in before.items())
    record(fault, trial, converged=rerun.converged, idempotent=again.converged and again.recap["changed"] == 0,
           data_intact=intact, rerun_s=round(rerun.seconds, 1), **seen)  # fmt: skip
    where = f"(fault {fault}, trial {trial}, DLSTACK_FAULT_SEED={SEED})"
    assert rerun.converged, f"the re-run after the fault did not converge {where}:\n{rerun.output[-6000:]}"
    assert again.recap["changed"] == 0, f"the run after the re-run changed things {where}:\n{again.output[-6000:]}"
    assert intact, f"the user's files changed {where}: before {before}, after {after}"
    assert harness.docker_exec(name, "dpkg", "--audit").stdout == "", f"dpkg is left half-way {where}"


def user_files(name: str) -> dict[str, str]:
    sums = harness.data_checksums(name, DATA)
    assert len(sums) == len(USER_FILES), sums
    return sums


@pytest.mark.parametrize("trial", range(TRIALS))
def test_ansible_killed_at_a_random_task(host: tuple[str, Path], trial: int) -> None:
    name, inventory = host
    before = user_files(name)
    task = rng_for("sigkill", trial).randint(5, 60)  # a fresh converge of the common tag runs about 66
    killed = harness.play(inventory, SITE, "--tags", "common", on_line=harness.kill_at_task(task))
    assert killed.killed, f"the run ended before task {task}: {killed.output[-3000:]}"
    recover("sigkill", trial, name, inventory, before, "--tags", "common", injected_at=f"task {task}")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_dpkg_killed_mid_unpack(host: tuple[str, Path], trial: int) -> None:
    name, inventory = host
    before = user_files(name)
    delay = rng_for("dpkg", trial).uniform(0.0, 1.5)
    stop = threading.Event()
    watcher = harness.kill_dpkg_mid_unpack(name, stop, delay)
    faulted = harness.play(inventory, SITE, "--tags", "common")
    stop.set()
    watcher.join(timeout=10)
    assert watcher.hit, f"dpkg was never caught unpacking (the run: rc {faulted.rc}):\n{faulted.output[-3000:]}"  # type: ignore[attr-defined]
    assert not faulted.converged, "the run went on as if dpkg had not been killed"
    recover("dpkg", trial, name, inventory, before, "--tags", "common", injected_at=f"{delay:.2f} s into an unpack")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_apt_lock_held_longer_than_a_minute(host: tuple[str, Path], trial: int) -> None:
    """The faulted run itself must wait for the lock (dlstack_apt_lock_timeout), not fail and need a re-run."""
    name, inventory = host
    before = user_files(name)
    after_s, hold_s = rng_for("lock", trial).uniform(0, 20), 75.0
    holder = harness.hold_apt_locks(name, hold_s, after_s)
    started = time.time()
    waited = harness.play(inventory, SITE, "--tags", "common")
    held_at = float(harness.docker_exec(name, "cat", "/run/dlstack-fault-lock.held").stdout or 0)
    holder.join(timeout=hold_s + 60)
    assert waited.converged, f"the run did not wait for the apt lock (held {hold_s:.0f} s):\n{waited.output[-6000:]}"
    # the holder got the lock while the run was on, and the run outlasted the hold: it waited
    assert started < held_at < started + waited.seconds - hold_s + 5, "the lock was not held while the run ran"
    again = harness.play(inventory, SITE, "--tags", "common")
    after = user_files(name)
    record("lock", trial, converged=True, idempotent=again.recap.get("changed") == 0,
           data_intact=after == before, injected_at=f"{after_s:.1f} s, held {hold_s:.0f} s")  # fmt: skip
    assert again.recap["changed"] == 0, again.output[-6000:]
    assert after == before


@pytest.mark.data_tmpfs("400m")
@pytest.mark.parametrize("trial", range(TRIALS))
def test_data_directory_full_during_an_environment_install(host: tuple[str, Path], trial: int) -> None:
    """The environment lives on the data directory's filesystem, which fills up during its install."""
    name, inventory = host
    before = user_files(name)
    tools = {"name": "tools", "packages": ["numpy", "pandas"]}
    env = {"python_env_envs_dir": f"{DATA}/envs", "python_env_environments": [tools]}
    extra = ("--tags", "common,envs", "-e", json.dumps(env))
    # even trials (CI's) cut the venv's own creation off (its pip half-installed: the case that needed a
    # fix); odd trials leave room for the venv (about 20 MB) and cut the package install off
    free_mb = rng_for("disk", trial).randint(*((1, 15) if trial % 2 == 0 else (25, 60)))
    fill = f"head -c $(( $(df -B1 --output=avail {DATA} | tail -1) - {free_mb} * 1048576 )) /dev/zero > {DATA}/.ballast"
    harness.docker_exec(name, "sh", "-c", fill)
    faulted = harness.play(inventory, SITE, *extra)
    assert not faulted.converged, f"the environment fit in {free_mb} MB: no fault"
    began = harness.docker_exec(name, "test", "-e", f"{DATA}/envs/tools", check=False)
    assert began.returncode == 0, "the environment install never began: the fault hit something else"
    harness.docker_exec(name, "rm", "-f", f"{DATA}/.ballast")
    recover("disk", trial, name, inventory, before, *extra, injected_at=f"{free_mb} MB free")
    python = f"{DATA}/envs/tools/bin/python"
    assert harness.docker_exec(name, python, "-c", "import numpy, pandas").returncode == 0


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_user_s_own_changes_survive_a_killed_run(host: tuple[str, Path], trial: int) -> None:
    """A run that changes the environment and daemon.json is killed; the user's package and keys stay.

    The user had daemon.json keys of their own before dlstack came, and added a package to a
    dlstack environment after it; then a setting changed (one more package, a daemon.json key), and
    the run applying it was killed inside container_runtime or python_env.
    """
    name, inventory = host
    before = user_files(name)
    harness.docker_exec(
        name, "sh", "-c", f"mkdir -p /etc/docker && echo '{json.dumps(USER_DAEMON_JSON)}' > /etc/docker/daemon.json"
    )
    tools = {"name": "tools", "packages": ["numpy"]}
    tags = ("--tags", "common,runtime,envs")
    first = harness.play(inventory, SITE, *tags, "-e", json.dumps({"python_env_environments": [tools]}))
    assert first.converged, first.output[-6000:]
    python = "/opt/dlstack/envs/tools/bin/python"
    harness.docker_exec(name, python, "-m", "pip", "install", "--quiet", "cowsay")
    changed = {
        "python_env_environments": [{**tools, "packages": ["numpy", "tqdm"]}],
        "container_runtime_log_max_size": "20m",
    }
    extra = (*tags, "-e", json.dumps(changed))
    rng = rng_for("user", trial)
    role, task = rng.choice(["container_runtime", "python_env"]), rng.randint(1, 25)
    killed = harness.play(inventory, SITE, *extra, on_line=harness.kill_at_task(task, role=role))
    recover("user", trial, name, inventory, before, *extra, injected_at=f"{role} task {task}", killed=killed.killed)
    daemon = json.loads(harness.docker_exec(name, "cat", "/etc/docker/daemon.json").stdout)
    where = f"(trial {trial}, killed at {role} task {task}, DLSTACK_FAULT_SEED={SEED})"
    assert {k: daemon.get(k) for k in USER_DAEMON_JSON} == USER_DAEMON_JSON, (
        f"the user's daemon.json keys {where}: {daemon}"
    )
    assert daemon.get("log-opts", {}).get("max-size") == "20m", f"the changed setting never arrived {where}: {daemon}"
    imports = harness.docker_exec(name, python, "-c", "import cowsay, numpy, tqdm", check=False)
    assert imports.returncode == 0, f"the environment lost a package {where}: {imports.stderr}"


@pytest.mark.parametrize("trial", range(TRIALS))
def test_network_cut_mid_download(host: tuple[str, Path], trial: int) -> None:
    """The lab's apt proxy cuts every connection mid-download and refuses new ones for a while.

    The faulted run must end by itself (fail or converge: it must not hang), and once the network
    is back a plain re-run converges. The host's package lists are removed first, so that the run
    downloads them (about 30 MB) and the packages of the common role through the proxy.
    """
    name, inventory = host
    before = user_files(name)
    rng = rng_for("network", trial)
    cut_mb, outage_s = rng.uniform(2, 30), rng.uniform(5, 20)
    with harness.CutProxy(int(cut_mb * 1e6), outage_s) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        # the lab's proxy, configured before dlstack came; common_apt_proxy names the same
        lab = f'Acquire::http::Proxy "{url}";'
        harness.docker_exec(
            name, "sh", "-c", f"echo '{lab}' > /etc/apt/apt.conf.d/90lab-proxy && rm -rf /var/lib/apt/lists/*"
        )
        extra = ("--tags", "common", "-e", json.dumps({"common_apt_proxy": url}))
        faulted = harness.play(inventory, SITE, *extra, timeout_s=600)
        where = f"(cut after {cut_mb:.1f} MB for {outage_s:.0f} s, DLSTACK_FAULT_SEED={SEED})"
        assert proxy.cut_at is not None, f"the run downloaded less than {cut_mb:.1f} MB: no fault {where}"
        assert not faulted.killed, f"the run hung after the network was cut {where}:\n{faulted.output[-4000:]}"
        proxy.wait_until_restored()
        recover("network", trial, name, inventory, before, *extra, injected_at=f"{cut_mb:.1f} MB, {outage_s:.0f} s",
                faulted_run=("converged" if faulted.converged else "failed"))  # fmt: skip
