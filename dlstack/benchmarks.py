"""Speed benchmarks of `scripts/benchmark rerun` and `scripts/benchmark converge`.

Each figure is printed as a ratio against a baseline measured in the same run, on fresh systemd
containers of the local Ubuntu 24.04 image with the sandbox's settings (inventories/sandbox/group_vars):

- rerun: site.yml on a converged host, changing nothing, with dlstack's settings (ansible.cfg's
  strategy, the sandbox's ``docker`` connection) against plain ``linear`` over
  ``community.docker.docker`` (what the sandbox used before). Goal: at most 20 s, changed=0.
- converge: site.yml on a fresh host against the plain-script floor on another fresh host: the same
  apt packages (those site.yml marked manually installed), then each environment's requirements
  installed with the same uv into a plain venv. Both hosts share the wheel cache of the test
  harness, so neither pays for PyPI downloads the other did not. Goal: at most 1.15x the floor.

The pure parts (package lists, the floor script, ratios) are unit-tested in
tests/unit/test_benchmarks.py; the runs themselves need Docker and the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from dlstack import package_cache, sandbox
from dlstack.recap import recap_by_host

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "dlstack/ubuntu-systemd:24.04"
CACHE = Path(os.environ.get("DLSTACK_TEST_CACHE", "/var/cache/dlstack-test"))
HOST_CACHE = "/var/cache/dlstack-host"
RERUN_GOAL_S = 20.0
CONVERGE_GOAL_RATIO = 1.15
# profile_roles' lines: "gpu_verify ------------------------------- 35.12s"
ROLE_TIME_RE = re.compile(r"^(?P<role>[a-z_]+) -{3,}\s*(?P<seconds>[0-9.]+)s$", re.M)
NOT_RERUN = "Verification not re-run on "
PHASE_RE = re.compile(r"^phase (?P<name>\S+) (?P<at>[0-9.]+)$", re.M)


@dataclass
class Run:
    """One ansible-playbook (or script) run: its wall time, exit status, recap and output."""

    seconds: float
    returncode: int
    output: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(c["changed"] for c in self.counts.values())

    @property
    def failed(self) -> int:
        return sum(c["failed"] + c["unreachable"] for c in self.counts.values())


def role_seconds(output: str) -> dict[str, float]:
    """Seconds each role took, from the profile_roles callback's table (its total row left out)."""
    return {m["role"]: float(m["seconds"]) for m in ROLE_TIME_RE.finditer(output) if m["role"] != "total"}


def phase_seconds(output: str) -> dict[str, float]:
    """Seconds of each phase of the floor script, from its ``phase NAME EPOCH`` marks (a phase ends
    where the next begins; the last mark is ``phase end``)."""
    marks = [(m["name"], float(m["at"])) for m in PHASE_RE.finditer(output)]
    return {name: later - at for (name, at), (_, later) in pairwise(marks)}


def manual_packages(after: str, before: str) -> list[str]:
    """Packages ``apt-mark showmanual`` lists on the converged host and not on a fresh one."""
    fresh = set(before.split())
    return sorted({name.split(":")[0] for name in after.split()} - {n.split(":")[0] for n in fresh})


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:5.2f}x" if baseline > 0 else "  n/a"


def figure(label: str, seconds: float, baseline: float, note: str = "") -> str:
    return f"{label:52s} {seconds:8.1f} s {ratio(seconds, baseline)}  {note}".rstrip()


