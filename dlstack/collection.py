"""The Ansible collection ``dlstack.gpu``, built from the repository (CONVENTIONS 21: never a second copy).

:func:`build` stages the collection in a temporary directory and runs ``ansible-galaxy collection build``
on it. Nothing in the staging is typed twice; each file comes from the repository:

- ``galaxy.yml``: the version is :data:`dlstack.__version__`; license and author are the roles' own
  (``roles/*/meta/main.yml``); the dependencies are the collections of ``requirements.yml`` that the roles
  or plugins name, from the version tested there up to its next major version;
- ``meta/runtime.yml``: ``requires_ansible`` is the range the preflight play accepts
  (``dlstack_ansible_min``/``dlstack_ansible_max`` in ``playbooks/preflight.yml``);
- ``requirements.txt``: the ``dlstack`` Python package at this version (the filter plugins import it);
- ``README.md`` (``docs/collection.md``), ``LICENSE``, ``changelogs/`` and ``CHANGELOG.md``, rendered here
  from the antsibull-changelog fragments (:func:`render_changelog`);
- ``roles/``: every use of the project's filters written fully qualified (:func:`qualify_filters`;
  inside a collection's role ansible-core does not find a short filter name), checked afterwards by
  parsing every Jinja expression (:func:`short_filter_uses`); a file a role reaches with
  ``role_path/../../`` is copied into that role's ``files/``, where the role looks first;
- ``plugins/``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import nodes

from dlstack import __version__
from dlstack.errors import UserError

NAMESPACE = "dlstack"
NAME = "gpu"
FQCN = f"{NAMESPACE}.{NAME}"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "build"
DESCRIPTION = (
    "Deep-learning GPU hosts on Ubuntu: NVIDIA driver, CUDA, container runtime, Python environments with "
    "PyTorch, TensorFlow and JAX, idle shutdown, cloud GPU VMs, and the verification of it all"
)
TAGS = ["gpu", "nvidia", "cuda", "deeplearning", "pytorch", "tensorflow", "jax", "ubuntu"]
# Files of the roles whose Jinja is rewritten (the READMEs too, so that their examples work as shown);
# only the YAML and the templates run, so only they are checked.
REWRITTEN = (".yml", ".yaml", ".j2", ".md")
CHECKED = (".yml", ".yaml", ".j2")
# Keys whose string values Ansible evaluates as bare Jinja expressions (no {{ }}).
EXPRESSION_KEYS = frozenset({"when", "changed_when", "failed_when", "until", "that"})
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
# "{{ role_path }}/../../scripts/x.py" or role_path ~ '/../../scripts/x.py': a file of the repository
_ROLE_PATH_UP = re.compile(r"role_path\s*(?:\}\}\s*|~\s*['\"])/\.\./\.\./([\w./-]+\w)")


# ----------------------------------------------------------------------------- filters


def filter_names(filter_dir: Path) -> set[str]:
    """The names every ``plugins/filter/*.py`` gives its filters (``FilterModule().filters()``)."""
    names: set[str] = set()
    for path in sorted(filter_dir.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_dlstack_collection_{path.stem}", path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
            raise UserError(f"{path}: cannot be loaded as a filter plugin")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        names |= set(module.FilterModule().filters())
    return names


def _alternation(names: Iterable[str]) -> str:
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


def qualify_filters(text: str, names: Iterable[str], collection: str = FQCN) -> str:
    """Write each use of a filter in ``names`` fully qualified: ``x | name(...)`` and ``map('name', ...)``.

    Only filter uses change: a variable, a module or a word in prose named like a filter is left alone.
    """
    names = list(names)
    if not names:
        return text
    alternation = _alternation(names)
    piped = re.compile(rf"(\|[ \t]*)({alternation})(?![\w.])")
    mapped = re.compile(rf"(\bmap\(\s*)(['\"])({alternation})\2")
    text = piped.sub(rf"\g<1>{collection}.\g<2>", text)
    return mapped.sub(rf"\g<1>\g<2>{collection}.\g<3>\g<2>", text)


_JINJA = jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"], autoescape=False)  # noqa: S701 - parsed only, never rendered


def _short_uses_in_ast(tree: nodes.Node, names: set[str]) -> Iterator[str]:
    for node in tree.find_all(nodes.Filter):
        if node.name in names:
            yield f"| {node.name}"
        elif node.name in ("map", "ansible.builtin.map") and node.args:
            first = node.args[0]
            if isinstance(first, nodes.Const) and first.value in names:
                yield f"map('{first.value}')"


def short_filter_uses(source: str, names: Iterable[str], *, expression: bool = False) -> list[str]:
    """The short (not fully qualified) uses of the filters ``names`` in a Jinja template, or in a bare
    expression (``expression=True``: a ``when:``). Found by parsing; what Jinja cannot parse is searched
    with the patterns :func:`qualify_filters` rewrites."""
    names = set(names)
    if not names:
        return []
    try:
        with warnings.catch_warnings():  # Jinja decodes '\s' in a regex string constant with a warning
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = _JINJA.parse(f"{{{{ ({source}) }}}}" if expression else source)
    except jinja2.TemplateSyntaxError:
        alternation = _alternation(names)
        pattern = re.compile(rf"\|[ \t]*({alternation})(?![\w.])|\bmap\(\s*['\"]({alternation})['\"]")
        return [f"| {m.group(1) or m.group(2)}" for m in pattern.finditer(source)]
    return list(_short_uses_in_ast(tree, names))


class _AnyTagLoader(yaml.SafeLoader):
    """A safe loader that reads ``!unsafe``, ``!vault`` and other tags as the plain values they tag."""


def _any_tag(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_AnyTagLoader.add_multi_constructor("!", _any_tag)


def _yaml_strings(node: Any, key: str = "") -> Iterator[tuple[str, bool]]:
    """Every string of a YAML document, with whether Ansible reads it as a bare expression."""
    if isinstance(node, dict):
        for child_key, value in node.items():
            yield from _yaml_strings(value, str(child_key))
    elif isinstance(node, list):
        for item in node:
            yield from _yaml_strings(item, key)
    elif isinstance(node, str):
        yield node, key in EXPRESSION_KEYS and "{{" not in node


def file_short_uses(path: Path, names: Iterable[str]) -> list[str]:
    """Short filter uses in one role file: a template as a whole, a YAML file string by string."""
    names = set(names)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".j2":
        return short_filter_uses(text, names)
    found: list[str] = []
    for document in yaml.load_all(text, Loader=_AnyTagLoader):
        for value, expression in _yaml_strings(document):
            if expression or "{{" in value or "{%" in value:
                found += short_filter_uses(value, names, expression=expression)
    return found


def check_qualified(roles_dir: Path, names: Iterable[str]) -> list[str]:
    """``FILE: | name`` for every short filter use left in a tree of roles (empty when there is none)."""
    problems = []
    for path in sorted(roles_dir.rglob("*")):
        if path.is_file() and path.suffix in CHECKED:
            problems += [f"{path.relative_to(roles_dir)}: {use}" for use in file_short_uses(path, names)]
    return problems


# ----------------------------------------------------------------------------- metadata from the repository


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: the collection is built from a dlstack checkout") from None


def _role_meta(roles_dir: Path, key: str) -> str:
    """One ``galaxy_info`` value that every role gives alike (``license``, ``author``)."""
    values = {
        path.parent.parent.name: str((_load_yaml(path) or {}).get("galaxy_info", {}).get(key, ""))
        for path in sorted(roles_dir.glob("*/meta/main.yml"))
    }
    distinct = set(values.values())
    if len(distinct) != 1 or "" in distinct:
        raise UserError(
            f"the roles' meta/main.yml give galaxy_info.{key} as {values}: the collection needs one {key} for all"
        )
    return distinct.pop()


