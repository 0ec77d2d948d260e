"""Container images from the same versions as the hosts: plan, render, build, size.

``containers/images.yml`` lists the images (template, framework requirement specs, parent, tag
format); :func:`plan` resolves each entry for each Ubuntu release through
:func:`dlstack.resolver.resolve` (the resolver that provisions hosts), so an image's CUDA, cuDNN,
NCCL, framework wheel and minimum driver are the host's. :func:`render` turns a plan into a
Dockerfile (Jinja2 templates under ``containers/``), :func:`build` builds it with the Docker SDK
(legacy builder, host network, layer cache), and :func:`size_rows` compares the result with the
official image it replaces (``dlstack/data/official_images.yml``).

Command line: ``scripts/dlstack images build|render|sizes`` (:func:`register_images_commands`);
Ansible: ``plugins/modules/dlstack_image_build.py`` calls :func:`build_images`.
"""

from __future__ import annotations

import argparse
import glob
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from dlstack.data import load, ubuntu_releases
from dlstack.matrix import load_matrix
from dlstack.report import gpu_peaks
from dlstack.resolver import ResolutionError, resolve

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_DIR = REPO_ROOT / "containers"
IMAGES_FILE = CONTAINERS_DIR / "images.yml"
GPU_VERIFY = REPO_ROOT / "scripts" / "gpu_verify.py"
HEALTHCHECK = CONTAINERS_DIR / "healthcheck.sh"
PEAKS_FILE = "gpu_verify_peaks.json"  # gpu_verify.py reads it from beside itself
CI_BASE_IMAGE = "dlstack/ubuntu:{ubuntu}-base"
LABEL_PREFIX = "org.dlstack"
GB = 1000**3

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------- matrix


@dataclass(frozen=True)
class Settings:
    registry: str
    namespace: str
    base_image: str
    ubuntu: tuple[str, ...]
    user: Mapping[str, Any]
    healthcheck: Mapping[str, Any]


@dataclass(frozen=True)
class Entry:
    """One image of the matrix, before resolution."""

    name: str
    template: str
    tag: str
    replaces: str
    frameworks: tuple[str, ...] = ()
    resolve_with: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    parent: str | None = None
    base_image: str | None = None
    ubuntu: tuple[str, ...] = ()
    default: bool = True


