"""The README's run command on a fresh host, then the life of a locked host.

A throwaway container from the local 24.04 image gets the sandbox inventory's group_vars (the
same settings `scripts/bootstrap site` uses). The steps build on each other:

1. check mode on the fresh host does not fail; the converge succeeds, with the data as it was some
   time ago (``DLSTACK_DATA_DIR``: no driver branch after 580, not the newest torch that has a
   torchvision), and records the
   stack in the lock file beside the inventory and on the host;
2. the data moves on (today's dlstack/data: a newer branch and a newer torch appear) and site.yml
   runs again: nothing changes, the lock is unchanged, preflight says what newer stack is offered;
3. playbooks/upgrade.yml with a verification that must fail: the host moves, fails, and is rolled
   back to its locked stack, the lock unchanged;
4. playbooks/upgrade.yml: the host moves to the newest stack and the lock records it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from throwaway import ignored_tasks, throwaway_host

from dlstack import lock, sandbox
from dlstack.data import DATA_DIR
from dlstack.recap import recap_counts

ROOT = Path(__file__).resolve().parents[2]
# The test hosts are reached as the sandbox is (its `docker` connection, which ansible.cfg's strategy
# runs through Mitogen), so the path `ansible-playbook site.yml` takes on the sandbox is the one tested
SANDBOX_CONNECTION = sandbox.inventory_connection()
CACHE = Path(os.environ.get("DLSTACK_TEST_CACHE", "/var/cache/dlstack-test"))
pytestmark = pytest.mark.integration
# the older data's newest driver branch: every newer branch is taken out of drivers.yml
OLD_BRANCH_MAX = 580
# The only tasks whose failure check mode may ignore on a fresh host, each with why it cannot be known
# before the run: anything else ignored (a wrong package name, a missing file) fails the test.
CHECK_MODE_UNKNOWABLE = {
    "container_runtime : Restart docker": "docker.io is not installed yet: systemd has no docker unit to restart",
}


def older_data(directory: Path) -> Path:
    """dlstack/data as it was before the newest driver branches and the newest torch came out."""
    directory.mkdir(parents=True, exist_ok=True)
    drivers = yaml.safe_load((DATA_DIR / "drivers.yml").read_text(encoding="utf-8"))
    drivers["branches"] = {b: info for b, info in drivers["branches"].items() if int(b) <= OLD_BRANCH_MAX}
    (directory / "drivers.yml").write_text(yaml.safe_dump(drivers, sort_keys=False), encoding="utf-8")
    pytorch = yaml.safe_load((DATA_DIR / "pytorch.yml").read_text(encoding="utf-8"))
    # newest first: every release up to the newest one with a torchvision is taken out (the sandbox asks
    # for torchvision, so the resolver picks the newest torch that has one: today's data must offer a newer)
    releases, pairs = pytorch["releases"], {str(k): v for k, v in pytorch["companions"].items()}
    newest = next(i for i, r in enumerate(releases) if any(pairs[str(v)]["torchvision"] for v in r["versions"]))
    pytorch["releases"] = releases[newest + 1 :]
    (directory / "pytorch.yml").write_text(yaml.safe_dump(pytorch, sort_keys=False), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    inventory = tmp_path_factory.mktemp("inventory")
    (inventory / "group_vars").symlink_to(ROOT / "inventories" / "sandbox" / "group_vars")
    volumes = (f"{CACHE}:/var/cache/dlstack-host:rw",)
    with throwaway_host(
        "dlstack-site", "dlstack/ubuntu-systemd:24.04", inventory, volumes, connection=SANDBOX_CONNECTION
    ) as name:
        yield name, inventory / "hosts.yml"


@pytest.fixture(scope="module")
def old_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return older_data(tmp_path_factory.mktemp("older-data"))


def play(inventory: Path, playbook: str, *extra: str, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    # verification reports of the test host go beside its inventory (throwaway.inventory_text), not into
    # the checkout's reports/
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0"}
    env.pop("DLSTACK_DATA_DIR", None)
    if data is not None:
        env["DLSTACK_DATA_DIR"] = str(data)
    return subprocess.run(
        # wheels are cached on the host between runs (the shared test cache)
        ["ansible-playbook", playbook, "-i", str(inventory), "-e", "python_env_uv_cache_dir=/var/cache/dlstack-host/uv",
         *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=2400,
    )  # fmt: skip


def recap(proc: subprocess.CompletedProcess[str], host: str) -> dict[str, int]:
    return recap_counts(proc.stdout, host)


def changed_tasks(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stdout.splitlines()
    return "\n".join(lines[i - 2] for i, line in enumerate(lines) if line.startswith("changed:") and i >= 2)


def lock_text(inventory: Path) -> str:
    return (inventory.parent / "dlstack.lock.yml").read_text(encoding="utf-8")


def docker_json(name: str, *argv: str) -> object:
    out = subprocess.run(["docker", "exec", name, *argv], capture_output=True, text=True, check=True).stdout.strip()
    # a JSON file, or a program whose last line is JSON (after whatever it logged)
    return json.loads(out if out.startswith("{") else out.splitlines()[-1])


def torch_on_host(name: str) -> list[str]:
    code = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"
    return docker_json(name, "/opt/dlstack/envs/pytorch/bin/python", "-c", code)  # type: ignore[return-value]


def driver_branch_on_host(name: str) -> str:
    return str(docker_json(name, "cat", "/etc/ansible/facts.d/nvidia_driver.fact")["branch"])  # type: ignore[index]


# The role's refusal when the archive lists the driver's packages but its mirror answers 404 for them
# (roles/nvidia_driver/vars/main.yml); the steps after a refused first converge have nothing to build on.
NOT_SERVED = yaml.safe_load((ROOT / "roles/nvidia_driver/vars/main.yml").read_text(encoding="utf-8"))[
    "__nvidia_driver_not_served"
]
REFUSED: dict[str, str] = {}
# what a skip for the archive's state waits for
RUNS_AGAIN = " [runs again once the mirror serves what its index lists]"


def refusal_text(flat: str, marker: str) -> str:
    """The role's refusal from a run's output (whitespace collapsed): from its first words to its last."""
    text = flat[flat.index(marker) :]
    end = text.find("(dlstack_driver_branch).")
    return text[: end + len("(dlstack_driver_branch).")] if end >= 0 else text[:1500]


class TestSiteAndTheLockedHost:
    # only this walk's steps build on its first converge: TestSiteWithTodaysData runs whatever happened here
    @pytest.fixture(autouse=True)
    def _skip_after_a_refused_first_converge(self):
        if REFUSED:
            pytest.skip(
                "the first converge was refused, the archive does not serve the driver today: "
                f"{REFUSED['why']}{RUNS_AGAIN}"
            )

    def test_site_on_a_fresh_host_records_the_stack(self, host, old_data):
        name, inventory = host
        check = play(inventory, "site.yml", "--check", "--diff", data=old_data)
        assert check.returncode == 0, check.stdout[-5000:]
        assert recap(check, name)["failed"] == 0
        unexpected = set(ignored_tasks(check.stdout)) - set(CHECK_MODE_UNKNOWABLE)
        assert not unexpected, f"check mode ignored failures it should not have: {sorted(unexpected)}"
        assert not (inventory.parent / "dlstack.lock.yml").exists(), "check mode wrote the lock file"

        first = play(inventory, "site.yml", data=old_data)
        flat = " ".join(first.stdout.split())
        if first.returncode != 0 and NOT_SERVED in flat:
            # the archive's state, not the product's: the role must refuse cleanly, naming what is not served
            why = refusal_text(flat, NOT_SERVED)
            assert "nothing was installed" in why, why
            REFUSED["why"] = why
            pytest.skip(f"the archive lists the old stack's driver but does not serve it today: {why}{RUNS_AGAIN}")
        assert first.returncode == 0, first.stdout[-5000:]
        assert recap(first, name)["changed"] > 0

        entry = lock.host_entry(lock_text(inventory), name)
        assert entry is not None
        assert int(entry["driver"]["branch"]) <= OLD_BRANCH_MAX
        assert docker_json(name, "cat", "/etc/ansible/facts.d/dlstack_stack.fact") == entry
        version, cuda = torch_on_host(name)
        assert version.split("+")[0] == entry["frameworks"]["torch"]["version"]
        assert "cu" + cuda.replace(".", "") == entry["frameworks"]["torch"]["variant"]
        assert driver_branch_on_host(name) == entry["driver"]["branch"]

    def test_newer_data_changes_nothing_on_a_locked_host(self, host):
        name, inventory = host
        before = lock_text(inventory)
        second = play(inventory, "site.yml")  # today's data: newer branches and torch
        assert second.returncode == 0, second.stdout[-5000:]
        changed = recap(second, name)["changed"]
        assert changed == 0, "a re-run with newer data changed something:\n" + changed_tasks(second)
        assert lock_text(inventory) == before
        assert "keeps its locked stack; the data offers" in second.stdout
        entry = lock.host_entry(before, name)
        assert torch_on_host(name)[0].split("+")[0] == entry["frameworks"]["torch"]["version"]

    def test_upgrade_in_check_mode_shows_the_plan_and_changes_nothing(self, host):
        name, inventory = host
        before = lock_text(inventory)
        entry = lock.host_entry(before, name)
        plan = play(inventory, "playbooks/upgrade.yml", "--check")
        assert plan.returncode == 0, plan.stdout[-5000:]
        assert f"{name}: from the locked stack: driver {entry['driver']['branch']} ->" in plan.stdout
        assert lock_text(inventory) == before
        assert driver_branch_on_host(name) == entry["driver"]["branch"]

    def test_upgrade_refuses_while_gpu_jobs_run(self, host):
        name, inventory = host
        # what `nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader`
        # prints with a training job on a GPU; the container has no GPU, so a stand-in first on the
        # PATH answers as the real one would (only a GPU host proves the real query)
        smi = (
            "#!/bin/sh\n# stand-in for the test: a GPU with one job; other queries fail as without a GPU\n"
            'case "$*" in *--query-compute-apps*) echo "4242, python, 30208 MiB"; exit 0;; esac\n'
            "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9\n"
        )
        install = "cat > /usr/local/bin/nvidia-smi && chmod 755 /usr/local/bin/nvidia-smi"
        subprocess.run(["docker", "exec", "-i", name, "sh", "-c", install], input=smi, text=True, check=True)
        try:
            refused = play(inventory, "playbooks/upgrade.yml")
        finally:
            subprocess.run(["docker", "exec", name, "rm", "-f", "/usr/local/bin/nvidia-smi"], check=True)
        assert refused.returncode != 0
        assert "has 1 process(es) on its GPUs (4242, python, 30208 MiB)" in refused.stdout
        assert recap(refused, name)["changed"] == 0

    def test_upgrade_that_fails_verification_is_rolled_back(self, host):
        name, inventory = host
        before = lock_text(inventory)
        entry = lock.host_entry(before, name)
        # a verification the host cannot pass: more RAM than any machine has, as a failure
        failed = play(
            inventory, "playbooks/upgrade.yml",
            "-e", '{"gpu_verify_extra_args": ["--min-ram-gib", "100000"], "gpu_verify_strict_hardware": true}',
        )  # fmt: skip
        assert failed.returncode != 0
        assert "was rolled back to its locked stack" in failed.stdout
        assert "The rollout stops here" in failed.stdout
        assert lock_text(inventory) == before
        assert driver_branch_on_host(name) == entry["driver"]["branch"]
        assert torch_on_host(name)[0].split("+")[0] == entry["frameworks"]["torch"]["version"]

    def test_upgrade_moves_the_host_and_updates_the_lock(self, host):
        name, inventory = host
        old = lock.host_entry(lock_text(inventory), name)
        upgraded = play(inventory, "playbooks/upgrade.yml")
        assert upgraded.returncode == 0, upgraded.stdout[-5000:]
        new = lock.host_entry(lock_text(inventory), name)
        assert lock.differences(old, new), "the upgrade left the lock as it was"
        assert int(new["driver"]["branch"]) > OLD_BRANCH_MAX
        assert driver_branch_on_host(name) == new["driver"]["branch"]
        version, cuda = torch_on_host(name)
        assert version.split("+")[0] == new["frameworks"]["torch"]["version"]
        assert "cu" + cuda.replace(".", "") == new["frameworks"]["torch"]["variant"]
        assert new["frameworks"]["torch"]["version"] != old["frameworks"]["torch"]["version"]


class TestSiteWithTodaysData:
    """The README's command on a fresh host with today's data (what `scripts/bootstrap site` runs against
    the sandbox): the converge succeeds and a second run changes nothing. Runs even when the locked-host
    walk above is skipped because the archive does not serve its older driver."""

    def test_site_converges_and_a_second_run_changes_nothing(self, tmp_path_factory):
        inventory = tmp_path_factory.mktemp("today")
        (inventory / "group_vars").symlink_to(ROOT / "inventories" / "sandbox" / "group_vars")
        volumes = (f"{CACHE}:/var/cache/dlstack-host:rw",)
        with throwaway_host(
            "dlstack-today", "dlstack/ubuntu-systemd:24.04", inventory, volumes, connection=SANDBOX_CONNECTION
        ) as name:
            first = play(inventory / "hosts.yml", "site.yml")
            flat = " ".join(first.stdout.split())
            if first.returncode != 0 and NOT_SERVED in flat:
                pytest.skip(f"the archive does not serve today's driver: {refusal_text(flat, NOT_SERVED)}{RUNS_AGAIN}")
            assert first.returncode == 0, first.stdout[-5000:]
            verified = docker_json(name, "cat", "/var/lib/dlstack/verify/pytorch.json")
            second = play(inventory / "hosts.yml", "site.yml")
            assert second.returncode == 0, second.stdout[-5000:]
            assert recap(second, name)["changed"] == 0, second.stdout[-5000:]
            # nothing changed, so the verification that passed is not run again (dlstack_verify: changed)
            assert "Verification not re-run on " + name in " ".join(second.stdout.split())
            again = docker_json(name, "cat", "/var/lib/dlstack/verify/pytorch.json")
            assert again["generated_at"] == verified["generated_at"]  # type: ignore[index]
            # check mode on the converged host: nothing would change and no failure is ignored
            check = play(inventory / "hosts.yml", "site.yml", "--check", "--diff")
            assert check.returncode == 0, check.stdout[-5000:] + check.stderr[-3000:]
            assert recap(check, name)["changed"] == 0, changed_tasks(check)
            assert ignored_tasks(check.stdout) == [], ignored_tasks(check.stdout)
            version, _cuda = torch_on_host(name)
            code = "import json, torchvision; print(json.dumps(torchvision.__version__))"
            vision = docker_json(name, "/opt/dlstack/envs/pytorch/bin/python", "-c", code)
            entry = lock.host_entry(lock_text(inventory / "hosts.yml"), name)
            assert version.split("+")[0] == entry["frameworks"]["torch"]["version"]
            # the pytorch profile's torchvision is the release paired with that torch (the local fact says which)
            fact = docker_json(name, "cat", "/etc/ansible/facts.d/python_env.fact")
            (pytorch,) = [env for env in fact["environments"] if env["name"] == "pytorch"]  # type: ignore[index]
            assert str(vision).split("+")[0] == pytorch["versions"]["torchvision"]
