"""Ubuntu images built without a registry: debootstrap, ``docker import``, a systemd layer.

Two images per release:

* ``dlstack/ubuntu:<version>-base``: a minbase root filesystem debootstrapped from the Ubuntu
  archive (or a lab mirror) and imported into Docker.
* ``dlstack/ubuntu-systemd:<version>``: the base plus systemd as PID 1, python3 and sudo, with the
  network-touching units masked so a test container never changes the host's network.

Both carry a ``org.dlstack.inputs`` label: a hash of everything that shapes them. A second call
with the same inputs finds the label and returns in seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dlstack.data import ubuntu_releases

DEFAULT_MIRROR = "http://archive.ubuntu.com/ubuntu"
MIRROR_ENV = "DLSTACK_UBUNTU_MIRROR"
BASE_REPO = "dlstack/ubuntu"
SYSTEMD_REPO = "dlstack/ubuntu-systemd"
INPUTS_LABEL = "org.dlstack.inputs"
# Bump when the recipe below changes in a way the hash of its inputs cannot see.
RECIPE_VERSION = "3"
DEBOOTSTRAP_SCRIPT = Path("/usr/share/debootstrap/scripts/gutsy")
KEYRING_MEMBER = "usr/share/keyrings/ubuntu-archive-keyring.gpg"
SYSTEMD_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-apt",
    "sudo",
    "ca-certificates",
    "iproute2",
    "gnupg",
)
MASKED_UNITS = (
    "systemd-resolved.service",
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-timesyncd.service",
    "systemd-networkd-wait-online.service",
    "getty.target",
    "console-getty.service",
    "systemd-logind.service",
)

SYSTEMD_DOCKERFILE = """\
FROM {base}
ENV container=docker DEBIAN_FRONTEND=noninteractive
RUN printf 'Types: deb\\nURIs: {mirror}\\nSuites: {suite} {suite}-updates {suite}-security\\n\
Components: main restricted universe multiverse\\n\
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\\n' > /etc/apt/sources.list.d/ubuntu.sources \\
 && rm -f /etc/apt/sources.list \\
 && apt-get update \\
 && apt-get install -y --no-install-recommends {packages} \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* \\
 && systemctl mask {masked} \\
 && echo 'dlstack-test' > /etc/hostname
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
"""


@dataclass(frozen=True)
class Release:
    """One Ubuntu release as the builder needs it."""

    version: str
    codename: str

    @property
    def base_tag(self) -> str:
        return f"{BASE_REPO}:{self.version}-base"

    @property
    def systemd_tag(self) -> str:
        return f"{SYSTEMD_REPO}:{self.version}"


def release(version: str) -> Release:
    """Return the release for ``version`` (``24.04``), or raise naming the accepted ones."""
    releases = ubuntu_releases()
    if version not in releases:
        accepted = ", ".join(sorted(releases))
        raise ValueError(f"Ubuntu release {version!r} is not supported; use one of: {accepted}")
    return Release(version=version, codename=releases[version]["codename"])


def mirror_from_env() -> str:
    """The Ubuntu mirror: ``$DLSTACK_UBUNTU_MIRROR`` or the Ubuntu archive."""
    return os.environ.get(MIRROR_ENV, DEFAULT_MIRROR).rstrip("/")


def inputs_hash(*parts: str) -> str:
    """A short stable hash of the strings that shape an image."""
    digest = hashlib.sha256("\0".join((RECIPE_VERSION, *parts)).encode()).hexdigest()
    return digest[:16]


def _docker(*args: str, capture: bool = False, stdin: bytes | None = None) -> str:
    proc = subprocess.run(
        ["docker", *args],
        check=True,
        input=stdin,
        stdout=subprocess.PIPE if capture else None,
    )
    return proc.stdout.decode().strip() if capture and proc.stdout else ""


def image_label(tag: str) -> str | None:
    """The inputs label of a local image, or None when the image does not exist."""
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{INPUTS_LABEL}"}}}}', tag],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def parse_packages_index(text: str, package: str) -> str:
    """Return the pool path (``Filename:``) of ``package`` in a Debian ``Packages`` index."""
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") == package and "Filename" in fields:
            return fields["Filename"]
    raise LookupError(f"package {package!r} not found in the Packages index")


def fetch_keyring(mirror: str, codename: str, workdir: Path) -> Path:
    """Fetch ``ubuntu-keyring`` from the archive's own pool and return its keyring file."""
    index_url = f"{mirror}/dists/{codename}/main/binary-amd64/Packages.gz"
    with urllib.request.urlopen(index_url, timeout=120) as resp:  # noqa: S310 - mirror is http(s) by setting
        index = gzip.decompress(resp.read()).decode("utf-8", "replace")
    deb = workdir / "ubuntu-keyring.deb"
    with urllib.request.urlopen(f"{mirror}/{parse_packages_index(index, 'ubuntu-keyring')}", timeout=120) as resp:  # noqa: S310 - same mirror
        deb.write_bytes(resp.read())
    extract = workdir / "keyring"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(extract)], check=True)
    return extract / KEYRING_MEMBER


def build_base(rel: Release, mirror: str, *, force: bool = False) -> bool:
    """Debootstrap ``rel`` and import it as ``rel.base_tag``. Return True when it was built."""
    wanted = inputs_hash("base", rel.codename, mirror)
    if not force and image_label(rel.base_tag) == wanted:
        return False
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix=f"dlstack-{rel.codename}-") as tmp:
        work = Path(tmp)
        keyring = fetch_keyring(mirror, rel.codename, work)
        rootfs = work / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--keyring={keyring}",
                "--components=main",
                rel.codename,
                str(rootfs),
                mirror,
                str(DEBOOTSTRAP_SCRIPT),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        keyring_dest = rootfs / KEYRING_MEMBER
        keyring_dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(keyring, keyring_dest)
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], check=True, capture_output=True).stdout
        _docker(
            "import",
            "--change",
            f"LABEL {INPUTS_LABEL}={wanted}",
            "--change",
            'CMD ["/bin/bash"]',
            "-",
            rel.base_tag,
            stdin=tar,
        )
    return True


def systemd_dockerfile(rel: Release, mirror: str) -> str:
    """The Dockerfile that turns the base image into a systemd test image."""
    return SYSTEMD_DOCKERFILE.format(
        base=rel.base_tag,
        mirror=mirror,
        suite=rel.codename,
        packages=" ".join(SYSTEMD_PACKAGES),
        masked=" ".join(MASKED_UNITS),
    )


def build_systemd(rel: Release, mirror: str, *, force: bool = False) -> bool:
    """Build ``rel.systemd_tag`` from the base image. Return True when it was built."""
    dockerfile = systemd_dockerfile(rel, mirror)
    wanted = inputs_hash("systemd", image_label(rel.base_tag) or "", dockerfile)
    if not force and image_label(rel.systemd_tag) == wanted:
        return False
    build_args = ["build", "--network", "host", "--label", f"{INPUTS_LABEL}={wanted}", "-t", rel.systemd_tag, "-"]
    _docker(*build_args, stdin=dockerfile.encode())
    return True


def build(versions: Iterable[str], *, mirror: str | None = None, force: bool = False) -> dict[str, bool]:
    """Build base and systemd images for each release; return ``{tag: built}``."""
    mirror = (mirror or mirror_from_env()).rstrip("/")
    result: dict[str, bool] = {}
    for version in versions:
        rel = release(version)
        result[rel.base_tag] = build_base(rel, mirror, force=force)
        result[rel.systemd_tag] = build_systemd(rel, mirror, force=force)
    return result