def _require(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in mapping:
        raise ValueError(f"{where}: missing key {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise ValueError(f"{where}.{key}: {value!r} is not a {kind.__name__}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where}: {value!r} is not a list of strings")
    return tuple(value)


def load_images(path: Path = IMAGES_FILE) -> tuple[Settings, tuple[Entry, ...]]:
    """Read and check the images matrix; errors name the entry, the key and what is accepted."""
    with path.open(encoding="utf-8") as handle:  # from the file, so that a YAML error names it
        data = yaml.safe_load(handle)
    where = path.name
    raw = _require(data, "settings", dict, where)
    releases = ubuntu_releases()
    settings = Settings(
        registry=str(raw.get("registry") or ""),
        namespace=_require(raw, "namespace", str, f"{where}.settings"),
        base_image=_require(raw, "base_image", str, f"{where}.settings"),
        ubuntu=_strings(_require(raw, "ubuntu", list, f"{where}.settings"), f"{where}.settings.ubuntu"),
        user=_require(raw, "user", dict, f"{where}.settings"),
        healthcheck=_require(raw, "healthcheck", dict, f"{where}.settings"),
    )
    entries = []
    for index, item in enumerate(_require(data, "images", list, where)):
        at = f"{where}.images[{index}]"
        name = _require(item, "name", str, at)
        at = f"{where}.images[{name}]"
        template = _require(item, "template", str, at)
        if not (CONTAINERS_DIR / template).is_file():
            known = sorted(p.name for p in CONTAINERS_DIR.glob("[!_]*.j2"))
            raise ValueError(f"{at}.template: {template!r} is not a file under containers/ (known: {known})")
        entry = Entry(
            name=name,
            template=template,
            tag=_require(item, "tag", str, at),
            replaces=_require(item, "replaces", str, at),
            frameworks=_strings(item.get("frameworks", []), f"{at}.frameworks"),
            resolve_with=_strings(item.get("resolve_with", []), f"{at}.resolve_with"),
            packages=_strings(item.get("packages", []), f"{at}.packages"),
            parent=item.get("parent"),
            base_image=item.get("base_image"),
            ubuntu=_strings(item.get("ubuntu", list(settings.ubuntu)), f"{at}.ubuntu"),
            default=bool(item.get("default", True)),
        )
        for version in entry.ubuntu:
            if version not in releases:
                raise ValueError(f"{at}.ubuntu: {version!r} is not a supported release ({sorted(releases)})")
        entries.append(entry)
    names = [entry.name for entry in entries]
    for entry in entries:
        if names.count(entry.name) > 1:
            raise ValueError(f"{where}: image name {entry.name!r} appears twice")
        if entry.parent is not None and entry.parent not in names:
            raise ValueError(f"{where}.images[{entry.name}].parent: {entry.parent!r} is not an image ({names})")
    return settings, tuple(entries)


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """One image for one Ubuntu release, with everything resolved."""

    name: str
    template: str
    ubuntu: str
    repository: str
    tag: str
    base_image: str
    stack: Mapping[str, Any]
    min_driver: str
    min_driver_branch: str
    requirements: tuple[str, ...]
    index_url: str | None
    frameworks: tuple[str, ...]
    replaces: str
    parent_tag: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


def minimum_driver(ubuntu: str, frameworks: Sequence[str], cuda: str) -> tuple[str, str]:
    """The oldest driver (branch, version) on which the resolver accepts this image's stack.

    Asks the resolver branch by branch, oldest first, with the CUDA and framework pinned to the
    image's and NVIDIA's repository allowed (a container does not care which archive packages the
    host's driver): minor-version compatibility included, as the resolver's rules define it.
    """
    for branch in sorted(load_matrix().drivers, key=lambda driver: driver.branch):
        try:
            stack = resolve(os=ubuntu, frameworks=frameworks, cuda=cuda, driver=branch.name, driver_source="nvidia")
        except ResolutionError:
            continue
        return stack.driver_branch, stack.driver_min_version
    raise ValueError(f"no driver branch runs CUDA {cuda} with {list(frameworks)} on Ubuntu {ubuntu}")


def _fields(stack: Mapping[str, Any], ubuntu: str) -> dict[str, str]:
    """Placeholders for tag formats and package specs, all from the resolved stack."""
    cuda = str(stack["cuda"])
    values = {
        "ubuntu": ubuntu,
        "python": str(stack["python"]),
        "cuda": cuda,
        "cuda_nodot": cuda.replace(".", ""),
        "cuda_major": cuda.split(".")[0],
        "cudnn": str(stack["cudnn"]),
        "cudnn_major": str(stack["cudnn"]).split(".")[0],
        "nccl": str(stack["nccl"]),
    }
    for choice in stack["frameworks"].values():  # the image's framework (one per framework image)
        values.update(version=choice["version"], variant=choice["variant"])
    return values


def _format(template: str, values: Mapping[str, str], where: str) -> str:
    try:
        return template.format(**values)
    except KeyError as exc:
        raise ValueError(f"{where}: placeholder {exc} is not one of {sorted(values)}") from None


def _labels(plan: Plan, entry: Entry, revision: Mapping[str, str], inherited: Sequence[str] = ()) -> dict[str, str]:
    stack = plan.stack
    labels = {
        "org.opencontainers.image.title": f"dlstack {entry.name}",
        "org.opencontainers.image.description": (
            f"dlstack {entry.name} image on Ubuntu {plan.ubuntu}: CUDA {stack['cuda']}, cuDNN {stack['cudnn']}, "
            f"driver >= {plan.min_driver}"
        ),
        "org.opencontainers.image.version": plan.tag,
        "org.opencontainers.image.ref.name": plan.reference,
        "org.opencontainers.image.base.name": plan.parent_tag or plan.base_image,
        "org.opencontainers.image.vendor": "dlstack",
        **{f"org.opencontainers.image.{key}": value for key, value in revision.items()},
        f"{LABEL_PREFIX}.image": entry.name,
        f"{LABEL_PREFIX}.ubuntu": plan.ubuntu,
        f"{LABEL_PREFIX}.python": str(stack["python"]),
        f"{LABEL_PREFIX}.cuda": str(stack["cuda"]),
        f"{LABEL_PREFIX}.cudnn": str(stack["cudnn"]),
        f"{LABEL_PREFIX}.nccl": str(stack["nccl"]),
        f"{LABEL_PREFIX}.driver.min_version": plan.min_driver,
        f"{LABEL_PREFIX}.driver.min_branch": plan.min_driver_branch,
        f"{LABEL_PREFIX}.requirements": " ".join([*inherited, *plan.requirements]),
    }
    for name, choice in stack["frameworks"].items():
        labels[f"{LABEL_PREFIX}.{name}.version"] = choice["version"]
        labels[f"{LABEL_PREFIX}.{name}.variant"] = choice["variant"]
    return labels


def git_revision(root: Path = REPO_ROOT) -> dict[str, str]:
    """OCI ``revision`` and ``created`` from the checkout's HEAD (deterministic: a rebuild of the same
    commit gives the same image ID); empty outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%H %cI"], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"revision": out[0], "created": out[1]} if len(out) == 2 else {}


def plan(
    *,
    names: Iterable[str] = (),
    ubuntu: Iterable[str] = (),
    base_image: str | None = None,
    registry: str | None = None,
    images_file: Path = IMAGES_FILE,
    revision: Mapping[str, str] | None = None,
) -> list[Plan]:
    """Resolve the matrix into build plans, parents before children.

    ``names``: images to plan (their parents come along); default: every entry with ``default: true``.
    ``base_image``: overrides every entry's base (``{ubuntu}`` is replaced by the release).
    ``revision``: the OCI ``revision``/``created`` labels (default: the checkout's HEAD).
    """
    settings, entries = load_images(images_file)
    by_name = {entry.name: entry for entry in entries}
    wanted = list(names) or [entry.name for entry in entries if entry.default]
    for name in wanted:
        if name not in by_name:
            raise ValueError(f"image {name!r} is not in {images_file.name} (known: {sorted(by_name)})")
    ordered: list[Entry] = []

    def add(name: str) -> None:
        entry = by_name[name]
        if entry.parent:
            add(entry.parent)
        if entry not in ordered:
            ordered.append(entry)

    for name in wanted:
        add(name)
    releases = set(ubuntu)
    revision = git_revision() if revision is None else revision
    registry = settings.registry if registry is None else registry
    plans: dict[tuple[str, str], Plan] = {}
    for entry in ordered:
        for version in entry.ubuntu:
            if releases and version not in releases:
                continue
            parent = plans.get((entry.parent, version)) if entry.parent else None
            if entry.parent and parent is None:
                raise ValueError(f"image {entry.name!r} on Ubuntu {version}: its parent {entry.parent!r} is not built")
            plans[(entry.name, version)] = _plan_one(entry, version, settings, parent, base_image, registry, revision)
    return list(plans.values())


def _plan_one(
    entry: Entry,
    ubuntu: str,
    settings: Settings,
    parent: Plan | None,
    base_image: str | None,
    registry: str,
    revision: Mapping[str, str],
) -> Plan:
    where = f"image {entry.name!r} on Ubuntu {ubuntu}"
    if parent is not None:
        stack, min_branch, min_driver = parent.stack, parent.min_driver_branch, parent.min_driver
        frameworks = parent.frameworks
        base = parent.base_image
    else:
        try:
            stack = resolve(os=ubuntu, frameworks=entry.frameworks or entry.resolve_with).to_dict()
        except ResolutionError as exc:
            raise ValueError(f"{where}: {exc}") from None
        pinned = [choice["requirement"] for choice in stack["frameworks"].values()]
        min_branch, min_driver = minimum_driver(ubuntu, pinned, str(stack["cuda"]))
        frameworks = tuple(stack["frameworks"]) if entry.frameworks else ()
        if not entry.frameworks:  # resolve_with only chose the CUDA line
            stack = {**stack, "frameworks": {}}
    values = _fields(stack, ubuntu)
    if parent is None:
        base = _format(base_image or entry.base_image or settings.base_image, values, f"{where}: base_image")
    if parent is not None:
        requirements = tuple(_format(spec, values, f"{where}: packages") for spec in entry.packages)
        index_url = None
    else:
        framework_specs = [choice["requirement"] for choice in stack["frameworks"].values()]
        packages = [_format(spec, values, f"{where}: packages") for spec in entry.packages]
        requirements = tuple(framework_specs + packages)
        urls = {choice["index_url"] for choice in stack["frameworks"].values() if choice["index_url"]}
        index_url = urls.pop() if urls else None
    repository = "/".join(part for part in (registry, settings.namespace, entry.name) if part)
    result = Plan(
        name=entry.name,
        template=entry.template,
        ubuntu=ubuntu,
        repository=repository,
        tag=_format(entry.tag, values, f"{where}: tag"),
        base_image=base,
        stack=stack,
        min_driver=min_driver,
        min_driver_branch=min_branch,
        requirements=requirements,
        index_url=index_url,
        frameworks=frameworks,
        replaces=entry.replaces,
        parent_tag=parent.reference if parent else None,
    )
    inherited = parent.labels[f"{LABEL_PREFIX}.requirements"].split() if parent else ()
    return Plan(**{**result.__dict__, "labels": _labels(result, entry, revision, inherited)})


# ----------------------------------------------------------------------------- render


def _double_quote(value: object) -> str:
    """A Dockerfile double-quoted word (LABEL, ENV): backslash, quote and ``$`` escaped."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{text}"'


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(CONTAINERS_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - renders Dockerfiles, not HTML
    )
    env.filters["sh"] = shlex.quote
    env.filters["dq"] = _double_quote
    return env


def render(image: Plan, *, ca_certificates: Sequence[Path] = (), settings: Settings | None = None) -> str:
    """The Dockerfile of one planned image."""
    settings = settings or load_images()[0]
    template = _environment().get_template(image.template)
    return template.render(
        name=image.name,
        template=image.template,
        tag=image.reference,
        base_image=image.base_image,
        parent_tag=image.parent_tag,
        requirements=image.requirements,
        index_url=image.index_url,
        frameworks=image.frameworks,
        min_driver=image.min_driver,
        labels=image.labels,
        user=settings.user,
        healthcheck=settings.healthcheck,
        ca_certificates=[path.name for path in ca_certificates],
    )


def expand_ca_files(patterns: Iterable[str]) -> list[Path]:
    """CA certificate files from paths or globs; each must be a readable PEM file."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or [pattern]  # noqa: PTH207 - absolute patterns; Path.glob is relative
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise ValueError(f"CA certificate {match!r} is not a file")
            if "-----BEGIN CERTIFICATE-----" not in path.read_text(encoding="utf-8", errors="replace"):
                raise ValueError(f"CA certificate {match!r} is not a PEM certificate (BEGIN CERTIFICATE)")
            files.append(path)
    return files


def write_context(
    image: Plan, dest: Path, *, ca_certificates: Sequence[Path] = (), settings: Settings | None = None
) -> Path:
    """Assemble the build context: Dockerfile, gpu_verify.py and its peaks, healthcheck, CA certificates."""
    if not GPU_VERIFY.is_file():
        raise ValueError(f"{GPU_VERIFY} is missing: the images carry it as their health check")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Dockerfile").write_text(
        render(image, ca_certificates=ca_certificates, settings=settings), encoding="utf-8"
    )
    for source, name in ((GPU_VERIFY, "gpu_verify.py"), (HEALTHCHECK, "healthcheck.sh")):
        shutil.copyfile(source, dest / name)
        (dest / name).chmod(0o755)
    # the peaks and healthy fractions from dlstack/data/gpus.yml, beside the script: the image judges itself
    (dest / PEAKS_FILE).write_text(json.dumps(gpu_peaks(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (dest / PEAKS_FILE).chmod(0o644)
    if ca_certificates:
        ca_dir = dest / "ca-certificates"
        ca_dir.mkdir(exist_ok=True)
        for index, path in enumerate(ca_certificates):
            # update-ca-certificates only reads *.crt; the index keeps equal basenames apart
            target = ca_dir / f"{index:02d}-{path.stem}.crt"
            shutil.copyfile(path, target)
            target.chmod(0o644)
    return dest


# ----------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildResult:
    name: str
    reference: str
    image_id: str
    seconds: float
    size: int
    steps: int
    cached_steps: int
    pushed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def docker_client() -> Any:
    import docker  # the Docker SDK: only the build and size commands need it
    from docker.errors import DockerException

    try:
        return docker.from_env(timeout=600)
    except DockerException as exc:  # no engine, or no permission on its socket
        raise RuntimeError(f"cannot reach the Docker engine (is it running, and may this user use it?): {exc}") from exc


def _stream_build(client: Any, context: Path, reference: str, *, nocache: bool, progress: Progress) -> tuple[int, int]:
    steps = cached = 0
    for chunk in client.api.build(
        path=str(context),
        tag=reference,
        network_mode="host",
        rm=True,
        forcerm=True,  # no build container is left behind, even when a step fails
        pull=False,
        nocache=nocache,
        decode=True,
    ):
        if "error" in chunk:
            raise RuntimeError(f"docker build of {reference} failed: {chunk['error'].strip()}")
        text = chunk.get("stream", "")
        if text.startswith("Step "):
            steps += 1
        if "Using cache" in text:
            cached += 1
        for line in text.splitlines():
            if line.strip():
                progress(line)
    return steps, cached


def _push(client: Any, image: Plan, progress: Progress) -> None:
    last = ""
    for chunk in client.api.push(image.repository, tag=image.tag, stream=True, decode=True):
        if "error" in chunk:
            raise RuntimeError(f"push of {image.reference} failed: {chunk['error']}")
        status = f"{chunk.get('id', '')} {chunk.get('status', '')}".strip()
        if status and status != last and "Pushing" not in status:
            progress(status)
            last = status


def _image_id(client: Any, reference: str) -> str | None:
    import docker.errors

    try:
        return client.images.get(reference).id
    except docker.errors.ImageNotFound:
        return None


def _remove_superseded(client: Any, image_id: str, progress: Progress) -> None:
    """Remove the image a rebuild took the tag from (no dangling images pile up); keep it when it is
    still tagged elsewhere or used by a container."""
    import docker.errors

    try:
        client.images.remove(image_id)
        progress(f"removed the superseded image {image_id[:19]}")
    except docker.errors.APIError:
        pass


def build(
    image: Plan,
    *,
    client: Any,
    ca_certificates: Sequence[Path] = (),
    settings: Settings | None = None,
    push: bool = False,
    nocache: bool = False,
    progress: Progress = print,
) -> BuildResult:
    """Build one planned image (legacy builder, host network, layer cache) and optionally push it."""
    started = time.monotonic()
    previous = _image_id(client, image.reference)
    with tempfile.TemporaryDirectory(prefix=f"dlstack-{image.name}-") as tmp:
        context = write_context(image, Path(tmp), ca_certificates=ca_certificates, settings=settings)
        steps, cached = _stream_build(client, context, image.reference, nocache=nocache, progress=progress)
    seconds = time.monotonic() - started
    built = client.images.get(image.reference)
    if previous and previous != built.id:
        _remove_superseded(client, previous, progress)
    if push:
        _push(client, image, progress)
    return BuildResult(
        image.name, image.reference, built.id, round(seconds, 1), built.attrs["Size"], steps, cached, push
    )


def build_images(
    *,
    names: Iterable[str] = (),
    ubuntu: Iterable[str] = (),
    base_image: str | None = None,
    registry: str | None = None,
    ca_certificates: Iterable[str] = (),
    push: bool = False,
    nocache: bool = False,
    progress: Progress = print,
    client: Any = None,
    revision: Mapping[str, str] | None = None,
) -> list[BuildResult]:
    """Plan and build images, parents first: the one implementation behind the CLI and Ansible."""
    settings = load_images()[0]
    cas = expand_ca_files(ca_certificates)
    plans = plan(names=names, ubuntu=ubuntu, base_image=base_image, registry=registry, revision=revision)
    client = client or docker_client()
    results = []
    for image in plans:
        progress(f"==> {image.name}: {image.reference} (from {image.parent_tag or image.base_image})")
        results.append(
            build(
                image,
                client=client,
                ca_certificates=cas,
                settings=settings,
                push=push,
                nocache=nocache,
                progress=progress,
            )
        )
    return results


# ----------------------------------------------------------------------------- sizes


def official_images() -> dict[str, Any]:
    """Published sizes of the official images ours replace (``dlstack/data/official_images.yml``)."""
    return load("official_images")["images"]


def _official_figure(name: str, kind: str) -> Mapping[str, Any] | None:
    for figure in official_images().get(name, {}).get("figures", []):
        if figure["kind"] == kind and figure["bytes"]:
            return figure
    return None


def compressed_size(client: Any, reference: str) -> int:
    """Bytes of ``docker save`` gzipped at level 6 (what a registry push stores, within a few %)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    total = 0
    for chunk in client.api.get_image(reference, chunk_size=4 * 1024 * 1024):
        total += len(compressor.compress(chunk))
    return total + len(compressor.flush())


def size_rows(plans: Sequence[Plan], client: Any, *, compressed: bool = False) -> list[dict[str, Any]]:
    """Each image's size (None when not built) next to the official image it replaces."""
    import docker.errors

    rows = []
    for image in plans:
        try:
            size = client.images.get(image.reference).attrs["Size"]
        except docker.errors.ImageNotFound:
            size = None
        rows.append(
            {
                "image": image.reference,
                "size": size,
                "compressed": compressed_size(client, image.reference) if compressed and size else None,
                "official_uncompressed": _official_figure(image.name, "uncompressed"),
                "official_compressed": _official_figure(image.name, "compressed"),
            }
        )
    return rows


def _gb(value: int | None) -> str:
    return "-" if value is None else f"{value / GB:.2f} GB"


def _versus(ours: int | None, figure: Mapping[str, Any] | None) -> str:
    if figure is None:
        return "no published figure"
    text = f"{figure['image']} {_gb(figure['bytes'])}"
    if ours:
        text += f" (ours: {ours / figure['bytes']:.0%})"
    return text


def format_sizes(rows: Sequence[Mapping[str, Any]]) -> str:
    """A readable table: our size and gzip size, each against the official figure of the same kind."""
    lines = []
    sources: list[str] = []
    for row in rows:
        size = _gb(row["size"]) if row["size"] else "not built"
        lines.append(f"{row['image']}: {size} uncompressed, {_gb(row['compressed'])} gzip")
        lines.append(f"    official uncompressed: {_versus(row['size'], row['official_uncompressed'])}")
        lines.append(f"    official compressed:   {_versus(row['compressed'], row['official_compressed'])}")
        for figure in (row["official_uncompressed"], row["official_compressed"]):
            if figure and figure["source"] not in sources:
                sources.append(figure["source"])
    lines += [f"source: {source}" for source in sources]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def register_images_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``build``, ``render`` and ``sizes`` to ``dlstack images``."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--image", action="append", default=[], help="image name from images.yml (repeatable)")
        parser.add_argument(
            "--ubuntu", action="append", default=[], choices=sorted(ubuntu_releases()), help="Ubuntu release"
        )
        parser.add_argument(
            "--base-image",
            help=f"base image of every stage, {{ubuntu}} = release (CI without a registry: '{CI_BASE_IMAGE}')",
        )
        parser.add_argument("--registry", help="registry prefix of the tags and push target (default: images.yml)")

    build_parser = sub.add_parser("build", help="build the container images (Docker SDK, layer cache)")
    common(build_parser)
    build_parser.add_argument(
        "--ca-cert", action="append", default=[], metavar="FILE", help="extra CA certificate (PEM; repeatable; globs)"
    )
    build_parser.add_argument("--push", action="store_true", help="push each image to the registry after its build")
    build_parser.add_argument("--no-cache", action="store_true", help="build without the layer cache")
    build_parser.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    build_parser.set_defaults(func=_cmd_build)

    render_parser = sub.add_parser("render", help="print or write the rendered Dockerfiles")
    common(render_parser)
    render_parser.add_argument("--out", type=Path, help="write <out>/<image>-ubuntu<release>/ build contexts")
    render_parser.add_argument("--ca-cert", action="append", default=[], metavar="FILE", help="extra CA certificate")
    render_parser.set_defaults(func=_cmd_render)

    sizes_parser = sub.add_parser("sizes", help="image sizes next to the official images they replace")
    common(sizes_parser)
    sizes_parser.add_argument("--compressed", action="store_true", help="also gzip each image (slow: minutes)")
    sizes_parser.add_argument("--json", action="store_true", help="JSON output")
    sizes_parser.set_defaults(func=_cmd_sizes)


def _plans(args: argparse.Namespace) -> list[Plan]:
    return plan(names=args.image, ubuntu=args.ubuntu, base_image=args.base_image, registry=args.registry)


def _cmd_build(args: argparse.Namespace) -> int:
    results = build_images(
        names=args.image,
        ubuntu=args.ubuntu,
        base_image=args.base_image,
        registry=args.registry,
        ca_certificates=args.ca_cert,
        push=args.push,
        nocache=args.no_cache,
    )
    for result in results:
        print(f"{result.reference}: {result.seconds:.0f} s, {result.cached_steps}/{result.steps} steps cached")
    plans = [p for p in _plans(args) if p.reference in {r.reference for r in results}]
    rows = size_rows(plans, docker_client())
    print(format_sizes(rows))
    if args.json:
        print(json.dumps({"builds": [r.to_dict() for r in results], "sizes": rows}, indent=2))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    cas = expand_ca_files(args.ca_cert)
    for image in _plans(args):
        if args.out:
            dest = write_context(image, args.out / f"{image.name}-ubuntu{image.ubuntu}", ca_certificates=cas)
            print(dest)
        else:
            sys.stdout.write(f"# ---- {image.reference}\n{render(image, ca_certificates=cas)}\n")
    return 0


def _cmd_sizes(args: argparse.Namespace) -> int:
    rows = size_rows(_plans(args), docker_client(), compressed=args.compressed)
    print(json.dumps(rows, indent=2) if args.json else format_sizes(rows))
    return 0


def iter_plans_for_tests() -> Iterator[Plan]:
    """Every entry of the matrix on every release it names, the non-default ones included."""
    _, entries = load_images()
    yield from plan(names=[entry.name for entry in entries])
