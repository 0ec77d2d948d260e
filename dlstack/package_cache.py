"""The package cache of a lab (role package_cache): its pinned PyPI proxy and its hit rates.

:func:`proxpi_requirement` is the hash-pinned requirement the role installs (from
dlstack/data/package_cache.yml). The rest reads the two caches' logs into hit rates for
``scripts/benchmark fleet``:

- apt-cacher-ng's transfer log (``/var/log/apt-cacher-ng/apt-cacher.log``):
  ``EPOCH|FLAG|BYTES|CLIENT|PATH``, an ``O`` line for every file sent out to a client and an ``I``
  line for every file that came in from the archive. A package file sent out without coming in
  was a hit.
- gunicorn's access log of the PyPI proxy (proxpi): one line per request; the package files it
  served are those under ``/index/<project>/<file>``. proxpi downloads each file once, into its cache
  directory: the files there are the misses, every other request answered with a file was a hit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from dlstack.data import load

# apt-cacher-ng: "1796688755|O|26249|127.0.0.1|uburep/pool/main/h/hello/hello_2.10-3build1_amd64.deb"
_ACNG_RE = re.compile(r"^\d+\|(?P<flag>[IO])\|(?P<bytes>\d+)\|[^|]*\|(?P<path>.+)$")
# gunicorn's default access log format: '127.0.0.1 - - [date] "GET /index/numpy/numpy-2.whl HTTP/1.1" 200 ...'
_FILE_REQUEST_RE = re.compile(r'"GET /index/[^/ ]+/(?P<file>[^/ ?]+) HTTP/[0-9.]+" (?P<status>\d{3}) ')


def proxpi_requirement() -> str:
    """``proxpi==VERSION --hash=sha256:...`` for ``pip install --require-hashes``."""
    data = load("package_cache")["proxpi"]
    return f"proxpi=={data['version']} --hash=sha256:{data['sha256']}"


@dataclass(frozen=True)
class HitRate:
    """Requests served from the cache against all requests; bytes sent to clients and fetched upstream."""

    hits: int
    misses: int
    served_bytes: int = 0
    fetched_bytes: int = 0

    @property
    def requests(self) -> int:
        return self.hits + self.misses

    @property
    def rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def __sub__(self, other: HitRate) -> HitRate:
        return HitRate(
            self.hits - other.hits,
            self.misses - other.misses,
            self.served_bytes - other.served_bytes,
            self.fetched_bytes - other.fetched_bytes,
        )

    def describe(self) -> str:
        if not self.requests:
            return "no requests"
        served, fetched = self.served_bytes / 2**20, self.fetched_bytes / 2**20
        size = f", {served:.0f} MiB served, {fetched:.0f} MiB fetched upstream" if served else ""
        return f"{self.rate:6.1%} hits ({self.hits} of {self.requests} file requests{size})"


def apt_hit_rate(log_lines: Iterable[str]) -> HitRate:
    """Package files (``.deb``) apt-cacher-ng sent out from its cache against those it fetched."""
    sent = fetched = sent_bytes = fetched_bytes = 0
    for line in log_lines:
        match = _ACNG_RE.match(line.strip())
        if not match or not match["path"].endswith(".deb"):
            continue
        size = int(match["bytes"])
        if match["flag"] == "O":
            sent, sent_bytes = sent + 1, sent_bytes + size
        else:
            fetched, fetched_bytes = fetched + 1, fetched_bytes + size
    misses = min(fetched, sent)
    return HitRate(sent - misses, misses, sent_bytes, fetched_bytes)


def pypi_hit_rate(access_log_lines: Iterable[str], downloads: int) -> HitRate:
    """Package-file requests proxpi answered from its cache against those it had to fetch.

    ``downloads`` is the number of files proxpi fetched (counted in its cache directory). A request
    answered with the file (200) was a hit unless it was the one that waited for that download; one
    answered with a redirect to the upstream index (302: the download took longer than
    package_cache_pypi_download_timeout) went to the internet, a miss.
    """
    served = redirected = 0
    for line in access_log_lines:
        match = _FILE_REQUEST_RE.search(line)
        if match and match["status"] == "200":
            served += 1
        elif match and match["status"] == "302":
            redirected += 1
    fetched = min(downloads, served)
    return HitRate(served - fetched, fetched + redirected)