def floor_script(packages: Sequence[str], uv_requirements: str, environments: dict[str, dict[str, str]]) -> str:
    """The plain-script floor: apt, then uv (hash-pinned, as dlstack installs it), then each environment.

    ``environments`` maps a name to its ``requirements`` text and optional ``overrides`` text.
    """
    lines = [
        "set -euo pipefail",
        "export DEBIAN_FRONTEND=noninteractive",
        f"export PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        f" UV_CACHE_DIR={HOST_CACHE}/uv UV_LINK_MODE=copy UV_NO_PROGRESS=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        'mark() { echo "phase $1 $(date +%s.%N)"; }',
        "mark apt",
        "update-ca-certificates >/dev/null",
        "apt-get update -q",
        f"apt-get install -y -q {' '.join(shlex.quote(p) for p in packages)}",
        "mark uv",
        "mkdir -p /opt/floor/envs",
        f"cat > /opt/floor/uv-requirements.txt <<'EOF'\n{uv_requirements.strip()}\nEOF",
        "python3 -m venv /opt/floor/uv",
        "/opt/floor/uv/bin/python -m pip install -q --no-deps --require-hashes -r /opt/floor/uv-requirements.txt",
    ]
    for name, files in environments.items():
        directory = f"/opt/floor/envs/{name}"
        lines.append(f"mark env:{name}")
        lines.append(f"python3 -m venv {directory}")
        lines.append(f"cat > {directory}.requirements.txt <<'EOF'\n{files['requirements'].strip()}\nEOF")
        install = f"/opt/floor/uv/bin/uv pip install --python {directory}/bin/python -r {directory}.requirements.txt"
        if files.get("overrides"):
            lines.append(f"cat > {directory}.overrides.txt <<'EOF'\n{files['overrides'].strip()}\nEOF")
            install += f" --override {directory}.overrides.txt"
        lines.append(install)
    lines.append("mark end")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- hosts and runs


@contextmanager
def fresh_host(prefix: str, *, shared_cache: bool = True) -> Iterator[str]:
    """A systemd container of the 24.04 image, with the harness's download cache unless
    ``shared_cache`` is false (a host that downloads what it installs); removed afterwards."""
    CACHE.mkdir(parents=True, exist_ok=True)
    volumes = (f"{CACHE}:{HOST_CACHE}:rw",) if shared_cache else ()
    with sandbox.systemd_container(f"{prefix}-{uuid.uuid4().hex[:8]}", IMAGE, volumes) as name:
        _copy_local_cas(name)
        yield name


def _copy_local_cas(name: str) -> None:
    """The control machine's local CAs (an inspecting proxy's) where the floor script installs them;
    dlstack installs the same files through common_ca_certificates (the sandbox's group_vars)."""
    for ca in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        subprocess.run(["docker", "cp", str(ca), f"{name}:/usr/local/share/ca-certificates/"], check=True)


def write_inventory(
    directory: Path, hosts: Sequence[str], connection: str, group: str = "dlstack_workstations"
) -> Path:
    """An inventory of ``hosts`` in ``group`` with the sandbox's group_vars; reports and the lock stay
    beside ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "group_vars").symlink_to(ROOT / "inventories" / "sandbox" / "group_vars")
    entries = "".join(
        f"        {host}:\n          ansible_connection: {connection}\n"
        "          ansible_python_interpreter: /usr/bin/python3\n"
        for host in hosts
    )
    reports = directory.parent / "reports"
    (directory / "hosts.yml").write_text(
        "all:\n  vars:\n"
        f"    gpu_verify_report_dir: {json.dumps(str(reports / 'verify'))}\n"
        f"    gpu_verify_fleet_report_dir: {json.dumps(str(reports / 'fleet'))}\n"
        f"    dlstack_lock_file: {json.dumps(str(directory.parent / 'dlstack.lock.yml'))}\n"
        f"  children:\n    {group}:\n      hosts:\n{entries}",
        encoding="utf-8",
    )
    return directory / "hosts.yml"


def site(inventory: Path, *extra: str, env: dict[str, str] | None = None, playbook: str = "site.yml",
         shared_cache: bool = True) -> Run:  # fmt: skip
    """``ansible-playbook site.yml`` (or ``playbook``) against ``inventory``, timed."""
    cache = ["-e", f"python_env_uv_cache_dir={HOST_CACHE}/uv"] if shared_cache else []
    argv = ["ansible-playbook", playbook, "-i", str(inventory), *cache, *extra]
    full_env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", **(env or {})}
    full_env.pop("DLSTACK_DATA_DIR", None)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    return Run(seconds, proc.returncode, output, recap_by_host(output))


def docker_exec(name: str, *argv: str) -> str:
    return subprocess.run(["docker", "exec", name, *argv], capture_output=True, text=True, check=True).stdout


def must_pass(run: Run, what: str) -> Run:
    if run.returncode != 0 or run.failed:
        raise SystemExit(f"{what} failed (rc {run.returncode}):\n{run.output[-4000:]}")
    return run


# ----------------------------------------------------------------------------- the benchmarks


def rerun(repeats: int = 3) -> int:
    """Converge a fresh host, then time no-op re-runs with dlstack's settings and with the baseline."""
    print("\n== rerun: site.yml on a converged host, nothing to change (fresh 24.04 container, sandbox settings)")
    with tempfile.TemporaryDirectory(prefix="dlstack-bench-") as tmp, fresh_host("dlstack-bench-rerun") as name:
        ours = write_inventory(Path(tmp) / "dlstack", [name], sandbox.inventory_connection())
        base = write_inventory(Path(tmp) / "baseline", [name], "community.docker.docker")
        first = must_pass(site(ours), "the first converge")
        print(figure("first converge (not compared)", first.seconds, first.seconds, f"changed={first.changed}"))
        baseline_runs = [site(base, env={"ANSIBLE_STRATEGY": "linear"}) for _ in range(repeats)]
        our_runs = [site(ours) for _ in range(repeats)]
        for run in baseline_runs + our_runs:
            must_pass(run, "a re-run")
        baseline = statistics.median(r.seconds for r in baseline_runs)
        ours_s = statistics.median(r.seconds for r in our_runs)
        changed = max(r.changed for r in baseline_runs + our_runs)
        verified_again = sum(NOT_RERUN not in " ".join(r.output.split()) for r in our_runs)
        print(figure(f"baseline: linear, community.docker.docker (median of {repeats})", baseline, baseline))
        print(figure(f"dlstack: ansible.cfg + sandbox connection (median of {repeats})", ours_s, baseline,
                     f"goal <= {RERUN_GOAL_S:.0f} s: {'met' if ours_s <= RERUN_GOAL_S else 'not met'}"))  # fmt: skip
        print(f"{'runs':52s} {' '.join(f'{r.seconds:.1f}' for r in our_runs)} s (dlstack),"
              f" {' '.join(f'{r.seconds:.1f}' for r in baseline_runs)} s (baseline)")  # fmt: skip
        print(f"{'changed in any re-run':52s} {changed}")
        print(f"{'re-runs that verified again':52s} {verified_again} of {repeats}")
        return 0 if changed == 0 and verified_again == 0 else 1


