"""Render every container template for every entry of containers/images.yml and check the result.

No Docker needed: the Dockerfiles are parsed here (continuation lines joined, one instruction per
line, stages split at FROM) and checked for what the images promise: base image, non-root user,
OCI and org.dlstack labels equal to the resolved stack, NVIDIA runtime settings, the health check,
CA certificates in both stages, the pip layer before anything that changes often, and no build
tools in the runtime stage.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from dlstack import containers
from dlstack.cli import main
from dlstack.matrix import load_matrix
from dlstack.resolver import ResolutionError, resolve

PLANS = list(containers.iter_plans_for_tests())
IDS = [f"{p.name}-ubuntu{p.ubuntu}" for p in PLANS]
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "clang", "cpp", "python3-dev", "libc6-dev")
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            result.append([])
        assert result, "an instruction before the first FROM"
        result[-1].append((keyword, rest))
    return result


def key_values(args: str) -> dict[str, str]:
    """LABEL / ENV arguments in KEY=VALUE form (values may be double-quoted)."""
    return dict(item.split("=", 1) for item in shlex.split(args))


def merged(stage: list[tuple[str, str]], keyword: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for kw, rest in stage:
        if kw == keyword:
            values.update(key_values(rest))
    return values


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "lab-proxy.crt"
    path.write_text(CA_PEM, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def settings() -> containers.Settings:
    return containers.load_images()[0]


def rendered(plan: containers.Plan, ca_file: Path | None = None) -> str:
    return containers.render(plan, ca_certificates=[ca_file] if ca_file else [])


def by_name(name: str, ubuntu: str = "24.04") -> containers.Plan:
    return next(p for p in PLANS if p.name == name and p.ubuntu == ubuntu)


def test_matrix_covers_every_template() -> None:
    used = {p.template for p in PLANS}
    templates = {p.name for p in containers.CONTAINERS_DIR.glob("*.Dockerfile.j2") if not p.name.startswith("_")}
    assert used == templates
    assert {"cuda", "pytorch", "tensorflow", "pytorch-jupyter", "tensorflow-jupyter"} <= {p.name for p in PLANS}


@pytest.mark.parametrize("plan", PLANS, ids=IDS)
def test_final_stage_from_base_or_parent(plan: containers.Plan, ca_file: Path) -> None:
    final = stages(rendered(plan, ca_file))[-1]
    expected = plan.parent_tag or plan.base_image
    assert final[0] == ("FROM", expected)


@pytest.mark.parametrize("plan", PLANS, ids=IDS)
def test_runs_as_non_root_user(plan: containers.Plan, ca_file: Path, settings: containers.Settings) -> None:
    final = stages(rendered(plan, ca_file))[-1]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users, "no USER in the final stage"
    assert users[-1] == settings.user["name"]
    assert users[-1] not in ("root", "0")
    assert int(settings.user["uid"]) != 0


@pytest.mark.parametrize("plan", PLANS, ids=IDS)
def test_labels_carry_the_resolved_versions(plan: containers.Plan, ca_file: Path) -> None:
    labels = merged(stages(rendered(plan, ca_file))[-1], "LABEL")
    stack = plan.stack
    assert labels["org.dlstack.cuda"] == stack["cuda"]
    assert labels["org.dlstack.cudnn"] == stack["cudnn"]
    assert labels["org.dlstack.nccl"] == stack["nccl"]
    assert labels["org.dlstack.python"] == stack["python"]
    assert labels["org.dlstack.ubuntu"] == plan.ubuntu
    assert labels["org.dlstack.driver.min_version"] == plan.min_driver
    for name, choice in stack["frameworks"].items():
        assert labels[f"org.dlstack.{name}.version"] == choice["version"]
        assert labels[f"org.dlstack.{name}.variant"] == choice["variant"]
    for key in ("title", "description", "version", "ref.name", "base.name", "vendor"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert labels["org.opencontainers.image.ref.name"] == plan.reference
    installed = labels["org.dlstack.requirements"].split()
    assert set(plan.requirements) <= set(installed)
    for choice in stack["frameworks"].values():  # a Jupyter variant names its parent's framework too
        assert choice["requirement"] in installed


@pytest.mark.parametrize("plan", PLANS, ids=IDS)
def test_tag_is_derived_from_the_versions(plan: containers.Plan) -> None:
    assert plan.tag.endswith(f"ubuntu{plan.ubuntu}")
    for choice in plan.stack["frameworks"].values():
        assert choice["version"] in plan.tag
    if plan.name.startswith("cuda"):
        assert plan.tag.startswith(plan.stack["cuda"])


@pytest.mark.parametrize("plan", [p for p in PLANS if not p.parent_tag], ids=lambda p: f"{p.name}-{p.ubuntu}")
def test_nvidia_runtime_settings_and_healthcheck(plan: containers.Plan, ca_file: Path) -> None:
    final = stages(rendered(plan, ca_file))[-1]
    env = merged(final, "ENV")
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["NVIDIA_REQUIRE_DRIVER"] == f"driver>={plan.min_driver}"
    assert env["DLSTACK_FRAMEWORKS"] == ",".join(plan.frameworks)
    assert env["PIP_CERT"] == env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    healthchecks = [rest for kw, rest in final if kw == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert healthchecks[0].endswith('CMD ["/opt/dlstack/healthcheck"]')
    copies = [rest for kw, rest in final if kw == "COPY"]
    assert "gpu_verify.py /opt/dlstack/gpu_verify.py" in copies
    assert "healthcheck.sh /opt/dlstack/healthcheck" in copies


@pytest.mark.parametrize("plan", [p for p in PLANS if p.parent_tag], ids=lambda p: f"{p.name}-{p.ubuntu}")
def test_jupyter_variant_inherits_runtime_settings(plan: containers.Plan, ca_file: Path) -> None:
    final = stages(rendered(plan, ca_file))[-1]
    keywords = [kw for kw, _ in final]
    assert "HEALTHCHECK" not in keywords and "ENV" not in keywords  # the parent's stay in force
    assert ("EXPOSE", "8888") in final
    assert any(kw == "CMD" and "jupyter" in rest for kw, rest in final)
    run = " ".join(rest for kw, rest in final if kw == "RUN")
    assert all(shlex.quote(req) in run for req in plan.requirements)


@pytest.mark.parametrize("plan", PLANS, ids=IDS)
def test_no_build_tools_in_final_stage(plan: containers.Plan, ca_file: Path) -> None:
    final = stages(rendered(plan, ca_file))[-1]
    for kw, rest in final:
        if kw == "RUN" and "apt-get install" in rest:
            words = set(re.split(r"\s+", rest))
            assert not words & set(BUILD_TOOLS), rest


@pytest.mark.parametrize("plan", [p for p in PLANS if p.requirements and not p.parent_tag], ids=lambda p: p.name)
def test_builder_stage_pip_layer_is_cacheable(plan: containers.Plan, ca_file: Path) -> None:
    builder, final = stages(rendered(plan, ca_file))
    assert builder[0][1].endswith(" AS builder")
    pip = [i for i, (kw, rest) in enumerate(builder) if kw == "RUN" and "/opt/venv/bin/pip install" in rest]
    assert len(pip) == 1
    # nothing that changes often (gpu_verify.py, labels) comes before the pip layer
    assert all(kw not in ("LABEL",) and "gpu_verify" not in rest for kw, rest in builder[: pip[0]])
    for requirement in plan.requirements:
        assert shlex.quote(requirement) in builder[pip[0]][1]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    strip = builder[pip[0] + 1]
    assert strip[0] == "RUN" and "-name '*.a'" in strip[1] and "-name include" in strip[1]


@pytest.mark.parametrize("plan", [p for p in PLANS if not p.parent_tag], ids=lambda p: f"{p.name}-{p.ubuntu}")
def test_ca_certificates_in_every_stage_only_when_given(plan: containers.Plan, ca_file: Path) -> None:
    ca_copy = ("COPY", "ca-certificates/ /usr/local/share/ca-certificates/dlstack/")
    for stage in stages(rendered(plan, ca_file)):
        assert ca_copy in stage
        runs = " ".join(rest for kw, rest in stage if kw == "RUN")
        assert "update-ca-certificates" in runs
    for stage in stages(rendered(plan)):
        assert ca_copy not in stage


def test_framework_images_install_the_resolved_requirement() -> None:
    for name, framework in (("pytorch", "torch"), ("tensorflow", "tensorflow")):
        plan = by_name(name)
        choice = plan.stack["frameworks"][framework]
        entry = {e.name: e for e in containers.load_images()[1]}[name]
        assert plan.requirements == (choice["requirement"], *entry.packages)
        expected = resolve(os=plan.ubuntu, frameworks=entry.frameworks)
        assert expected.to_dict()["frameworks"][framework]["requirement"] == choice["requirement"]


def test_cuda_image_packages_follow_the_stack() -> None:
    plan = by_name("cuda")
    stack = plan.stack
    major = stack["cuda"].split(".")[0]
    assert stack["frameworks"] == {}
    assert any(req.endswith(f"=={stack['cuda']}.*") and req.startswith("cuda-toolkit[") for req in plan.requirements)
    assert f"nvidia-cudnn-cu{major}=={stack['cudnn']}.*" in plan.requirements
    assert f"nvidia-nccl-cu{major}=={stack['nccl']}.*" in plan.requirements
    # the CUDA line is the PyTorch image's, so both need the same driver
    assert stack["cuda"] == by_name("pytorch").stack["cuda"]


@pytest.mark.parametrize("name", ["cuda", "pytorch", "tensorflow"])
def test_minimum_driver_is_the_oldest_the_resolver_accepts(name: str) -> None:
    plan = by_name(name)
    pins = [c["requirement"] for c in plan.stack["frameworks"].values()]
    branches = sorted(load_matrix().drivers, key=lambda d: d.branch)
    index = [d.name for d in branches].index(plan.min_driver_branch)
    resolve(
        os=plan.ubuntu, frameworks=pins, cuda=plan.stack["cuda"], driver=plan.min_driver_branch, driver_source="nvidia"
    )
    if index:
        with pytest.raises(ResolutionError):
            resolve(
                os=plan.ubuntu,
                frameworks=pins,
                cuda=plan.stack["cuda"],
                driver=branches[index - 1].name,
                driver_source="nvidia",
            )


def test_base_image_override_and_registry_prefix() -> None:
    plans = containers.plan(names=["pytorch-jupyter"], base_image="dlstack/ubuntu:{ubuntu}-base", registry="reg:5000")
    assert [p.name for p in plans] == ["pytorch", "pytorch-jupyter"]  # the parent comes along, first
    parent, child = plans
    assert parent.base_image == f"dlstack/ubuntu:{parent.ubuntu}-base"
    assert parent.repository == "reg:5000/dlstack/pytorch"
    assert child.parent_tag == parent.reference
    assert child.tag == parent.tag


def test_default_base_image_is_docker_hub_ubuntu() -> None:
    assert by_name("pytorch").base_image == "ubuntu:24.04"


def test_no_version_numbers_typed_in_templates() -> None:
    version = re.compile(r"\b\d+\.\d+(\.\d+)*\b")
    for path in containers.CONTAINERS_DIR.glob("*.j2"):
        text = path.read_text(encoding="utf-8").replace("0.0.0.0", "")  # noqa: S104 - Jupyter's --ip, not a version
        assert not version.findall(text), f"{path.name} types a version number"


def test_matrix_versions_are_only_requirement_specs() -> None:
    text = containers.IMAGES_FILE.read_text(encoding="utf-8")
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        if code.strip().startswith("ubuntu:"):
            continue  # Ubuntu releases are the matrix's own choice (checked against ubuntu.yml)
        for match in re.finditer(r"\d+\.\d+", code):
            assert re.search(r"[<>=~!]=?\s*$", code[: match.start()]), f"version outside a requirement spec: {line!r}"


def test_unknown_image_name_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"image 'pytorchh' is not in images.yml \(known: "):
        containers.plan(names=["pytorchh"])


def test_bad_template_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "images.yml"
    text = containers.IMAGES_FILE.read_text(encoding="utf-8").replace("pytorch.Dockerfile.j2", "pytorchh.Dockerfile.j2")
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"images\[pytorch\]\.template: 'pytorchh.Dockerfile.j2' is not a file"):
        containers.load_images(bad)


def test_non_pem_ca_file_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-cert.crt"
    bad.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        containers.expand_ca_files([str(bad)])


def test_write_context_assembles_the_build_context(tmp_path: Path, ca_file: Path) -> None:
    plan = by_name("pytorch")
    dest = containers.write_context(plan, tmp_path / "ctx", ca_certificates=[ca_file, ca_file])
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert names == [
        "Dockerfile",
        "ca-certificates/00-lab-proxy.crt",
        "ca-certificates/01-lab-proxy.crt",
        "gpu_verify.py",
        "gpu_verify_peaks.json",
        "healthcheck.sh",
    ]
    for script in ("gpu_verify.py", "healthcheck.sh"):
        assert (dest / script).stat().st_mode & stat.S_IXUSR
    assert (dest / "ca-certificates/00-lab-proxy.crt").read_text(encoding="utf-8") == CA_PEM
    peaks = json.loads((dest / "gpu_verify_peaks.json").read_text(encoding="utf-8"))
    assert peaks["NVIDIA H100 80GB HBM3"]["bf16"] == 989.5  # from dlstack/data/gpus.yml, with the healthy share
    assert 0 < peaks["NVIDIA H100 80GB HBM3"]["healthy_bf16"] < 1


def test_render_command_prints_every_planned_dockerfile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "render", "--image", "pytorch", "--base-image", "dlstack/ubuntu:{ubuntu}-base"]) == 0
    out = capsys.readouterr().out
    assert out.count("FROM dlstack/ubuntu:24.04-base") == 2
    assert f"# ---- {by_name('pytorch').reference}" in out


def test_format_sizes_compares_with_the_official_figures() -> None:
    plan = by_name("pytorch")
    uncompressed = containers._official_figure("pytorch", "uncompressed")
    assert uncompressed is not None
    assert uncompressed["source"].startswith("https://")
    row = {
        "image": plan.reference,
        "size": uncompressed["bytes"] // 2,
        "compressed": None,
        "official_uncompressed": uncompressed,
        "official_compressed": containers._official_figure("pytorch", "compressed"),
    }
    text = containers.format_sizes([row])
    assert "(ours: 50%)" in text
    assert f"source: {uncompressed['source']}" in text


def _run_healthcheck(tmp_path: Path, **env: str) -> list[str]:
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    fake.chmod(0o755)
    environ = {"PATH": f"{tmp_path}:{os.environ['PATH']}", **env}
    out = subprocess.run(
        ["sh", str(containers.HEALTHCHECK)], capture_output=True, text=True, check=True, env=environ
    ).stdout
    return out.splitlines()


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="a GPU is visible here: auto mode picks the GPU")
def test_healthcheck_falls_back_to_cpu_without_a_gpu(tmp_path: Path) -> None:
    args = _run_healthcheck(tmp_path, DLSTACK_FRAMEWORKS="torch,tensorflow")
    assert args[0] == "/opt/dlstack/gpu_verify.py"
    assert "--cpu" in args and "--skip-perf" in args
    assert args.count("--require") == 2
    assert args[args.index("--frameworks") + 1] == "torch,tensorflow"


def test_healthcheck_gpu_mode_can_be_forced(tmp_path: Path) -> None:
    args = _run_healthcheck(tmp_path, DLSTACK_FRAMEWORKS="", DLSTACK_HEALTHCHECK_MODE="gpu")
    assert "--cpu" not in args
    assert "--require" not in args


def test_plans_are_json_serialisable() -> None:
    for plan in PLANS:
        json.dumps({"stack": plan.stack, "labels": plan.labels})
