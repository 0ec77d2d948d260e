"""The lab's package cache on a converged host: apt-cacher-ng and proxpi answer, cache what they
fetch, and serve it again from the cache (read back from their own logs with the parsers
``scripts/benchmark fleet`` uses for its hit rates).

What only a lab proves: many hosts at once against one cache (``scripts/benchmark fleet``).
"""

from __future__ import annotations

import uuid

from dlstack.package_cache import apt_hit_rate, proxpi_requirement, pypi_hit_rate

APT = "http://127.0.0.1:23142"
PYPI = "http://127.0.0.1:23141/index/"
ACNG_LOG = "/var/log/apt-cacher-ng/apt-cacher.log"
PYPI_LOG = "/var/log/dlstack-pypi-cache/access.log"
PYPI_DIR = "/var/cache/dlstack-pypi"
# A small package of every Ubuntu release, fetched through the cache twice
DEB = "hello"
WHEEL = "six==1.16.0"


def test_both_caches_run_now_and_at_boot(host):
    for service in ("apt-cacher-ng", "dlstack-pypi-cache"):
        assert host.service(service).is_running, service
        assert host.service(service).is_enabled, service


def test_they_listen_where_the_settings_say(host):
    assert host.socket("tcp://127.0.0.1:23142").is_listening
    assert host.socket("tcp://127.0.0.1:23141").is_listening
    assert not host.socket("tcp://0.0.0.0:3142").is_listening


def test_the_pypi_cache_runs_as_its_own_user_with_the_pinned_proxpi(host):
    user = host.run("systemctl show -p User --value dlstack-pypi-cache").stdout.strip()
    assert user == "dlstack-pypi-cache"
    pid = host.run("systemctl show -p MainPID --value dlstack-pypi-cache").stdout.strip()
    assert host.run(f"ps -o user= -p {pid}").stdout.strip() == "dlstack-pypi-cache"
    version = proxpi_requirement().split()[0].split("==")[1]
    shown = host.run("/opt/dlstack/package-cache/venv/bin/python -m pip show proxpi")
    assert f"Version: {version}" in shown.stdout


def _apt_download(host) -> None:
    directory = f"/root/apt-{uuid.uuid4().hex[:8]}"
    cmd = f"mkdir -p {directory} && cd {directory} && apt-get -q -o Acquire::http::Proxy={APT} download {DEB}"
    result = host.run(cmd)
    assert result.rc == 0, result.stderr
    assert host.run(f"ls {directory}/{DEB}_*.deb").rc == 0


def test_apt_fetches_a_package_once_then_serves_it_from_the_cache(host):
    with host.sudo():
        before = apt_hit_rate(host.file(ACNG_LOG).content_string.splitlines()) if host.file(ACNG_LOG).exists else None
        _apt_download(host)
        _apt_download(host)
        lines = host.file(ACNG_LOG).content_string.splitlines()
    ours = [line.split("|")[1] for line in lines if f"/{DEB}_" in line and line.endswith(".deb")]
    # in from the archive and out to apt once, then out from the cache alone
    assert ours[-3:] == ["I", "O", "O"], f"apt-cacher-ng's transfers of {DEB}: {ours} (log ends {lines[-5:]})"
    rate = apt_hit_rate(lines) - before if before else apt_hit_rate(lines)
    assert (rate.hits, rate.misses) == (1, 1), rate
    assert host.run(f"find /var/cache/apt-cacher-ng -name '{DEB}_*.deb'").stdout.strip()


def test_https_repositories_in_the_list_are_tunnelled_and_others_refused(host):
    allowed = host.run(f"curl -sk -o /dev/null -w '%{{http_code}}' -x {APT} https://pypi.org/simple/six/")
    assert allowed.stdout == "200", allowed.stdout + allowed.stderr
    refused = host.run(f"curl -sk -o /dev/null -w '%{{http_code}}' -x {APT} https://files.pythonhosted.org/")
    assert refused.stdout != "200", "a host outside package_cache_apt_https_hosts was tunnelled"


def _pip_download(host) -> None:
    directory = f"/root/pip-{uuid.uuid4().hex[:8]}"
    pip = "python3 -m pip download --no-deps --disable-pip-version-check --no-cache-dir"
    result = host.run(f"{pip} --index-url {PYPI} -d {directory} '{WHEEL}'")
    assert result.rc == 0, result.stdout + result.stderr
    assert host.run(f"ls {directory}/six-1.16.0-py2.py3-none-any.whl").rc == 0


def test_pypi_fetches_a_wheel_once_then_serves_it_from_the_cache(host):
    if host.run("python3 -m pip --version").rc != 0:
        with host.sudo():
            assert host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip").rc == 0
    _pip_download(host)
    _pip_download(host)
    with host.sudo():
        cached = host.run(f"find {PYPI_DIR} -name 'six-1.16.0-py2.py3-none-any.whl'").stdout.split()
        lines = host.file(PYPI_LOG).content_string.splitlines()
    assert len(cached) == 1, f"proxpi kept {cached} for one wheel asked twice"
    requests = [line for line in lines if "six-1.16.0-py2.py3-none-any.whl" in line]
    assert len(requests) == 2, requests
    rate = pypi_hit_rate(requests, downloads=len(cached))
    assert (rate.hits, rate.misses) == (1, 1), rate
