"""dlstack/data/container_toolkit.yml: the facts the container_runtime role reads."""

from __future__ import annotations

import re

import pytest

from dlstack.data import load

DATA = load("container_toolkit")
REPOSITORIES = {
    "docker": DATA["docker"]["repository"],
    "nvidia_container_toolkit": DATA["nvidia_container_toolkit"]["repository"],
}


def test_toolkit_version_is_an_apt_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+", DATA["nvidia_container_toolkit"]["version"])


def test_toolkit_packages_are_the_unified_release():
    assert set(DATA["nvidia_container_toolkit"]["packages"]) == {
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    }


@pytest.mark.parametrize("name", sorted(REPOSITORIES))
def test_repository_has_a_source_and_https_urls(name):
    repo = REPOSITORIES[name]
    assert repo["source"].startswith("https://")
    assert repo["uri"].startswith("https://")
    assert repo["key_url"].startswith("https://")


@pytest.mark.parametrize("name", sorted(REPOSITORIES))
def test_repository_key_fingerprint_is_pinned(name):
    assert re.fullmatch(r"[0-9A-F]{40}", REPOSITORIES[name]["key_fingerprint"])


@pytest.mark.parametrize("name", sorted(REPOSITORIES))
def test_repository_key_checksum_is_sha256_or_unset(name):
    assert re.fullmatch(r"([0-9a-f]{64})?", REPOSITORIES[name]["key_sha256"])


def test_docker_conflicts_do_not_overlap_its_packages():
    assert not set(DATA["docker"]["packages"]) & set(DATA["docker"]["conflicting_packages"])


def test_every_toolkit_fact_has_a_source():
    toolkit = DATA["nvidia_container_toolkit"]
    for key in ("source", "cdi_refresh_source", "dev_char_source"):
        assert toolkit[key].startswith("https://"), key
