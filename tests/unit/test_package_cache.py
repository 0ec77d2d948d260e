"""The package cache's pin and the hit rates scripts/benchmark fleet reads from the caches' logs.

The log lines are as apt-cacher-ng 3.7.4 (Ubuntu 24.04) and gunicorn wrote them in the
package_cache Molecule scenario, which also checks these parsers against the live logs.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from dlstack.data import load
from dlstack.package_cache import HitRate, apt_hit_rate, proxpi_requirement, pypi_hit_rate

DEB = "uburep/pool/main/h/hello/hello_2.10-3build1_amd64.deb"
# one miss (in from the archive, out to apt), then one hit (out only), and an index file
ACNG_LOG = [
    f"1796688755|I|26270|127.0.0.1|{DEB}",
    f"1796688755|O|26249|127.0.0.1|{DEB}",
    "1796688756|O|5120|127.0.0.1|uburep/dists/noble/InRelease",
    f"1796688757|O|26249|127.0.0.1|{DEB}",
]
WHEEL = "six-1.16.0-py2.py3-none-any.whl"


def access(path: str, status: int) -> str:
    return f'127.0.0.1 - - [07/Dec/2026:23:59:56 +0000] "GET {path} HTTP/1.1" {status} 11053 "-" "pip/24.0"'


def test_the_proxpi_pin_is_the_data_files():
    data = load("package_cache")["proxpi"]
    assert proxpi_requirement() == f"proxpi=={data['version']} --hash=sha256:{data['sha256']}"
    assert re.fullmatch(r"[0-9a-f]{64}", data["sha256"])


def test_apt_a_file_sent_twice_and_fetched_once_is_one_hit_one_miss():
    rate = apt_hit_rate(ACNG_LOG)
    assert (rate.hits, rate.misses) == (1, 1)
    assert (rate.served_bytes, rate.fetched_bytes) == (2 * 26249, 26270)
    assert rate.rate == 0.5


def test_apt_index_files_and_other_lines_are_not_counted():
    rate = apt_hit_rate(["1796688756|O|5120|127.0.0.1|uburep/dists/noble/InRelease", "garbage", ""])
    assert rate == HitRate(0, 0)
    assert rate.describe() == "no requests"


def test_a_later_figure_minus_an_earlier_one_is_what_happened_between():
    first = apt_hit_rate(ACNG_LOG[:2])
    both = apt_hit_rate(ACNG_LOG)
    assert (both - first) == HitRate(1, 0, 26249, 0)


def test_pypi_a_wheel_served_twice_and_downloaded_once():
    lines = [access(f"/index/six/{WHEEL}", 200), access("/index/six/", 200), access(f"/index/six/{WHEEL}", 200)]
    assert pypi_hit_rate(lines, downloads=1) == HitRate(1, 1)


def test_pypi_a_redirect_to_the_index_is_a_miss():
    lines = [access(f"/index/torch/{WHEEL}", 302), access(f"/index/torch/{WHEEL}", 200)]
    assert pypi_hit_rate(lines, downloads=1) == HitRate(0, 2)


@given(st.lists(st.sampled_from(["I", "O"]), max_size=40))
def test_apt_hits_and_misses_never_exceed_what_was_sent(flags):
    lines = [f"1|{flag}|100|10.0.0.2|{DEB}" for flag in flags]
    rate = apt_hit_rate(lines)
    assert rate.requests == flags.count("O")
    assert 0.0 <= rate.rate <= 1.0
    assert rate.hits >= 0 and rate.misses >= 0


@given(st.integers(0, 20), st.integers(0, 20), st.integers(0, 30))
def test_pypi_counts_add_up(served, redirected, downloads):
    lines = [access(f"/index/six/{WHEEL}", 200)] * served + [access(f"/index/six/{WHEEL}", 302)] * redirected
    rate = pypi_hit_rate(lines, downloads)
    assert rate.requests == served + redirected
    assert rate.hits == max(served - downloads, 0)