def converge() -> int:
    """site.yml on a fresh host against the plain-script floor on another fresh host."""
    print("\n== converge: site.yml on a fresh host against a plain script with the same packages and environments")
    with (
        tempfile.TemporaryDirectory(prefix="dlstack-bench-") as tmp,
        fresh_host("dlstack-bench-site") as ours,
        fresh_host("dlstack-bench-floor") as floor,
    ):
        inventory = write_inventory(Path(tmp) / "dlstack", [ours], sandbox.inventory_connection())
        fresh_manual = docker_exec(floor, "apt-mark", "showmanual")
        run = must_pass(site(inventory, env={"ANSIBLE_CALLBACKS_ENABLED": "dlstack_summary,profile_roles"}), "site.yml")
        packages = manual_packages(docker_exec(ours, "apt-mark", "showmanual"), fresh_manual)
        script = floor_script(packages, _tool_requirements(ours), _environments(ours))
        (Path(tmp) / "floor.sh").write_text(script, encoding="utf-8")
        start = time.perf_counter()
        proc = subprocess.run(["docker", "exec", "-i", floor, "bash", "-s"], input=script, capture_output=True,
                              text=True, check=False)  # fmt: skip
        floor_s = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"the floor script failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}\n{script}")
        verify = role_seconds(run.output).get("gpu_verify", 0.0)
        phases = phase_seconds(proc.stdout)
        print(f"{'apt packages (site.yml manual, also the floor)':52s} {len(packages)}: {' '.join(packages)}")
        print(figure("floor: apt-get install, uv pip install (plain script)", floor_s, floor_s))
        met = "met" if run.seconds <= CONVERGE_GOAL_RATIO * floor_s else "not met"
        print(figure("dlstack: ansible-playbook site.yml", run.seconds, floor_s,
                     f"goal <= {CONVERGE_GOAL_RATIO:.2f}x: {met}"))  # fmt: skip
        print(figure("dlstack without its verification (gpu_verify role)", run.seconds - verify, floor_s,
                     f"the verification took {verify:.1f} s; the floor verifies nothing"))  # fmt: skip
        for phase, seconds in phases.items():
            print(f"  floor: {phase:43s} {seconds:8.1f} s")
        for role, seconds in sorted(role_seconds(run.output).items(), key=lambda item: -item[1]):
            print(f"  dlstack: {role:41s} {seconds:8.1f} s")
        return 0


