"""Virtual machines that boot real Ubuntu kernels: the VM test tier (no GPU, no registry, no bridge).

A container shares the host's kernel, so what the NVIDIA driver does to *a kernel* (modules,
signatures, reboots, kernel updates) can only be proven on a booted Ubuntu kernel. This module
builds a bootable disk image from the same debootstrapped Ubuntu the containers use, and boots it
with QEMU:

* **Image** (``build_image``): ``dlstack/ubuntu-systemd:<release>`` plus the release pocket's kernel
  (``linux-image-virtual`` as the release shipped it), GRUB for BIOS, OpenSSH, exported with
  ``docker export`` and written into an ext4 partition with ``mkfs.ext4 -d`` (nothing is mounted).
  A first boot with QEMU's direct kernel boot installs GRUB into the disk and powers off. The
  result is a qcow2 base image, cached under the inputs' hash; every VM boots a copy-on-write
  overlay of it.
* **Boot** (``VM``): SeaBIOS, then GRUB, then the kernel GRUB chooses, on the serial console.
  The kernel command line carries ``module.sig_enforce=1``: the kernel refuses unsigned or
  untrusted modules exactly as Secure Boot's lockdown does. Networking is QEMU's user mode (the
  guest's packets leave through the QEMU process like the host's own; no bridge, no host
  network change); SSH is forwarded from a free port on 127.0.0.1.
* **Acceleration** (``accelerator``): KVM when it really runs a guest, else TCG (pure emulation).
  On this project's CI machines ``/dev/kvm`` exists but nested KVM stops guests with "KVM internal
  error", so the probe boots the kernel for real; ``DLSTACK_VM_ACCEL=kvm|tcg`` skips the probe.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dlstack import testimages

# Bump when the recipe changes in a way the hash of its inputs cannot see.
RECIPE_VERSION = "2"
ACCEL_ENV = "DLSTACK_VM_ACCEL"
CACHE_ENV = "DLSTACK_VM_CACHE"
DISK_GIB = 16
PARTITION_OFFSET = 1024 * 1024
ROOT_LABEL = "dlstack-root"
SSH_USER = "root"
# The guest is told where the outside world is by QEMU's user-mode network (fixed addresses).
GUEST_ADDRESS, GATEWAY, DNS = "10.0.2.15/24", "10.0.2.2", "10.0.2.3"
KERNEL_CMDLINE = "console=ttyS0,115200 net.ifnames=0 module.sig_enforce=1"
VM_PACKAGES = (
    "linux-image-virtual",
    "initramfs-tools",
    "grub-pc",
    "openssh-server",
    "kmod",
    "pciutils",
    "udev",
    "zstd",
    "mokutil",
    # what a lab workstation that builds DKMS modules has anyway (the DKMS path is tested too);
    # installed here at native speed rather than in the emulated guest
    "dkms",
    "gcc",
    "make",
    "openssl",
    "apt-utils",
)

VM_DOCKERFILE = """\
FROM {systemd_image}
ENV DEBIAN_FRONTEND=noninteractive
# The release pocket's kernel (a host installed from the release's media), so that a plain
# dist-upgrade brings the -updates kernel: a temporary pin on the suite "{codename}" (a=, not the
# codename, which -updates and -security share). Package lists stay: the guest refreshes them cheaply.
RUN printf 'Package: linux-*\\nPin: release a={codename}\\nPin-Priority: 1001\\n' \\
      > /etc/apt/preferences.d/dlstack-release-kernel \\
 && apt-get update \\
 && apt-get install -y --no-install-recommends {packages} \\
 && rm /etc/apt/preferences.d/dlstack-release-kernel \\
 && apt-get clean \\
 && systemctl mask apt-daily.timer apt-daily-upgrade.timer
"""

FIRSTBOOT = """\
#!/bin/sh
# dlstack VM image, first boot (direct kernel boot): install GRUB into the disk, then power off.
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -o remount,rw /
grub-install --target=i386-pc /dev/vda && update-grub
echo "DLSTACK-FIRSTBOOT rc=$?"
rm -f /usr/local/sbin/dlstack-vm-firstboot
sync; mount -o remount,ro /
echo o > /proc/sysrq-trigger
sleep 60
"""

GRUB_SETTINGS = f"""\
# dlstack VM image: serial console, no menu delay, module signatures enforced like Secure Boot's lockdown
GRUB_TIMEOUT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_RECORDFAIL_TIMEOUT=0
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_CMDLINE_LINUX_DEFAULT="{KERNEL_CMDLINE}"
GRUB_DISABLE_OS_PROBER=true
"""

# The systemd test image masks these (containers must never touch the host's network); a VM has a
# network stack of its own and needs them.
UNMASKED = ("systemd-networkd.service", "systemd-networkd.socket", "systemd-logind.service")


class VMError(RuntimeError):
    """A VM could not be built, booted or reached; the message says where to look."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(__file__).resolve().parents[1] / ".cache" / "vm")


