#!/usr/bin/env python3
"""Read-only probe of a host's container runtimes for the container_runtime role.

Run on the target (standard library only) with one argument, a JSON request:

    {"engine_remove": [...],        packages the chosen Docker source would remove
     "toolkit_remove": [...],       NVIDIA Container Toolkit packages to remove ([] unless state absent)
     "engine_packages": [...],      packages that ship dockerd (docker.io, docker-ce)
     "containerd_packages": [...],  packages that ship containerd (containerd, containerd.io)
     "consumer_packages": [...],    packages whose presence means containerd serves something else (kubelet, ...)
     "consumer_services": [...],    services that use containerd besides Docker (kubelet)
     "report_packages": [...],      further packages whose installed version to report (the toolkit's)
     "daemon_json": path, "state_file": path (dlstack's record of the daemon.json keys it owns),
     "containerd_record": path (sha256 of /etc/containerd/config.toml after dlstack configured it),
     "docker_root_default": "/var/lib/docker"}

It prints one JSON object: what is installed, what the removals would take with them (apt's own
simulation), the reasons a runtime is in use (``engine.in_use``, ``toolkit.in_use``), Docker's
state (installed, running, data root, images, swarm) and the data root dlstack owns. It changes
nothing. The decisions are pure functions below, tested with recorded outputs in
tests/unit/test_container_runtime_probe.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

CONTAINERD_CONFIG = Path("/etc/containerd/config.toml")
CONTAINERD_DROPINS = Path("/etc/containerd/conf.d")
DOCKERD = (Path("/usr/bin/dockerd"), Path("/usr/sbin/dockerd"))
# Namespaces Docker itself uses in containerd (containers; managed plugins).
DOCKER_NAMESPACES = {"moby", "plugins.moby"}
ENV = {**os.environ, "LC_ALL": "C", "LANG": "C"}


# ----------------------------------------------------------------------------- parsing (pure)


def parse_dpkg_query(text: str) -> dict[str, str]:
    """``dpkg-query -W -f '${Package}\\t${db:Status-Abbrev}\\t${Version}\\n'``: installed package -> version."""
    installed = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        name, abbrev, version = fields[0], fields[1], fields[2]
        # Second letter: the package's state; n (not installed) and c (config files only) are absent.
        if len(abbrev) >= 2 and abbrev[1] not in "nc":
            installed[name] = version
    return installed


def parse_simulated_removals(text: str) -> list[str]:
    """``apt-get -s remove ...``: the packages apt would remove ("Remv name [version]")."""
    return [match.group(1) for match in re.finditer(r"^Remv (\S+)", text, re.MULTILINE)]


def parse_active(text: str, units: list[str]) -> dict[str, bool]:
    """``systemctl is-active u1 u2 ...`` prints one state per unit, in order."""
    states = text.split()
    return {unit: index < len(states) and states[index] == "active" for index, unit in enumerate(units)}


def parse_namespaces(text: str) -> list[str]:
    """``ctr namespaces list -q``: one name per line."""
    return sorted({line.strip() for line in text.splitlines() if line.strip()})


def foreign_namespaces(namespaces: list[str]) -> list[str]:
    return [ns for ns in namespaces if ns not in DOCKER_NAMESPACES]


def parse_conffiles(text: str) -> dict[str, str]:
    """``dpkg-query -W -f '${Conffiles}\\n'``: path -> md5 of the file as the package shipped it."""
    conffiles = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("/"):
            conffiles[fields[0]] = fields[1]
    return conffiles


def containerd_config_origin(content: bytes | None, conffiles: dict[str, str], recorded_sha256: str) -> str:
    """Who wrote /etc/containerd/config.toml: absent, package (unchanged conffile), dlstack, or foreign."""
    if content is None:
        return "absent"
    if hashlib.md5(content, usedforsecurity=False).hexdigest() == conffiles.get(str(CONTAINERD_CONFIG)):
        return "package"
    if recorded_sha256 and hashlib.sha256(content).hexdigest() == recorded_sha256:
        return "dlstack"
    return "foreign"


def uses_gpus(container: dict[str, Any]) -> bool:
    """A container from ``docker inspect`` that runs with the nvidia runtime or requests GPUs (also via CDI)."""
    host = container.get("HostConfig") or {}
    if host.get("Runtime") == "nvidia":
        return True
    for request in host.get("DeviceRequests") or []:
        capabilities = [cap for group in request.get("Capabilities") or [] for cap in group]
        devices = request.get("DeviceIDs") or []
        if request.get("Driver") in ("nvidia", "cdi") or "gpu" in capabilities:
            return True
        if any(str(device).startswith("nvidia.com/") for device in devices):
            return True
    return False


def container_names(containers: list[dict[str, Any]]) -> list[str]:
    return sorted(str(c.get("Name", "?")).lstrip("/") for c in containers)


def owned_paths(state: dict[str, Any] | None) -> tuple[set[tuple[str, ...]], dict[tuple[str, ...], Any]]:
    """The leaf paths dlstack_docker_daemon_json recorded as its own, and the values it wrote."""
    state = state or {}
    owned = {tuple(p) for p in state.get("owned", []) if isinstance(p, list)}
    values = {tuple(i["path"]): i.get("value") for i in state.get("leaves", []) if isinstance(i, dict) and "path" in i}
    return owned, values


def dlstack_data_root(daemon_json: dict[str, Any] | None, state: dict[str, Any] | None) -> str:
    """daemon.json's data-root when dlstack wrote it and nobody changed it since; else ""."""
    current = (daemon_json or {}).get("data-root")
    owned, values = owned_paths(state)
    if not isinstance(current, str) or ("data-root",) not in owned:
        return ""
    if ("data-root",) in values and values[("data-root",)] != current:
        return ""
    return current


