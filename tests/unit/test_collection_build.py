"""The collection dlstack.gpu as `scripts/dlstack collection build` stages it: filters fully qualified in the
roles (and nothing else rewritten), metadata read from the repository, the changelog rendered from its
fragments. Fast: no ansible-galaxy, no Docker (tests/integration/test_collection.py builds and installs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import dlstack
from dlstack import collection
from dlstack.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"dlstack_data", "dlstack_data_dir", "dlstack_cloud_host", "dlstack_nvidia_kernel_modules"}


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> collection.Staged:
    return collection.stage(tmp_path_factory.mktemp("staging") / "ansible_collections" / "dlstack" / "gpu")


def test_filter_names_are_read_from_the_plugins():
    names = collection.filter_names(ROOT / "plugins" / "filter")
    assert {"dlstack_resolve", "dlstack_python_env_plan", "dlstack_data_dir", "dlstack_cloud_host"} <= names


def test_no_short_filter_name_is_left_in_the_staged_roles(staged):
    assert collection.check_qualified(staged.directory / "roles", staged.filters) == []


def test_the_repository_roles_use_short_names_the_check_finds():
    # the check is not vacuous: the repository's own roles (short names, found through ansible.cfg) fail it
    names = collection.filter_names(ROOT / "plugins" / "filter")
    left = collection.check_qualified(ROOT / "roles", names)
    assert any("| dlstack_python_env_plan" in problem for problem in left)
    assert any("map('dlstack_cloud_host')" in problem for problem in left)


def test_the_staged_roles_call_the_filters_by_their_full_name(staged):
    plan = (staged.directory / "roles" / "python_env" / "tasks" / "main.yml").read_text(encoding="utf-8")
    assert "| dlstack.gpu.dlstack_python_env_plan(python_env_stack" in plan
    assert "| dlstack.gpu.dlstack_python_env_fact |" in plan


SYNTHETIC = """\
- name: Use the filters
  ansible.builtin.set_fact:
    a: "{{ x | dlstack_data_dir(y, z) }}"
    b: "{{ x|dlstack_data }}"
    c: "{{ hosts | map('dlstack_cloud_host', 'aws') | list }}"
    d: "{{ dlstack_data_dir }}"
    e: "{{ x | dlstack_data_dir_other }}"
    f: "{{ x | dlstack.gpu.dlstack_data }}"
  when: (x | dlstack_data) | length > 0
- name: A module named like a filter
  dlstack_nvidia_kernel_modules:
    state: present
  vars:
    dlstack_data: the word dlstack_data in prose, and 'dlstack_cloud_host' as a string
"""
EXPECTED = """\
- name: Use the filters
  ansible.builtin.set_fact:
    a: "{{ x | dlstack.gpu.dlstack_data_dir(y, z) }}"
    b: "{{ x|dlstack.gpu.dlstack_data }}"
    c: "{{ hosts | map('dlstack.gpu.dlstack_cloud_host', 'aws') | list }}"
    d: "{{ dlstack_data_dir }}"
    e: "{{ x | dlstack_data_dir_other }}"
    f: "{{ x | dlstack.gpu.dlstack_data }}"
  when: (x | dlstack.gpu.dlstack_data) | length > 0
- name: A module named like a filter
  dlstack_nvidia_kernel_modules:
    state: present
  vars:
    dlstack_data: the word dlstack_data in prose, and 'dlstack_cloud_host' as a string