def _tool_requirements(host: str) -> str:
    return docker_exec(host, "cat", "/opt/dlstack/tools/uv-requirements.txt")


def _environments(host: str) -> dict[str, dict[str, str]]:
    """Each venv environment's declared requirements (and overrides) as python_env wrote them."""
    fact = json.loads(docker_exec(host, "cat", "/etc/ansible/facts.d/python_env.fact"))
    found: dict[str, dict[str, str]] = {}
    for env in fact["environments"]:
        state = f"/etc/dlstack/python_env/{env['name']}"
        files = {"requirements": docker_exec(host, "cat", f"{state}/requirements.txt")}
        listing = docker_exec(host, "ls", state).split()
        if "overrides.txt" in listing:
            files["overrides"] = docker_exec(host, "cat", f"{state}/overrides.txt")
        found[env["name"]] = files
    return found


# ----------------------------------------------------------------------------- fleet

FLEET_GOAL_RATIO = 2.5
# The benchmark's cache listens on the control machine's loopback (the hosts share its network), on
# ports of its own: a lab's cache on this machine keeps its defaults.
FLEET_APT_PORT = 13142
FLEET_PYPI_PORT = 13141
# A data-science environment without a framework: eight hosts of the sandbox's 5 GB PyTorch
# environment do not fit on this kind of machine's disk; the apt packages are the sandbox's own.
FLEET_ENVIRONMENT = {"name": "datascience", "packages": ["numpy", "pandas", "scikit-learn", "matplotlib", "tqdm"]}
ACNG_LOG = "/var/log/apt-cacher-ng/apt-cacher.log"
PYPI_ACCESS_LOG = "/var/log/dlstack-pypi-cache/access.log"
PYPI_CACHE_DIR = "/var/cache/dlstack-pypi"


def fleet_settings() -> dict[str, object]:
    """What the fleet's hosts set beside the sandbox's group_vars: the cache, and the smaller environment."""
    return {
        "common_apt_proxy": f"http://127.0.0.1:{FLEET_APT_PORT}",
        "python_env_pip_index_url": f"http://127.0.0.1:{FLEET_PYPI_PORT}/index/",
        "python_env_environments": [FLEET_ENVIRONMENT],
    }


def cache_settings() -> dict[str, object]:
    return {"package_cache_apt_port": FLEET_APT_PORT, "package_cache_pypi_port": FLEET_PYPI_PORT}


@dataclass
class CacheCounts:
    """What the cache host's logs said at one moment."""

    apt: package_cache.HitRate
    pypi_lines: list[str]
    pypi_downloads: int

    def since(self, earlier: CacheCounts) -> tuple[package_cache.HitRate, package_cache.HitRate]:
        """apt's and PyPI's hit rates of what happened after ``earlier``."""
        pypi = package_cache.pypi_hit_rate(self.pypi_lines[len(earlier.pypi_lines) :],
                                           self.pypi_downloads - earlier.pypi_downloads)  # fmt: skip
        return self.apt - earlier.apt, pypi


def cache_counts(cache_host: str) -> CacheCounts:
    def read(*argv: str) -> str:
        return subprocess.run(["docker", "exec", cache_host, *argv], capture_output=True, text=True, check=False).stdout

    apt = package_cache.apt_hit_rate(read("cat", ACNG_LOG).splitlines())
    downloads = len(read("find", PYPI_CACHE_DIR, "-type", "f", "-name", "*.*").split())
    return CacheCounts(apt, read("cat", PYPI_ACCESS_LOG).splitlines(), downloads)


# Where a container's CPU time is read on the control machine: cgroup v2, v2 beside v1, v1.
_CPU_FILES = ("/sys/fs/cgroup/docker/{id}/cpu.stat", "/sys/fs/cgroup/unified/docker/{id}/cpu.stat",
              "/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage")  # fmt: skip