def hand_written(daemon_json: dict[str, Any] | None, state: dict[str, Any] | None, key: str) -> bool:
    """Whether a top-level key of daemon.json is there and not (or no longer) dlstack's."""
    if not daemon_json or key not in daemon_json:
        return False
    owned, values = owned_paths(state)
    path = (key,)
    return path not in owned or (path in values and values[path] != daemon_json[key])


def is_fresh(dockerd_installed: bool, root_entries: list[str]) -> bool:
    """No Docker yet: no dockerd and nothing in the data root it would use."""
    return not dockerd_installed and not root_entries


def engine_reasons(facts: dict[str, Any], request: dict[str, Any]) -> list[str]:
    """Why removing ``facts['engine']['remove']`` would break something besides the Docker being replaced."""
    remove = facts["engine"]["remove"]
    if not remove:
        return []
    reasons = []
    collateral = facts["engine"]["collateral"]
    if facts["engine"].get("simulation_error"):
        reasons.append(f"apt cannot plan the removal of {', '.join(remove)}: {facts['engine']['simulation_error']}")
    if collateral:
        reasons.append(f"apt would also remove {', '.join(collateral)} (they depend on {', '.join(remove)})")
    containerd = facts["containerd"]
    if set(remove) & set(request.get("containerd_packages", [])):
        for name, version in sorted(facts["consumers"]["packages"].items()):
            reasons.append(f"{name} {version} is installed (it runs its containers through containerd)")
        for unit in facts["consumers"]["services"]:
            reasons.append(f"{unit}.service is running")
        foreign = foreign_namespaces(containerd["namespaces"])
        if foreign:
            reasons.append(f"containerd holds namespace(s) {', '.join(foreign)} besides Docker's (moby)")
        if containerd["active"] and not facts["docker"]["installed"]:
            reasons.append("containerd.service runs without Docker, so something else uses it")
        if containerd["config"] == "foreign":
            reasons.append(f"{CONTAINERD_CONFIG} was written by someone else (not a package's default, not dlstack)")
    replaced_engines = set(remove) & set(request.get("engine_packages", []))
    running = facts["docker"]["running_containers"]
    if replaced_engines and running:
        names = ", ".join(facts["docker"]["running_names"][:10])
        reasons.append(
            f"Docker ({', '.join(sorted(replaced_engines))}) runs {len(running)} container(s): {names}; "
            "replacing the engine stops them"
        )
    return reasons