def _run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


def require_tools() -> None:
    """Fail with what to install when QEMU or the disk tools are missing."""
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "mkfs.ext4", "sfdisk", "ssh") if not shutil.which(t)]
    if missing:
        raise VMError(
            f"missing {', '.join(missing)}: install qemu-system-x86 qemu-utils e2fsprogs fdisk openssh-client "
            "(scripts/bootstrap does)"
        )


# ------------------------------------------------------------------------------ acceleration


_ACCEL: dict[str, str] = {}


def accelerator(kernel: Path | None = None, timeout: float = 40) -> str:
    """``kvm`` when KVM really boots a Linux kernel here, else ``tcg`` (probed once per process)."""
    forced = os.environ.get(ACCEL_ENV, "").strip().lower()
    if forced in {"kvm", "tcg"}:
        return forced
    if kernel is None or not kernel.exists() or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    if "probed" not in _ACCEL:
        _ACCEL["probed"] = _probe_kvm(kernel, timeout)
    return _ACCEL["probed"]


def _probe_kvm(kernel: Path, timeout: float) -> str:
    """Boot ``kernel`` under KVM without a root filesystem: a kernel that gets as far as looking for
    one proves that KVM runs guests; "KVM internal error" (nested KVM here) or silence says no."""
    with tempfile.TemporaryDirectory(prefix="dlstack-kvm-probe-") as tmp:
        log, err = Path(tmp) / "serial.log", Path(tmp) / "qemu.err"
        argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "512", "-display", "none"]
        argv += ["-no-reboot", "-serial", f"file:{log}", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
        with err.open("w") as stderr:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        booted = False
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "VFS: Unable to mount root" in text or "Run /init" in text or "Kernel panic" in text:
                booted = True
                break
            if "error" in err.read_text(errors="replace").lower():
                break
            time.sleep(0.5)
        proc.kill()
        proc.wait()
    return "kvm" if booted else "tcg"


def accel_args(accel: str, smp: int) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host", "-smp", str(smp)]
    return ["-accel", "tcg,thread=multi", "-smp", str(smp)]


# ------------------------------------------------------------------------------ the image


@dataclass(frozen=True)
class Image:
    """A cached, bootable base image and what it was built from."""

    release: str
    path: Path
    kernel: str
    ssh_key: Path

    @property
    def probe_kernel(self) -> Path:
        """A copy of the image's kernel, booted once to find out whether KVM works here."""
        return self.path.parent / "vmlinuz"


def _ssh_key(cache: Path) -> Path:
    key = cache / "id_ed25519"
    if not key.exists():
        cache.mkdir(parents=True, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dlstack-vm-tests", "-f", str(key)])
    return key


def _image_id(tag: str) -> str:
    return _run(["docker", "image", "inspect", "--format", "{{.Id}}", tag]).stdout.strip()


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def configure_tree(tree: Path, public_key: str) -> str:
    """Turn an exported container tree into a bootable VM system; return its kernel release."""
    (tree / ".dockerenv").unlink(missing_ok=True)  # systemd-detect-virt would call the VM "docker"
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise VMError(f"expected one kernel in the image, found {kernels}")
    _write(tree / "etc/hostname", "dlstack-vm\n")
    _write(tree / "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 dlstack-vm\n")
    _write(tree / "etc/resolv.conf", f"nameserver {DNS}\n")
    _write(tree / "etc/fstab", f"LABEL={ROOT_LABEL} / ext4 errors=remount-ro 0 1\n")
    _write(
        tree / "etc/systemd/network/10-dlstack-vm.network",
        f"[Match]\nName=e*\n\n[Network]\nAddress={GUEST_ADDRESS}\nGateway={GATEWAY}\nDNS={DNS}\n",
    )
    for unit in UNMASKED:
        (tree / "etc/systemd/system" / unit).unlink(missing_ok=True)
    wants = {"systemd-networkd.service": "multi-user.target.wants", "systemd-networkd.socket": "sockets.target.wants"}
    for unit, target in wants.items():
        link = tree / "etc/systemd/system" / target / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/lib/systemd/system/{unit}")
    _write(tree / "etc/default/grub.d/50-dlstack-vm.cfg", GRUB_SETTINGS)
    _write(tree / "root/.ssh/authorized_keys", public_key, 0o600)
    (tree / "root/.ssh").chmod(0o700)
    _write(tree / "usr/local/sbin/dlstack-vm-firstboot", FIRSTBOOT, 0o755)
    return kernels[0]


def make_disk(tree: Path, raw: Path, size_gib: int = DISK_GIB) -> None:
    """A raw disk: an MBR with one bootable partition at 1 MiB, an ext4 filled from ``tree``."""
    raw.unlink(missing_ok=True)
    with raw.open("wb") as disk:
        disk.truncate(size_gib * 1024**3)
    _run(["sfdisk", "-q", str(raw)], input="label: dos\nstart=2048, type=83, bootable\n")
    blocks_k = (size_gib * 1024**3 - PARTITION_OFFSET) // 1024
    offset = f"offset={PARTITION_OFFSET}"
    _run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(tree), "-E", offset, str(raw), f"{blocks_k}k"])


