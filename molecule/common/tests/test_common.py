"""Facts about a host converged with the common role."""

import json
import re

import pytest

DATA_DIR = "/data"


@pytest.mark.parametrize("package", ["ca-certificates", "curl", "gnupg", "pciutils", "locales", "unattended-upgrades"])
def test_base_package_installed(host, package):
    assert host.package(package).is_installed


def test_extra_ca_is_in_system_bundle(host):
    # The harness passes the control machine's local CAs through common_ca_certificates.
    installed = host.file("/usr/local/share/ca-certificates/dlstack").listdir()
    assert installed, "no CA certificate was installed"
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    for name in installed:
        pem = host.file(f"/usr/local/share/ca-certificates/dlstack/{name}").content_string.strip()
        body = "".join(pem.splitlines()[1:-1])
        assert body[:64] in bundle.replace("\n", "")


def _blacklist(host) -> list[str]:
    out = host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    # the list's own line has an empty value: `Unattended-Upgrade::Package-Blacklist "";`
    return [line.split('"')[1] for line in out.splitlines() if '"' in line and line.split('"')[1]]


def test_unattended_upgrades_exclude_nvidia_and_cuda(host):
    patterns = _blacklist(host)
    for expected in ("nvidia-", "libnvidia-", "cuda-", "my-pinned-package"):
        assert expected in patterns


@pytest.mark.parametrize(
    "package",
    ["linux-image-6.8.0-151-generic", "linux-generic", "linux-modules-nvidia-580-server-open-6.8.0-151-generic"],
)
def test_unattended_upgrades_keep_updating_kernels_and_their_nvidia_modules(host, package):
    # unattended-upgrades matches each pattern with re.match (from the start of the name)
    assert not [p for p in _blacklist(host) if re.match(p, package)]


def test_timezone_applied(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Berlin"
    assert host.check_output("date +%Z") in {"CET", "CEST"}


def test_locale_generated(host):
    assert "en_US.utf8" in host.check_output("locale -a").split()


@pytest.mark.parametrize("sub", ["", "datasets", "models", "scratch", "cache/huggingface", "cache/torch", "cache/pip"])
def test_data_layout(host, sub):
    d = host.file(f"{DATA_DIR}/{sub}")
    assert d.is_directory
    assert d.group == "dlstack"
    assert d.mode == 0o2775


def test_user_in_data_group(host):
    assert "dlstack" in host.user("labuser").groups


def test_login_shell_points_caches_at_data_dir(host):
    out = host.check_output("bash -lc 'echo $HF_HOME $TORCH_HOME $KERAS_HOME'")
    assert out.split() == [f"{DATA_DIR}/cache/huggingface", f"{DATA_DIR}/cache/torch", f"{DATA_DIR}/cache/keras"]


def test_a_users_own_cache_setting_wins_in_login_shells(host):
    assert host.check_output("HF_HOME=/srv/hf bash -lc 'echo $HF_HOME'") == "/srv/hf"


def test_services_get_the_same_caches_from_the_environment_file(host):
    # systemd reads it for services (EnvironmentFile=): the JupyterLab units of python_env do
    env = dict(
        line.split("=", 1)
        for line in host.file("/etc/dlstack/data.env").content_string.splitlines()
        if line and not line.startswith("#")
    )
    assert env == {
        "DLSTACK_DATA_DIR": DATA_DIR,
        "HF_HOME": f"{DATA_DIR}/cache/huggingface",
        "TORCH_HOME": f"{DATA_DIR}/cache/torch",
        "KERAS_HOME": f"{DATA_DIR}/cache/keras",
    }
    for path in env.values():
        assert host.file(path).is_directory


def test_local_fact_published(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/common.fact").content_string)
    assert fact["data_dir"] == DATA_DIR
    assert fact["timezone"] == "Europe/Berlin"
    assert fact["environment_file"] == "/etc/dlstack/data.env"
