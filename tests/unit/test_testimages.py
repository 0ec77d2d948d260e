"""The registry-free Ubuntu image builder (pure parts; the real build runs in Molecule tests)."""

import pytest

from dlstack import sandbox, testimages

PACKAGES = """Package: ubuntu-advantage-tools
Version: 1
Filename: pool/main/u/ubuntu-advantage-tools/x.deb

Package: ubuntu-keyring
Architecture: all
Version: 2023.11.28.1
Filename: pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
Description: GnuPG keys of the Ubuntu archive
 The Ubuntu project digitally signs its Release files.
"""


def test_keyring_path_comes_from_the_index():
    assert testimages.parse_packages_index(PACKAGES, "ubuntu-keyring").endswith("ubuntu-keyring_2023.11.28.1_all.deb")


def test_missing_package_is_an_error():
    with pytest.raises(LookupError, match="nope"):
        testimages.parse_packages_index(PACKAGES, "nope")


def test_release_lookup_and_error():
    assert testimages.release("24.04").codename == "noble"
    assert testimages.release("26.04").systemd_tag == "dlstack/ubuntu-systemd:26.04"
    with pytest.raises(ValueError, match=r"'20\.04' is not supported; use one of: 22\.04, 24\.04, 26\.04"):
        testimages.release("20.04")


def test_inputs_hash_changes_with_the_mirror():
    assert testimages.inputs_hash("base", "noble", "http://a") != testimages.inputs_hash("base", "noble", "http://b")
    assert testimages.inputs_hash("x") == testimages.inputs_hash("x")


def test_mirror_setting(monkeypatch):
    monkeypatch.setenv(testimages.MIRROR_ENV, "http://mirror.lab/ubuntu/")
    assert testimages.mirror_from_env() == "http://mirror.lab/ubuntu"
    monkeypatch.delenv(testimages.MIRROR_ENV)
    assert testimages.mirror_from_env() == testimages.DEFAULT_MIRROR


def test_systemd_dockerfile_masks_network_units_and_uses_the_mirror():
    text = testimages.systemd_dockerfile(testimages.release("22.04"), "http://mirror.lab/ubuntu")
    assert "URIs: http://mirror.lab/ubuntu" in text
    assert "Suites: jammy jammy-updates jammy-security" in text
    for unit in ("systemd-resolved.service", "systemd-networkd.service", "systemd-timesyncd.service"):
        assert unit in text
    assert "FROM dlstack/ubuntu:22.04-base" in text


def test_cgroup_source_prefers_the_v2_mount_on_hybrid_hosts(tmp_path):
    assert sandbox.cgroup_source(tmp_path) == str(tmp_path)
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    assert sandbox.cgroup_source(tmp_path) == str(tmp_path / "unified")


def test_sandbox_runs_without_privileged_and_on_host_network():
    args = sandbox.systemd_run_args("x", "img", cgroup_src="/cg")
    assert "--privileged" not in args
    assert args[args.index("--network") + 1] == "host"
    assert "/cg:/sys/fs/cgroup:rw" in args
    assert args[-2:] == ["img", "/lib/systemd/systemd"]