def cpu_seconds(text: str) -> float:
    """CPU seconds from a cgroup v2 ``cpu.stat`` (usage_usec) or a v1 ``cpuacct.usage`` (nanoseconds)."""
    match = re.search(r"^usage_usec (\d+)$", text, re.M)
    return int(match[1]) / 1e6 if match else int(text.strip()) / 1e9


def container_cpu_seconds(name: str) -> float | None:
    """CPU time a container has used so far (None where the control machine does not show it)."""
    full_id = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True,
                             check=False).stdout.strip()  # fmt: skip
    for pattern in _CPU_FILES:
        path = Path(pattern.format(id=full_id))
        if full_id and path.exists():
            return cpu_seconds(path.read_text(encoding="utf-8"))
    return None


def _controller_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fleet_phase(label: str, tmp: Path, hosts: Sequence[str], cache_host: str, settings: Path) -> tuple[Run, float]:
    """site.yml on ``hosts`` at once; prints the caches' hit rates and returns the run and the CPU
    seconds it took (the hosts' containers and ansible-playbook on the control machine)."""
    inventory = write_inventory(tmp / label, hosts, sandbox.inventory_connection())
    before, controller = cache_counts(cache_host), _controller_cpu()
    run = must_pass(site(inventory, "-e", f"@{settings}", "--forks", str(max(8, len(hosts))), shared_cache=False),
                    f"site.yml on {label}")  # fmt: skip
    controller = _controller_cpu() - controller
    apt, pypi = cache_counts(cache_host).since(before)
    hosts_cpu = [container_cpu_seconds(host) for host in hosts]
    cpu = controller + sum(c for c in hosts_cpu if c is not None)
    print(f"{label + ': apt cache':52s} {apt.describe()}")
    print(f"{label + ': PyPI cache':52s} {pypi.describe()}")
    shown = "" if None not in hosts_cpu else " (the hosts' own not readable here)"
    print(f"{label + ': CPU used':52s} {cpu:8.1f} s (hosts {cpu - controller:.1f}, ansible {controller:.1f}){shown}")
    return run, cpu


def fleet(hosts: int = 8) -> int:
    """A package cache (playbooks/cache.yml), then site.yml on one fresh host and on ``hosts`` at once."""
    print(f"\n== fleet: site.yml on 1 host, then on {hosts} at once (forks {max(8, hosts)}), through a package cache")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dlstack-bench-")))
        cache_host = stack.enter_context(fresh_host("dlstack-bench-cache", shared_cache=False))
        settings = tmp / "fleet.json"
        settings.write_text(json.dumps(fleet_settings()), encoding="utf-8")
        cache_vars = tmp / "cache.json"
        cache_vars.write_text(json.dumps(cache_settings()), encoding="utf-8")
        inventory = write_inventory(
            tmp / "cache", [cache_host], sandbox.inventory_connection(), "dlstack_package_cache"
        )
        cache = must_pass(site(inventory, "-e", f"@{cache_vars}", playbook="playbooks/cache.yml", shared_cache=False),
                          "playbooks/cache.yml")  # fmt: skip
        print(figure("cache host: playbooks/cache.yml (not compared)", cache.seconds, cache.seconds))
        first = stack.enter_context(fresh_host("dlstack-bench-one", shared_cache=False))
        one, _ = _fleet_phase("1 host, cold cache", tmp, [first], cache_host, settings)
        names = [stack.enter_context(fresh_host("dlstack-bench-fleet", shared_cache=False)) for _ in range(hosts)]
        many, many_cpu = _fleet_phase(f"{hosts} hosts, warm cache", tmp, names, cache_host, settings)
        cores = os.cpu_count() or 1
        print(figure("1 host: site.yml (baseline)", one.seconds, one.seconds))
        met = "met" if many.seconds <= FLEET_GOAL_RATIO * one.seconds else "not met"
        print(figure(f"{hosts} hosts at once: site.yml", many.seconds, one.seconds,
                     f"goal <= {FLEET_GOAL_RATIO:.1f}x: {met}"))  # fmt: skip
        print(figure(f"{hosts} hosts: their CPU time / {cores} cores (a floor here)", many_cpu / cores, one.seconds,
                     "one machine's cores run every host; in a lab each host has its own"))  # fmt: skip
        print(f"{'changed on the hosts (1 / fleet)':52s} {one.changed} / {many.changed}")
        return 0