"""


def test_a_synthetic_task_file_is_rewritten_and_only_its_filter_uses(tmp_path):
    assert collection.qualify_filters(SYNTHETIC, NAMES) == EXPECTED
    before, after = tmp_path / "before.yml", tmp_path / "after.yml"
    before.write_text(SYNTHETIC, encoding="utf-8")
    after.write_text(EXPECTED, encoding="utf-8")
    assert sorted(collection.file_short_uses(before, NAMES)) == sorted(
        ["| dlstack_data_dir", "| dlstack_data", "map('dlstack_cloud_host')", "| dlstack_data"]
    )
    assert collection.file_short_uses(after, NAMES) == []


def test_a_template_is_rewritten():
    template = "{% for h in hosts | map('dlstack_cloud_host') %}{{ h | dlstack_data }}{% endfor %}{{ dlstack_data }}\n"
    rewritten = collection.qualify_filters(template, NAMES)
    assert rewritten == (
        "{% for h in hosts | map('dlstack.gpu.dlstack_cloud_host') %}{{ h | dlstack.gpu.dlstack_data }}"
        "{% endfor %}{{ dlstack_data }}\n"
    )
    assert collection.short_filter_uses(template, NAMES) == ["map('dlstack_cloud_host')", "| dlstack_data"]
    assert collection.short_filter_uses(rewritten, NAMES) == []


def test_a_variable_named_like_a_filter_is_no_filter_use():
    assert collection.short_filter_uses("dlstack_data_dir | default('/data')", NAMES, expression=True) == []


def test_gpu_verify_is_in_the_roles_that_reach_for_it(staged):
    assert set(staged.copied) == {"roles/gpu_verify/files/gpu_verify.py", "roles/container_runtime/files/gpu_verify.py"}
    copied = (staged.directory / "roles" / "gpu_verify" / "files" / "gpu_verify.py").read_bytes()
    assert copied == (ROOT / "scripts" / "gpu_verify.py").read_bytes()


def test_galaxy_yml_takes_the_package_version_and_the_roles_license(staged):
    galaxy = yaml.safe_load((staged.directory / "galaxy.yml").read_text(encoding="utf-8"))
    assert (galaxy["namespace"], galaxy["name"], galaxy["version"]) == ("dlstack", "gpu", dlstack.__version__)
    assert galaxy["license"] == ["Apache-2.0"]
    tested = {c["name"]: c["version"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    for name, spec in galaxy["dependencies"].items():
        assert spec.startswith(f">={tested[name]},<"), (name, spec)
    # the roles call community.general and ansible.posix modules; none of them uses community.docker
    assert {"community.general", "ansible.posix"} <= set(galaxy["dependencies"])
    assert "community.docker" not in galaxy["dependencies"]


def test_runtime_and_python_requirement(staged):
    runtime = yaml.safe_load((staged.directory / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    assert runtime == {"requires_ansible": ">=2.19,<2.21"}
    requirements = (staged.directory / "requirements.txt").read_text(encoding="utf-8")
    assert f"dlstack=={dlstack.__version__}\n" in requirements
    assert (staged.directory / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")


def test_changelog_renders_the_fragments(staged):
    changelog = (staged.directory / "CHANGELOG.md").read_text(encoding="utf-8")
    assert changelog.startswith("# dlstack.gpu Release Notes\n")
    assert f"## v{dlstack.__version__}\n" in changelog
    assert "### Major Changes\n\n- dlstack is installable as the Ansible collection `dlstack.gpu`" in changelog


def test_a_changelog_section_config_does_not_list_is_refused(tmp_path):
    (tmp_path / "fragments").mkdir()
    (tmp_path / "config.yaml").write_text("sections: [[bugfixes, Bugfixes]]\n", encoding="utf-8")
    (tmp_path / "fragments" / "x.yml").write_text("bugfix:\n  - typo\n", encoding="utf-8")
    with pytest.raises(dlstack.errors.UserError, match=r"sections \['bugfix'\]"):
        collection.render_changelog(tmp_path)


def test_a_role_reaching_outside_without_looking_in_files_is_refused(tmp_path):
    root = tmp_path / "repo"
    for relative in ("plugins/filter", "roles/r/tasks", "roles/r/meta", "playbooks", "scripts"):
        (root / relative).mkdir(parents=True)
    (root / "roles" / "r" / "tasks" / "main.yml").write_text(
        '- ansible.builtin.copy:\n    src: "{{ role_path }}/../../scripts/x.py"\n    dest: /x.py\n', encoding="utf-8"
    )
    (root / "scripts" / "x.py").write_text("", encoding="utf-8")
    for relative in ("requirements.yml", "playbooks/preflight.yml", "LICENSE"):
        (root / relative).write_text("", encoding="utf-8")
    with pytest.raises(dlstack.errors.UserError, match=r"look for role_path ~ '/files/x.py' first"):
        collection.stage(tmp_path / "staging", root)


def test_a_directory_that_is_no_checkout_is_a_user_error(tmp_path, capsys, monkeypatch):
    # the package installed from its wheel has no roles/ beside it: the command says so, exit 2
    monkeypatch.setattr(collection, "REPO_ROOT", tmp_path)
    assert cli_main(["collection", "build", "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"dlstack collection: error: {tmp_path} is not a dlstack checkout (it has no roles, ")
    assert not (tmp_path / "out").exists()
