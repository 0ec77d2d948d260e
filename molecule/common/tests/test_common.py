"""Facts about a host converged with the common role."""

import json
import os
import re
import subprocess
import time

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


def test_apt_retries_at_once(host):
    """apt as the host runs it (apt-config merges every file) has no growing retry delay (common_apt_retry_delay)."""
    assert host.check_output("apt-config dump Acquire::Retries::Delay").strip() == 'Acquire::Retries::Delay "false";'


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


# --- SSH for IDEs: a real login from the control machine on the release's loopback port


def _ssh(host, user: str, command: str, *options: str):
    port = 22000 + int(host.system_info.release.split(".")[0])
    key = f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/ide_key"
    argv = ["ssh", "-i", key, "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", *options, f"{user}@127.0.0.1", command]  # fmt: skip
    for _ in range(20):  # ssh.socket may still be settling right after the converge
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if run.returncode != 255:
            return run
        time.sleep(1)
    return run


def test_an_ide_user_logs_in_with_a_key_and_runs_python(host):
    run = _ssh(host, "ideuser", "python3 -c 'import sys; print(sys.executable)'; id -nG; echo $HF_HOME")
    assert run.returncode == 0, run.stderr
    executable, groups, hf_home = run.stdout.split("\n")[:3]
    assert executable == "/usr/bin/python3"
    assert "dlstack" in groups.split()
    # a non-login `ssh host cmd` shell reads no /etc/profile.d: what VS Code's server and PyCharm use
    # come from their own login shells; an interactive login gets the data directory's caches
    assert hf_home in ("", f"{DATA_DIR}/cache/huggingface")


def test_the_server_offers_keys_only(host):
    # the server lists the methods it accepts when none succeeds: no "password" or "keyboard-interactive"
    run = _ssh(host, "ideuser", "true", "-o", "PreferredAuthentications=none", "-o", "PubkeyAuthentication=no")
    assert run.returncode == 255
    assert "Permission denied (publickey)." in run.stderr, run.stderr


def test_sshd_allows_what_ides_need(host):
    settings = host.check_output("sshd -T").lower().splitlines()
    assert "passwordauthentication no" in settings
    assert "allowtcpforwarding yes" in settings  # VS Code Remote-SSH, Jupyter tunnels
    assert any(line.startswith("subsystem sftp") for line in settings)  # PyCharm's deployment and interpreter


def test_an_existing_users_own_key_stays(host):
    keys = host.file("/home/labuser/.ssh/authorized_keys").content_string.splitlines()
    assert any(line.endswith("labuser@own-laptop") for line in keys)
    assert any(line.endswith("dlstack-ide-test") for line in keys)
    assert _ssh(host, "labuser", "true").returncode == 0
