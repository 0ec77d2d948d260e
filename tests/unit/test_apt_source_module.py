"""plugins/modules/dlstack_apt_source.py: which apt output is a refused signature, and what the admin is told.

The faults tier runs the module against stand-in repositories signed by the wrong key
(tests/faults/test_wrong_keys.py); these pin the classification on apt's own wording.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from file_module import load_file

ROOT = Path(__file__).resolve().parents[2]
mod = load_file("dlstack_apt_source", ROOT / "plugins" / "modules" / "dlstack_apt_source.py", register=True)

# apt 2.7 (Ubuntu 24.04), a repository signed by a key the keyring does not hold
NO_PUBKEY = """Get:1 file:/srv/sources/other/cuda/ubuntu2404/x86_64  InRelease [1093 B]
Err:1 file:/srv/sources/other/cuda/ubuntu2404/x86_64  InRelease
  The following signatures couldn't be verified because the public key is not available: NO_PUBKEY B07B83600A4BCFF4
Reading package lists...
W: GPG error: file:/srv/sources/other/cuda/ubuntu2404/x86_64  InRelease: The following signatures couldn't be \
verified because the public key is not available: NO_PUBKEY B07B83600A4BCFF4
E: The repository 'file:/srv/sources/other/cuda/ubuntu2404/x86_64  InRelease' is not signed.
"""
UNREACHABLE = """Ign:1 https://download.docker.com/linux/ubuntu noble InRelease
Err:1 https://download.docker.com/linux/ubuntu noble InRelease
  Could not resolve 'download.docker.com'
W: Failed to fetch https://download.docker.com/linux/ubuntu/dists/noble/InRelease  \
Could not resolve 'download.docker.com'
W: Some index files failed to download. They have been ignored, or old ones used instead.
"""


def test_a_missing_key_is_a_refusal_each_line_once() -> None:
    refused = mod.refusals(NO_PUBKEY)
    assert refused[0].startswith("The following signatures couldn't be verified")
    assert refused[-1] == "E: The repository 'file:/srv/sources/other/cuda/ubuntu2404/x86_64  InRelease' is not signed."
    assert len(refused) == len(set(refused)) == 3


@pytest.mark.parametrize(
    "line",
    [
        "W: GPG error: https://example.invalid stable InRelease: The following signatures were invalid: BADSIG 0123",
        "W: An error occurred during the signature verification. EXPKEYSIG A4B469963BF863CC cudatools",
        "REVKEYSIG 8D81803C0EBFCD88",
    ],
)
def test_bad_expired_and_revoked_signatures_are_refusals(line: str) -> None:
    assert mod.refusals(line) == [line]


def test_an_unreachable_mirror_is_not_a_refusal() -> None:
    """A network failure must not take a working source out."""
    assert mod.refusals(UNREACHABLE) == []


def test_the_update_touches_only_this_source() -> None:
    argv = mod.update_argv("/etc/apt/sources.list.d/cuda.sources")
    assert argv[:2] == ["apt-get", "update"]
    assert "Dir::Etc::SourceList=/etc/apt/sources.list.d/cuda.sources" in argv
    assert "Dir::Etc::SourceParts=/nonexistent" in argv  # the other sources are not read
    assert "APT::Get::List-Cleanup=0" in argv  # and their lists are not deleted


def test_the_message_names_the_source_the_reason_and_the_settings() -> None:
    msg = mod.refusal_message("/etc/apt/sources.list.d/docker.sources", "/etc/apt/keyrings/docker.asc",
                              "container_runtime_docker_repository", ["NO_PUBKEY 1"], removed=True)  # fmt: skip
    for text in (
        "docker.sources",
        "docker.asc",
        "NO_PUBKEY 1",
        "taken out again",
        "container_runtime_docker_repository",
    ):
        assert text in msg
    assert "check mode" in mod.refusal_message("s", "k", "x", ["BADSIG"], removed=False)
