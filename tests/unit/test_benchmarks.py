"""The pure parts of scripts/benchmark rerun and converge (dlstack/benchmarks.py): a parser that found
nothing, or a floor script that installed less than site.yml, would make every figure meaningless."""

from __future__ import annotations

import subprocess

from dlstack import benchmarks, sandbox
from dlstack.recap import recap_by_host, recap_counts

RECAP = """
PLAY RECAP *********************************************************************
dlstack-a                  : ok=147  changed=0    unreachable=0    failed=0    skipped=114  rescued=0    ignored=0
dlstack-b                  : ok=140  changed=2    unreachable=1    failed=0    skipped=110  rescued=0    ignored=0
"""

ROLES = """
ROLES RECAP ********************************************************************
python_env ------------------------------------------------------------- 61.20s
gpu_verify ------------------------------------------------------------- 35.12s
common ----------------------------------------------------------------- 20.01s
"""


def test_recap_counts_every_host() -> None:
    counts = recap_by_host(RECAP)
    assert counts["dlstack-a"]["ok"] == 147
    assert counts["dlstack-b"]["changed"] == 2
    run = benchmarks.Run(1.0, 0, RECAP, counts)
    assert run.changed == 2
    assert run.failed == 1  # unreachable counts as failed
    # one host's counts, or the last line's (the test harnesses' reading of the same lines)
    assert recap_counts(RECAP, "dlstack-a") == counts["dlstack-a"]
    assert recap_counts(RECAP) == counts["dlstack-b"]
    assert recap_counts(RECAP, "dlstack-c") == {}


def test_the_sandbox_connection_is_read_from_its_inventory() -> None:
    assert sandbox.inventory_connection() == "docker"


def test_role_seconds_reads_profile_roles() -> None:
    assert benchmarks.role_seconds(ROLES) == {"python_env": 61.2, "gpu_verify": 35.12, "common": 20.01}


def test_manual_packages_are_those_site_added() -> None:
    fresh = "apt\nbash\nsystemd\n"
    converged = "apt\nbash\nsystemd\ndocker.io\nlocales\npython3-venv:amd64\n"
    assert benchmarks.manual_packages(converged, fresh) == ["docker.io", "locales", "python3-venv"]


def test_ratio_against_the_baseline() -> None:
    assert benchmarks.ratio(30.0, 20.0).strip() == "1.50x"
    assert benchmarks.ratio(1.0, 0.0).strip() == "n/a"
    line = benchmarks.figure("dlstack", 21.0, 42.0, "goal")
    assert "21.0 s" in line and "0.50x" in line and line.endswith("goal")


def test_the_floor_installs_every_package_and_environment() -> None:
    script = benchmarks.floor_script(
        ["docker.io", "locales"],
        "uv==0.9.0 --hash=sha256:abc",
        {"pytorch": {"requirements": "torch==2.9.1\n"}, "tf": {"requirements": "tensorflow\n", "overrides": "x==1\n"}},
    )
    assert "apt-get install -y -q docker.io locales" in script
    assert "--require-hashes -r /opt/floor/uv-requirements.txt" in script
    assert "uv==0.9.0 --hash=sha256:abc" in script
    assert "--python /opt/floor/envs/pytorch/bin/python -r /opt/floor/envs/pytorch.requirements.txt" in script
    assert "--override /opt/floor/envs/tf.overrides.txt" in script
    assert "--override /opt/floor/envs/pytorch" not in script
    # the script is valid shell (heredocs closed)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_inventory_has_the_hosts_and_keeps_reports_beside_it(tmp_path) -> None:
    import yaml

    path = benchmarks.write_inventory(tmp_path / "dlstack", ["h1", "h2"], "docker")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    hosts = data["all"]["children"]["dlstack_workstations"]["hosts"]
    assert {name: host["ansible_connection"] for name, host in hosts.items()} == {"h1": "docker", "h2": "docker"}
    assert data["all"]["vars"]["dlstack_lock_file"] == str(tmp_path / "dlstack.lock.yml")
    assert (tmp_path / "dlstack" / "group_vars").resolve() == benchmarks.ROOT / "inventories" / "sandbox" / "group_vars"


def test_phases_of_the_floor_script() -> None:
    out = "phase apt 100.0\nReading package lists...\nphase uv 130.5\nphase env:pytorch 131.0\nphase end 160.0\n"
    assert benchmarks.phase_seconds(out) == {"apt": 30.5, "uv": 0.5, "env:pytorch": 29.0}
    script = benchmarks.floor_script(["curl"], "uv==1", {"pytorch": {"requirements": "torch\n"}})
    names = [line.split()[1] for line in script.splitlines() if line.startswith("mark ")]
    assert names == ["apt", "uv", "env:pytorch", "end"]


def test_the_profile_total_is_not_a_role() -> None:
    assert "total" not in benchmarks.role_seconds(ROLES + "total ------------------------------- 116.33s\n")


def test_cpu_seconds_from_cgroup_v2_and_v1():
    assert benchmarks.cpu_seconds("usage_usec 63152091\nuser_usec 42089474\n") == 63.152091
    assert benchmarks.cpu_seconds("63152091489\n") == 63.152091489