def _find_vars(node: Any, wanted: set[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "vars" and isinstance(value, dict):
                found |= {k: v for k, v in value.items() if k in wanted}
            found |= _find_vars(value, wanted)
    elif isinstance(node, list):
        for item in node:
            found |= _find_vars(item, wanted)
    return found


def requires_ansible(preflight: Path) -> str:
    """``>=MIN,<MAX`` from the Ansible version check of the preflight play."""
    found = _find_vars(_load_yaml(preflight), {"dlstack_ansible_min", "dlstack_ansible_max"})
    if len(found) != 2:
        raise UserError(f"{preflight}: no task sets both dlstack_ansible_min and dlstack_ansible_max in its vars")
    return f">={found['dlstack_ansible_min']},<{found['dlstack_ansible_max']}"


def dependencies(requirements: Path, texts: Iterable[str]) -> dict[str, str]:
    """``{collection: ">=TESTED,<NEXT_MAJOR"}`` for each collection of ``requirements.yml`` the texts name."""
    listed = (_load_yaml(requirements) or {}).get("collections") or []
    text = "\n".join(texts)
    wanted: dict[str, str] = {}
    for entry in listed:
        name, version = str(entry["name"]), str(entry["version"])
        if re.search(rf"(?<![\w.]){re.escape(name)}\.\w", text):
            major = int(version.split(".", 1)[0])
            wanted[name] = f">={version},<{major + 1}.0.0"
    return wanted


def galaxy_yml(roles_dir: Path, deps: dict[str, str]) -> dict[str, Any]:
    return {
        "namespace": NAMESPACE,
        "name": NAME,
        "version": __version__,
        "readme": "README.md",
        "authors": [_role_meta(roles_dir, "author")],
        "description": DESCRIPTION,
        "license": [_role_meta(roles_dir, "license")],
        "tags": TAGS,
        "dependencies": deps,
        "build_ignore": ["**/__pycache__", "**/*.pyc"],
    }


# ----------------------------------------------------------------------------- changelog


def _markdown(text: str) -> str:
    """antsibull-changelog fragments are reStructuredText: ``code`` becomes `code`."""
    return re.sub(r"``(.+?)``", r"`\1`", str(text).strip())


def render_changelog(changelogs: Path, version: str = __version__) -> str:
    """CHANGELOG.md from antsibull-changelog's layout: the releases of ``changelog.yaml`` (when there is
    one) and, for ``version`` when it is not released yet, the fragments in ``fragments/``."""
    config = _load_yaml(changelogs / "config.yaml") or {}
    sections = [(str(key), str(title)) for key, title in config.get("sections", [])]
    prelude = (str(config.get("prelude_section_name", "release_summary")),
               str(config.get("prelude_section_title", "Release Summary")))  # fmt: skip
    history = changelogs / str(config.get("changes_file", "changelog.yaml"))
    releases: dict[str, dict[str, Any]] = {}
    if history.is_file():
        releases = {
            str(v): dict(r.get("changes") or {}) for v, r in ((_load_yaml(history) or {}).get("releases") or {}).items()
        }
    if version not in releases:
        pending: dict[str, Any] = {}
        fragments_dir = changelogs / str(config.get("notesdir", "fragments"))
        for path in sorted(fragments_dir.glob("*.y*ml")):
            for key, value in (_load_yaml(path) or {}).items():
                if key == prelude[0]:
                    pending[key] = f"{pending.get(key, '')}\n\n{value}".strip()
                else:
                    pending.setdefault(key, []).extend([value] if isinstance(value, str) else list(value))
        releases[version] = pending
    known = {prelude[0], *(key for key, _ in sections), str(config.get("trivial_section_name", "trivial"))}
    lines = [f"# {config.get('title', FQCN)} Release Notes", ""]
    for release in sorted(releases, key=lambda v: [int(p) if p.isdigit() else p for p in re.split(r"[.+-]", v)],
                          reverse=True):  # fmt: skip
        changes = releases[release]
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UserError(f"{changelogs}: release {release} has sections {unknown} that config.yaml does not list")
        lines += [f"## v{release}", ""]
        if changes.get(prelude[0]):
            lines += [f"### {prelude[1]}", "", _markdown(changes[prelude[0]]), ""]
        for key, title in sections:
            if changes.get(key):
                lines += [f"### {title}", "", *(f"- {_markdown(item)}" for item in changes[key]), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- staging and build


@dataclass(frozen=True)
class Staged:
    directory: Path
    filters: frozenset[str]
    copied: tuple[str, ...]  # files a role reached with role_path/../../, now in its files/


def _check_root(root: Path) -> None:
    missing = [p for p in ("roles", "plugins/filter", "requirements.yml", "playbooks/preflight.yml", "LICENSE")
               if not (root / p).exists()]  # fmt: skip
    if missing:
        raise UserError(
            f"{root} is not a dlstack checkout (it has no {', '.join(missing)}): the collection is built from the "
            "repository"
        )


def _stage_roles(root: Path, staging: Path, names: set[str]) -> tuple[str, ...]:
    roles = staging / "roles"
    shutil.copytree(root / "roles", roles, ignore=IGNORED)
    copied: list[str] = []
    for path in sorted(roles.rglob("*")):
        if not path.is_file() or path.suffix not in REWRITTEN:
            continue
        text = path.read_text(encoding="utf-8")
        qualified = qualify_filters(text, names)
        if qualified != text:
            path.write_text(qualified, encoding="utf-8")
        role = roles / path.relative_to(roles).parts[0]
        for target in _ROLE_PATH_UP.findall(text) if path.suffix != ".md" else []:
            source = root / target
            files = role / "files" / source.name
            if not source.is_file():
                raise UserError(f"{path.relative_to(staging)} reaches {target} with role_path/../../, which is missing")
            looks_there = any(f"/files/{source.name}" in p.read_text(encoding="utf-8") for p in role.rglob("*.yml"))
            if not looks_there:
                raise UserError(
                    f"roles/{role.name} reaches {target} with role_path/../../, which is outside the role in a "
                    f"collection: look for role_path ~ '/files/{source.name}' first (a first_found lookup)"
                )
            files.parent.mkdir(exist_ok=True)
            shutil.copy2(source, files)
            copied.append(str(files.relative_to(staging)))
    left = check_qualified(roles, names)
    if left:
        raise UserError(
            "short filter names are left in the staged roles (write them fully qualified): " + "; ".join(left)
        )
    return tuple(sorted(set(copied)))


def stage(staging: Path, root: Path | None = None) -> Staged:
    """Assemble the collection's files in ``staging`` (an empty or missing directory) from the checkout
    ``root`` (default: the one this package is in)."""
    root = root or REPO_ROOT
    _check_root(root)
    if staging.exists() and any(staging.iterdir()):
        raise UserError(f"{staging} is not empty: the collection is staged in an empty directory")
    staging.mkdir(parents=True, exist_ok=True)
    names = filter_names(root / "plugins" / "filter")
    copied = _stage_roles(root, staging, names)
    shutil.copytree(root / "plugins", staging / "plugins", ignore=IGNORED)
    texts = [
        p.read_text(encoding="utf-8") for d in ("roles", "plugins") for p in (staging / d).rglob("*") if p.is_file()
    ]
    deps = dependencies(root / "requirements.yml", texts)

    def dump(relative: str, data: Any, header: str) -> None:
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"---\n# {header}\n{yaml.safe_dump(data, sort_keys=False)}", encoding="utf-8")

    dump("galaxy.yml", galaxy_yml(root / "roles", deps), "Generated by `scripts/dlstack collection build`.")
    dump("meta/runtime.yml", {"requires_ansible": requires_ansible(root / "playbooks" / "preflight.yml")},
         "The ansible-core versions the preflight play accepts.")  # fmt: skip
    (staging / "requirements.txt").write_text(
        f"# The controller-side package the filter plugins import (the same version as this collection)\n"
        f"dlstack=={__version__}\n",
        encoding="utf-8",
    )
    shutil.copy2(root / "LICENSE", staging / "LICENSE")
    readme = root / "docs" / "collection.md"
    if not readme.is_file():
        raise UserError(f"{readme} is missing: it is the collection's README")
    shutil.copy2(readme, staging / "README.md")
    if (root / "changelogs").is_dir():
        shutil.copytree(root / "changelogs", staging / "changelogs", ignore=IGNORED)
        (staging / "CHANGELOG.md").write_text(render_changelog(root / "changelogs"), encoding="utf-8")
    return Staged(staging, frozenset(names), copied)


def tarball_name(version: str = __version__) -> str:
    return f"{NAMESPACE}-{NAME}-{version}.tar.gz"


def build(out: Path = DEFAULT_OUT, root: Path | None = None) -> Path:
    """Stage the collection and build its tarball in ``out`` (replacing one of the same version)."""
    root = root or REPO_ROOT
    _check_root(root)
    if importlib.util.find_spec("ansible") is None:
        raise UserError("ansible-core is not installed for this Python: pip install -r requirements.txt")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dlstack-collection-") as tmp:
        staged = stage(Path(tmp) / "ansible_collections" / NAMESPACE / NAME, root)
        proc = subprocess.run(
            [sys.executable, "-m", "ansible", "galaxy", "collection", "build", "--force",
             "--output-path", str(out.resolve()), str(staged.directory)],
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
    tarball = out.resolve() / tarball_name()
    if proc.returncode != 0 or not tarball.is_file():
        raise UserError(f"ansible-galaxy collection build failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return tarball