def first_boot(raw: Path, tree: Path, kernel: str, accel: str, log: Path, timeout: float = 600) -> None:
    """Boot the kernel directly with the first-boot script as init: GRUB goes into the disk."""
    argv = ["qemu-system-x86_64", *accel_args(accel, 2), "-m", "2048", "-display", "none", "-no-reboot"]
    argv += ["-serial", f"file:{log}", "-drive", f"file={raw},format=raw,if=virtio"]
    boot = tree / "boot"
    argv += ["-kernel", str(boot / f"vmlinuz-{kernel}"), "-initrd", str(boot / f"initrd.img-{kernel}")]
    argv += ["-append", f"console=ttyS0 root=LABEL={ROOT_LABEL} rw init=/usr/local/sbin/dlstack-vm-firstboot panic=-1"]
    subprocess.run(argv, check=False, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    text = log.read_text(errors="replace") if log.exists() else ""
    if "DLSTACK-FIRSTBOOT rc=0" not in text:
        raise VMError(f"the first boot did not install GRUB; serial console: {log}\n{text[-2000:]}")


def build_image(release: str, *, mirror: str | None = None, force: bool = False) -> Image:
    """Build (or find in the cache) the bootable base image of an Ubuntu release.

    One build at a time per release (a file lock): two test workers that boot VMs of the same
    release wait for one image instead of writing it twice."""
    lock_dir = cache_root()
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f".build-{release}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_image(release, mirror=mirror, force=force)


def _build_image(release: str, *, mirror: str | None, force: bool) -> Image:
    require_tools()
    rel = testimages.release(release)
    mirror = mirror or testimages.mirror_from_env()
    testimages.build([release], mirror=mirror)
    cache = cache_root()
    key = _ssh_key(cache)
    inputs = testimages.inputs_hash("vm", RECIPE_VERSION, release, mirror, _image_id(rel.systemd_tag), *VM_PACKAGES)
    target = cache / release
    meta_file = target / "image.json"
    if not force and meta_file.exists():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("inputs") == inputs and (target / "base.qcow2").exists():
            return Image(release, target / "base.qcow2", meta["kernel"], key)
    tag = f"dlstack/ubuntu-vm:{release}"
    packages = " ".join(VM_PACKAGES)
    dockerfile = VM_DOCKERFILE.format(systemd_image=rel.systemd_tag, codename=rel.codename, packages=packages)
    subprocess.run(
        ["docker", "build", "--network", "host", "--tag", tag, "-"],
        input=dockerfile,
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dlstack-vm-", dir=target) as tmp:
        work = Path(tmp)
        tree = work / "tree"
        tree.mkdir()
        container = _run(["docker", "create", tag]).stdout.strip()
        try:
            export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-C", str(tree), "-xf", "-"], stdin=export.stdout, check=True)
            if export.wait() != 0:
                raise VMError(f"docker export of {tag} failed")
        finally:
            subprocess.run(["docker", "rm", "--force", container], check=False, capture_output=True)
        kernel = configure_tree(tree, key.with_suffix(".pub").read_text(encoding="utf-8"))
        shutil.copyfile(tree / "boot" / f"vmlinuz-{kernel}", target / "vmlinuz")
        raw = work / "disk.raw"
        make_disk(tree, raw)
        first_boot(raw, tree, kernel, accelerator(target / "vmlinuz"), target / "firstboot.log")
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(target / "base.qcow2.new")])
        (target / "base.qcow2.new").replace(target / "base.qcow2")
    meta_file.write_text(json.dumps({"inputs": inputs, "kernel": kernel, "release": release}) + "\n", encoding="utf-8")
    return Image(release, target / "base.qcow2", kernel, key)