def toolkit_reasons(facts: dict[str, Any]) -> list[str]:
    """Why removing the NVIDIA Container Toolkit now would break something that uses it."""
    if not facts["toolkit"]["remove"]:
        return []
    reasons = []
    if facts["toolkit"].get("simulation_error"):
        reasons.append(f"apt cannot plan the removal of the toolkit: {facts['toolkit']['simulation_error']}")
    collateral = ", ".join(facts["toolkit"]["collateral"])
    if collateral:
        reasons.append(f"apt would also remove {collateral} (they depend on the toolkit)")
    gpu_containers = ", ".join(facts["docker"]["gpu_containers"])
    if gpu_containers:
        reasons.append(f"running container(s) use GPUs through the toolkit: {gpu_containers}")
    daemon_json = facts["daemon_json"] or {}
    if daemon_json.get("default-runtime") == "nvidia" and hand_written(daemon_json, facts["state"], "default-runtime"):
        reasons.append(
            "daemon.json sets default-runtime to nvidia by hand: Docker would not start without the toolkit "
            "(remove that key first)"
        )
    outside = {ns: n for ns, n in facts["containerd"]["foreign_containers"].items() if n}
    if facts["containerd"]["nvidia_runtime"] and outside:
        counts = ", ".join(f"{n} in {ns}" for ns, n in sorted(outside.items()))
        reasons.append(
            f"containerd is configured with the nvidia runtime and has containers outside Docker ({counts}): "
            "GPU pods may use it"
        )
    return reasons


# ----------------------------------------------------------------------------- reading the host


def run(argv: list[str], timeout: int = 60) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def read_json(path: str) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def installed_packages(names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    _, out, _ = run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n", *names])
    return parse_dpkg_query(out)


def simulate_removal(packages: list[str]) -> tuple[list[str], str]:
    """The packages apt would remove besides ``packages`` and, when apt refuses, its error."""
    if not packages:
        return [], ""
    rc, out, err = run(["apt-get", "-s", "-q", "remove", *packages])
    if rc != 0:
        return [], (err or out).strip().splitlines()[-1] if (err or out).strip() else f"apt-get exited {rc}"
    return sorted(set(parse_simulated_removals(out)) - set(packages)), ""


def docker_facts(daemon_json: dict[str, Any] | None, default_root: str) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "installed": any(path.exists() for path in DOCKERD),
        "running": False,
        "root_dir": (daemon_json or {}).get("data-root") or default_root,
        "images": None,
        "containers": None,
        "running_containers": [],
        "running_names": [],
        "gpu_containers": [],
        "swarm": "inactive",
        "live_restore": None,
    }
    if facts["installed"]:
        rc, out, _ = run(["docker", "info", "--format", "{{json .}}"], timeout=30)
        info = None
        if rc == 0:
            try:
                info = json.loads(out)
            except ValueError:
                info = None
        if isinstance(info, dict) and info.get("ServerVersion"):
            facts.update(
                running=True,
                root_dir=info.get("DockerRootDir") or facts["root_dir"],
                images=info.get("Images"),
                containers=info.get("Containers"),
                swarm=(info.get("Swarm") or {}).get("LocalNodeState") or "inactive",
                live_restore=info.get("LiveRestoreEnabled"),
            )
            rc, out, _ = run(["docker", "ps", "-q", "--no-trunc"], timeout=30)
            ids = out.split() if rc == 0 else []
            if ids:
                rc, out, _ = run(["docker", "inspect", *ids], timeout=60)
                try:
                    containers = json.loads(out) if rc == 0 else []
                except ValueError:
                    containers = []
                facts["running_containers"] = ids
                facts["running_names"] = container_names(containers) or ids
                facts["gpu_containers"] = container_names([c for c in containers if uses_gpus(c)])
    root = Path(facts["root_dir"])
    if not facts["running"] and (root / "swarm" / "docker-state.json").exists():
        facts["swarm"] = "member (swarm state in " + str(root / "swarm") + ")"
    try:
        facts["root_entries"] = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    except OSError:
        facts["root_entries"] = []
    facts["fresh"] = is_fresh(facts["installed"], facts["root_entries"])
    return facts


