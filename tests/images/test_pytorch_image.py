"""Build the PyTorch runtime image on Ubuntu 24.04 for real and check it from the outside.

Marker ``images`` (needs a Docker daemon, the Ubuntu archive and PyPI). The build uses the local
``dlstack/ubuntu:24.04-base`` image (built here when missing) and this machine's extra CA
certificates, so pip in the build trusts an HTTPS-inspecting proxy. The image is kept afterwards
(a rebuild then takes seconds); every container a test starts is removed.

    .venv/bin/pytest -m images tests/images -s      # -s shows the build progress and timings
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dlstack import containers, testimages

# With pytest --dist loadscope one worker builds the image once for the whole module.
pytestmark = pytest.mark.images

UBUNTU = "24.04"
BASE = containers.CI_BASE_IMAGE
HOST_CAS = sorted(str(p) for p in Path("/usr/local/share/ca-certificates").glob("*.crt"))
COMPILERS = ("gcc", "cc", "g++", "c++", "make", "clang", "ld")
# one revision for every plan and build of this module: a commit made while the tests run must
# not change the labels between the first build and the rebuild
REVISION = containers.git_revision()


def docker(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def client() -> Any:
    try:
        client = containers.docker_client()
        client.ping()
    except Exception as exc:  # any failure to reach the daemon means: no Docker here
        pytest.skip(f"no Docker daemon: {exc}")
    return client


@pytest.fixture(scope="module")
def plan(client: Any) -> containers.Plan:
    testimages.build([UBUNTU])  # cached: seconds when dlstack/ubuntu:24.04-base is current
    (found,) = containers.plan(names=["pytorch"], ubuntu=[UBUNTU], base_image=BASE, revision=REVISION)
    return found


@pytest.fixture(scope="module")
def built(client: Any, plan: containers.Plan) -> containers.BuildResult:
    started = time.monotonic()
    (result,) = containers.build_images(
        names=["pytorch"], ubuntu=[UBUNTU], base_image=BASE, ca_certificates=HOST_CAS, client=client, revision=REVISION
    )
    print(f"\nbuild of {result.reference}: {time.monotonic() - started:.0f} s, {result.size / 1e9:.2f} GB")
    assert result.reference == plan.reference
    return result


@pytest.fixture(scope="module")
def container(client: Any, built: containers.BuildResult) -> Iterator[str]:
    """A long-running container of the image whose health check runs every few seconds."""
    name = f"dlstack-test-pytorch-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "--detach", "--name", name, "--network", "host",
        "--health-interval", "5s", "--health-start-period", "0s", "--health-retries", "1",
        built.reference, "sleep", "900",
    )  # fmt: skip
    try:
        yield name
    finally:
        docker("rm", "--force", name, check=False)


def test_rebuild_reuses_the_layer_cache(client: Any, built: containers.BuildResult) -> None:
    started = time.monotonic()
    (again,) = containers.build_images(
        names=["pytorch"], ubuntu=[UBUNTU], base_image=BASE, ca_certificates=HOST_CAS, client=client, revision=REVISION
    )
    print(f"\nwarm rebuild: {time.monotonic() - started:.1f} s")
    from_steps = 2  # FROM is never reported as "Using cache"
    assert again.cached_steps == again.steps - from_steps
    assert again.image_id == built.image_id


def test_gpu_verify_passes_on_the_cpu(built: containers.BuildResult) -> None:
    """The image's own health check script, forced to JSON: torch imports and trains on the CPU."""
    run = docker("run", "--rm", "--network", "host", built.reference, "/opt/dlstack/healthcheck", "--json", check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout)
    checks = {check["id"]: check for check in report["checks"]}
    assert checks["torch.import"]["status"] == "pass"
    assert report["summary"]["status"] == "pass"
    # the script found the peaks shipped beside it: on a GPU it would judge throughput per model
    assert report["tool"]["peaks_file"] == "/opt/dlstack/gpu_verify_peaks.json"
    assert report["tool"]["peak_models"] > 20
    assert not [c["id"] for c in report["checks"] if c["status"] == "fail"]


def test_healthcheck_reports_healthy(container: str) -> None:
    deadline = time.monotonic() + 300
    status = "starting"
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", "--format", "{{json .State.Health}}", container).stdout)
        status = state["Status"]
        if status != "starting":
            break
        time.sleep(3)
    assert status == "healthy", json.dumps(state.get("Log", [])[-1:], indent=2)[-3000:]


def test_labels_match_the_resolved_stack(built: containers.BuildResult, plan: containers.Plan) -> None:
    (inspected,) = json.loads(docker("image", "inspect", built.reference).stdout)
    labels = inspected["Config"]["Labels"]
    assert {key: labels.get(key) for key in plan.labels} == dict(plan.labels)
    torch = plan.stack["frameworks"]["torch"]
    assert labels["org.dlstack.torch.version"] == torch["version"]
    assert labels["org.dlstack.torch.variant"] == torch["variant"]
    assert labels["org.dlstack.driver.min_version"] == plan.min_driver
    env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_runs_as_non_root(container: str, built: containers.BuildResult) -> None:
    (inspected,) = json.loads(docker("image", "inspect", built.reference).stdout)
    assert inspected["Config"]["User"] == "lab"
    assert docker("exec", container, "id", "-u").stdout.strip() != "0"


def test_torch_is_the_resolved_build(container: str, plan: containers.Plan) -> None:
    out = docker("exec", container, "python3", "-c", "import torch; print(torch.__version__, torch.version.cuda)")
    version, cuda = out.stdout.split()
    assert version.split("+")[0] == plan.stack["frameworks"]["torch"]["version"]
    assert cuda == plan.stack["cuda"]


@pytest.mark.parametrize("compiler", COMPILERS)
def test_no_compiler_in_the_image(container: str, compiler: str) -> None:
    found = docker("exec", container, "sh", "-c", f"command -v {compiler}", check=False)
    assert found.returncode != 0, f"{compiler} found at {found.stdout.strip()}"


@pytest.mark.skipif(not HOST_CAS, reason="this machine has no extra CA certificates to pass")
def test_extra_ca_certificates_are_trusted_at_run_time(container: str) -> None:
    listed = docker("exec", container, "ls", "/usr/local/share/ca-certificates/dlstack").stdout.split()
    assert len(listed) == len(HOST_CAS)
    bundle = docker("exec", container, "cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    body = "".join(Path(HOST_CAS[0]).read_text(encoding="utf-8").splitlines()[1:3])
    assert body in bundle.replace("\n", "")


def test_every_planned_requirement_is_installed(container: str, plan: containers.Plan) -> None:
    from packaging.requirements import Requirement

    for requirement in plan.requirements:
        name = Requirement(requirement).name
        shown = docker("exec", container, "python3", "-m", "pip", "show", name, check=False)
        assert shown.returncode == 0, f"{name} is not installed: {shown.stderr.strip()}"