# ------------------------------------------------------------------------------ a running VM


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VM:
    """One booted VM: an overlay of a base image, a QEMU process, SSH on 127.0.0.1:port."""

    image: Image
    workdir: Path
    memory_mib: int = 3072
    smp: int = 2
    # blank data disks (MiB each), seen in the guest as /dev/disk/by-id/virtio-dlstack-disk<N> (N from 1)
    data_disks_mib: tuple[int, ...] = ()
    port: int = 0
    accel: str = ""
    pid: int = 0
    pidfile: Path = field(init=False)
    serial: Path = field(init=False)
    overlay: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pidfile = self.workdir / "qemu.pid"
        self.serial = self.workdir / "serial.log"
        self.overlay = self.workdir / "disk.qcow2"

    # -- lifecycle

    def start(self, boot_timeout: float = 600) -> VM:
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image.path), "-F", "qcow2", str(self.overlay)])
        self.port = self.port or free_port()
        self.accel = self.accel or accelerator(self.image.probe_kernel)
        argv = ["qemu-system-x86_64", *accel_args(self.accel, self.smp), "-m", str(self.memory_mib)]
        argv += ["-display", "none", "-serial", f"file:{self.serial}", "-pidfile", str(self.pidfile), "-daemonize"]
        if self.data_disks_mib:
            # the firmware must boot this disk, not a blank data disk (the guest finds root by its label)
            argv += ["-drive", f"file={self.overlay},format=qcow2,if=none,id=root"]
            argv += ["-device", "virtio-blk-pci,drive=root,bootindex=0"]
            argv += self._data_disk_args()
        else:
            argv += ["-drive", f"file={self.overlay},format=qcow2,if=virtio"]
        argv += ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22", "-device", "virtio-net-pci,netdev=n0"]
        _run(argv)
        # kept in memory too: the workdir may be cleaned up by others while the VM runs
        self.pid = int(self.pidfile.read_text().strip())
        self.wait_for_ssh(boot_timeout)
        return self

    def _data_disk_args(self) -> list[str]:
        """Create the blank data disks (kept across reboots of this VM) and QEMU's arguments for them."""
        argv: list[str] = []
        for number, mib in enumerate(self.data_disks_mib, start=1):
            disk = self.workdir / f"data{number}.qcow2"
            if not disk.exists():
                _run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), f"{mib}M"])
            argv += ["-drive", f"file={disk},format=qcow2,if=none,id=data{number}"]
            argv += ["-device", f"virtio-blk-pci,drive=data{number},serial=dlstack-disk{number}"]
        return argv

    def stop(self) -> None:
        """Kill QEMU (if running) and remove the overlay."""
        pid = self.pid
        if not pid and self.pidfile.exists():
            try:
                pid = int(self.pidfile.read_text().strip())
            except ValueError:
                pid = 0
        if pid:
            try:
                os.kill(pid, 9)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                pass
        self.pid = 0
        self.pidfile.unlink(missing_ok=True)
        self.overlay.unlink(missing_ok=True)

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- SSH

    def ssh_args(self) -> list[str]:
        return [
            "-i", str(self.image.ssh_key), "-p", str(self.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=15", "-o", "BatchMode=yes",
        ]  # fmt: skip

    def ssh(self, command: str, *, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest as root."""
        proc = subprocess.run(
            ["ssh", *self.ssh_args(), f"{SSH_USER}@127.0.0.1", command],
            capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip
        if check and proc.returncode != 0:
            out = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            raise VMError(f"`{command}` exited {proc.returncode} in the VM:\n{out}")
        return proc

    def wait_for_ssh(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.ssh("systemctl is-system-running --wait", check=False, timeout=120).stdout.strip() in {
                    "running",
                    "degraded",
                }:
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(2)
        tail = self.serial.read_text(errors="replace")[-3000:] if self.serial.exists() else ""
        raise VMError(f"the VM did not answer on SSH within {timeout:.0f}s; serial console {self.serial}:\n{tail}")

    def inventory(self, group: str = "dlstack_workstations", host: str = "dlstack-vm") -> str:
        """A YAML inventory for Ansible (SSH to the forwarded port, pipelining on)."""
        return (
            f"all:\n  children:\n    {group}:\n      hosts:\n        {host}:\n"
            "          ansible_host: 127.0.0.1\n"
            f"          ansible_port: {self.port}\n"
            f"          ansible_user: {SSH_USER}\n"
            f"          ansible_ssh_private_key_file: {self.image.ssh_key}\n"
            "          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
            "          ansible_ssh_pipelining: true\n"
            "          ansible_python_interpreter: /usr/bin/python3\n"
        )