def containerd_facts(record_file: str) -> dict[str, Any]:
    rc, out, _ = run(["systemctl", "is-active", "containerd"], timeout=15)
    active = parse_active(out, ["containerd"])["containerd"]
    namespaces: list[str] = []
    foreign_containers: dict[str, int] = {}
    if active:
        rc, out, _ = run(["ctr", "--timeout", "10s", "namespaces", "list", "-q"], timeout=20)
        namespaces = parse_namespaces(out) if rc == 0 else []
        for namespace in foreign_namespaces(namespaces):
            rc, out, _ = run(["ctr", "--timeout", "10s", "-n", namespace, "containers", "list", "-q"], timeout=20)
            foreign_containers[namespace] = len(out.split()) if rc == 0 else 0
    content = CONTAINERD_CONFIG.read_bytes() if CONTAINERD_CONFIG.is_file() else None
    _, out, _ = run(["dpkg-query", "-W", "-f", "${Conffiles}\n", "containerd", "containerd.io"])
    try:
        recorded = Path(record_file).read_text(encoding="utf-8").strip()
    except OSError:
        recorded = ""
    configs = [CONTAINERD_CONFIG, *sorted(CONTAINERD_DROPINS.glob("*.toml"))]
    nvidia = any(p.is_file() and "nvidia" in p.read_text(encoding="utf-8", errors="replace") for p in configs)
    return {
        "active": active,
        "namespaces": namespaces,
        "foreign_containers": foreign_containers,
        "config": containerd_config_origin(content, parse_conffiles(out), recorded),
        "nvidia_runtime": nvidia,
    }


def probe(request: dict[str, Any]) -> dict[str, Any]:
    engine_remove = list(request.get("engine_remove", []))
    toolkit_remove = list(request.get("toolkit_remove", []))
    consumers = list(request.get("consumer_packages", []))
    reported = list(request.get("report_packages", []))
    installed = installed_packages(sorted(set(engine_remove + toolkit_remove + consumers + reported)))
    engine_installed = [p for p in engine_remove if p in installed]
    toolkit_installed = [p for p in toolkit_remove if p in installed]
    engine_collateral, engine_error = simulate_removal(engine_installed)
    toolkit_collateral, toolkit_error = simulate_removal(toolkit_installed)
    services = list(request.get("consumer_services", []))
    _, out, _ = run(["systemctl", "is-active", *services], timeout=15) if services else (0, "", "")
    daemon_json = read_json(request.get("daemon_json", "/etc/docker/daemon.json"))
    state = read_json(request.get("state_file", ""))
    facts: dict[str, Any] = {
        "installed": installed,
        "engine": {"remove": engine_installed, "collateral": engine_collateral, "simulation_error": engine_error},
        "toolkit": {"remove": toolkit_installed, "collateral": toolkit_collateral, "simulation_error": toolkit_error},
        "consumers": {
            "packages": {p: installed[p] for p in consumers if p in installed},
            "services": [unit for unit, up in parse_active(out, services).items() if up],
        },
        "docker": docker_facts(daemon_json, request.get("docker_root_default", "/var/lib/docker")),
        "containerd": containerd_facts(request.get("containerd_record", "")),
        "daemon_json": daemon_json,
        "state": state,
    }
    facts["engine"]["in_use"] = engine_reasons(facts, request)
    facts["toolkit"]["in_use"] = toolkit_reasons(facts)
    facts["dlstack_data_root"] = dlstack_data_root(daemon_json, state)
    return facts


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: runtime_probe.py '<JSON request>'", file=sys.stderr)
        return 2
    print(json.dumps(probe(json.loads(argv[1])), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
