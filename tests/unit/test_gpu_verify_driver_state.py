"""gpu_verify's driver diagnosis: every state of diagnose_driver from constructed inputs, the gatherer
on a fake sysfs/dev/etc tree with fake commands, the mode choice, and the real script with --expect-gpu.

The command outputs and kernel log lines below are the kernel's and kmod's own words (modprobe
prints strerror(errno): EKEYREJECTED "Key was rejected by service", ENODEV "No such device";
kernel/module/signing.c "Loading of unsigned module is rejected"; NVIDIA's "NVRM: No NVIDIA GPU
found."). A unit test cannot prove the kernel says them: the VM tier (tests/vm) boots real Ubuntu
kernels where the module is rejected or finds no GPU for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from gpu_verify_script import SCRIPT, gv

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "6.8.0-45-generic"

MODPROBE_REJECTED = "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service"
MODPROBE_NO_DEVICE = "modprobe: ERROR: could not insert 'nvidia': No such device"
MODPROBE_NOT_FOUND = f"modprobe: FATAL: Module nvidia not found in directory /lib/modules/{KERNEL}"
CANONICAL = "Canonical Ltd. Kernel Module Signing"


GPU = gv.PciDevice(address="0000:01:00.0", pci_class="0x030200", device_id="0x2330", driver="nvidia")
UNBOUND_GPU = gv.PciDevice(address="0000:01:00.0", pci_class="0x030000", device_id="0x2204")
NVSWITCH = gv.PciDevice(address="0000:05:00.0", pci_class="0x068000", device_id="0x22a3")


def loaded_ok(**changes) -> object:
    """A working host: module 580.95.05 loaded, same userspace, device nodes present."""
    fields = {
        "kernel": KERNEL,
        "devices": [GPU],
        "module_loaded": True,
        "loaded_version": "580.95.05",
        "userspace_version": "580.95.05",
        "module_present": True,
        "module_file": f"/lib/modules/{KERNEL}/kernel/nvidia-580srv/nvidia.ko",
        "signer": CANONICAL,
        "control_node": True,
        "gpu_nodes": ["nvidia0"],
    }
    return gv.DriverState(**{**fields, **changes})


def not_loaded(**changes) -> object:
    """The module for the running kernel is installed but not loaded; nothing else known yet."""
    fields = {
        "kernel": KERNEL,
        "devices": [UNBOUND_GPU],
        "userspace_version": "580.95.05",
        "module_present": True,
        "module_file": f"/lib/modules/{KERNEL}/updates/dkms/nvidia.ko.zst",
        "signer": "gpu01 DKMS module signing (dlstack)",
    }
    return gv.DriverState(**{**fields, **changes})


def diagnosed(state) -> tuple[str, str]:
    result = gv.diagnose_driver(state)
    assert result.id == "system.driver_state"
    assert result.category == "system"
    assert result.required
    assert result.status == (gv.PASS if result.details["state"] == "ok" else gv.FAIL)
    if result.status == gv.FAIL:
        assert "Fix: " in result.message
        assert result.message.startswith(result.details["state"] + ": ")
        assert result.details["fix"] in result.message
    json.dumps(result.details)  # the report is JSON
    return result.details["state"], result.message


# -- diagnose_driver: every state ----------------------------------------------------------------


def test_ok_when_loaded_versions_agree_and_nodes_present():
    state, message = diagnosed(loaded_ok())
    assert state == "ok"
    assert "580.95.05" in message and "/dev/nvidia0" in message


def test_ok_with_unknown_userspace_version():
    assert diagnosed(loaded_ok(userspace_version=None))[0] == "ok"


def test_loaded_module_older_than_userspace_is_reboot_pending():
    state, message = diagnosed(loaded_ok(loaded_version="570.172.08"))
    assert state == "reboot_pending"
    assert "570.172.08" in message and "580.95.05" in message
    assert "reboot" in message and "nvidia_driver_reboot=auto" in message


@pytest.mark.parametrize("value", [True, "True", "true"])
def test_not_loaded_and_fact_says_reboot_required(value):
    state, message = diagnosed(not_loaded(fact={"reboot_required": value}))
    assert state == "reboot_pending"
    assert "reboot_required" in message


def test_not_loaded_and_reboot_required_pkgs_names_the_driver():
    pkgs = ["linux-image-6.8.0-47-generic", "nvidia-dkms-580-server"]
    state, message = diagnosed(not_loaded(reboot_required_pkgs=pkgs))
    assert state == "reboot_pending"
    assert "nvidia-dkms-580-server" in message


def test_rejected_signature_with_pending_mok_says_how_to_enroll():
    fact = {"mok_enrollment_pending": True, "mok_certificate": "/var/lib/dlstack/mok/MOK.der", "reboot_required": True}
    state, message = diagnosed(not_loaded(modprobe_error=MODPROBE_REJECTED, fact=fact, secure_boot=True))
    assert state == "module_rejected"  # not reboot_pending: a reboot alone would not load it
    assert "mokutil --import /var/lib/dlstack/mok/MOK.der" in message
    for step in ("Enroll MOK", "Continue", "Yes", "password", "Reboot"):
        assert step in message
    assert "gpu01 DKMS module signing (dlstack)" in message
    assert "Secure Boot is on" in message


def test_rejected_pending_mok_without_certificate_path_still_names_the_step():
    state, message = diagnosed(not_loaded(modprobe_error=MODPROBE_REJECTED, fact={"mok_enrollment_pending": "True"}))
    assert state == "module_rejected"
    assert "mokutil --import" in message and "MokManager" in message


def test_rejected_canonical_signature_from_the_kernel_log():
    log = ["[    5.1] Loading of unsigned module is rejected"]
    state, message = diagnosed(not_loaded(signer=CANONICAL, kernel_log=log))
    assert state == "module_rejected"
    assert "Canonical's key" in message and "mokutil --list-enrolled" in message
    assert "kernel log: [    5.1] Loading of unsigned module is rejected" in message


def test_rejected_unsigned_module_without_mok_in_the_fact():
    log = ["Lockdown: modprobe: unsigned module loading is restricted; see man kernel_lockdown.7"]
    state, message = diagnosed(not_loaded(signer="", kernel_log=log))
    assert state == "module_rejected"
    assert "unsigned" in message and "mokutil --import" in message


def test_missing_module_with_a_newer_boot_kernel_says_reboot():
    guard = {"boot_kernel": "6.8.0-47-generic"}
    fact = {"reboot_required": True}
    state, message = diagnosed(not_loaded(module_present=False, module_file=None, fact=fact, guard=guard))
    assert state == "module_missing"  # before reboot_pending: it says which kernel has the module
    assert KERNEL in message
    assert "boot loader will start 6.8.0-47-generic" in message


def test_missing_module_does_not_promise_a_boot_kernel_that_lacks_it_too():
    guard = {"boot_kernel": "6.8.0-47-generic", "kernels_without_module": ["6.8.0-47-generic"]}
    state, message = diagnosed(not_loaded(module_present=False, fact={"branch": "580"}, guard=guard))
    assert state == "module_missing"
    assert "boot loader" not in message
    assert f"linux-modules-nvidia-580-{KERNEL}" in message


def test_missing_module_names_ubuntus_package_for_the_running_kernel():
    fact = {"branch": "580", "server_line": True, "kernel_modules": "open", "module_source": "precompiled"}
    state, message = diagnosed(not_loaded(module_present=False, fact=fact))
    assert state == "module_missing"
    assert f"sudo apt install linux-modules-nvidia-580-server-open-{KERNEL}" in message
    assert "nvidia_driver role" in message


def test_missing_module_without_fact_uses_a_branch_placeholder():
    state, message = diagnosed(not_loaded(module_present=False))
    assert state == "module_missing"
    assert f"linux-modules-nvidia-<branch>-{KERNEL}" in message


def test_missing_dkms_module_says_rebuild():
    state, message = diagnosed(not_loaded(module_present=False, fact={"module_source": "dkms"}))
    assert state == "module_missing"
    assert f"dkms autoinstall -k {KERNEL}" in message


def test_modprobe_not_found_counts_as_missing():
    # gather_driver_state turns modprobe's "not found" into module_present=False; the rule reads that
    state = not_loaded(modprobe_error=MODPROBE_NOT_FOUND, module_present=False)
    assert diagnosed(state)[0] == "module_missing"


def test_module_accepted_but_no_gpu_from_modprobe():
    state, message = diagnosed(
        not_loaded(devices=[], modprobe_error=MODPROBE_NO_DEVICE, fact={"reboot_required": True})
    )
    assert state == "no_device"  # not reboot_pending: no reboot brings back a GPU that is not there
    assert "lspci -d 10de:" in message and "xid" in message.lower()


def test_no_gpu_from_the_kernel_log():
    state, message = diagnosed(not_loaded(devices=[], kernel_log=["NVRM: No NVIDIA GPU found."]))
    assert state == "no_device"
    assert "NVRM: No NVIDIA GPU found." in message


def test_no_gpu_on_the_pci_bus_without_other_evidence():
    state, message = diagnosed(not_loaded(devices=[NVSWITCH]))  # an NVSwitch is not a GPU
    assert state == "no_device"
    assert "/sys/bus/pci/devices" in message


def test_gpu_on_the_bus_held_by_another_driver_is_no_device():
    vfio = gv.PciDevice(address="0000:01:00.0", pci_class="0x030200", driver="vfio-pci")
    log = ["NVRM: The NVIDIA probe routine was not called for 1 device(s)."]
    state, message = diagnosed(not_loaded(devices=[vfio], kernel_log=log))
    assert state == "no_device"
    assert "0000:01:00.0 is bound to vfio-pci" in message
    assert "dmesg | grep NVRM" in message


def test_device_nodes_missing_on_a_host():
    state, message = diagnosed(loaded_ok(control_node=False, gpu_nodes=[]))
    assert state == "device_node_missing"
    assert "/dev/nvidiactl" in message and "/dev/nvidia0" in message
    assert "nvidia-modprobe -c0 -u" in message and "nvidia-persistenced" in message


def test_device_nodes_missing_in_a_container():
    state, message = diagnosed(loaded_ok(gpu_nodes=[], in_container=True))
    assert state == "device_node_missing"
    assert "--gpus all" in message


def test_gpu_subset_in_a_container_is_enough():
    assert diagnosed(loaded_ok(gpu_nodes=["nvidia3"], in_container=True))[0] == "ok"


def test_nouveau_loaded_instead_of_nvidia():
    nouveau_gpu = gv.PciDevice(address="0000:01:00.0", pci_class="0x030000", driver="nouveau")
    state, message = diagnosed(
        not_loaded(devices=[nouveau_gpu], nouveau_loaded=True, modprobe_error=MODPROBE_NO_DEVICE)
    )
    assert state == "nouveau_bound"  # before no_device: nouveau holding the GPU is why modprobe says ENODEV
    assert "blacklist" in message and "initramfs" in message and "reboot" in message
    assert "0000:01:00.0" in message


def test_nouveau_bound_to_a_gpu_while_nvidia_is_loaded():
    nouveau_gpu = gv.PciDevice(address="0000:02:00.0", pci_class="0x030000", driver="nouveau")
    assert diagnosed(loaded_ok(devices=[GPU, nouveau_gpu], nouveau_loaded=True))[0] == "nouveau_bound"


def test_nouveau_loaded_but_bound_to_nothing_is_fine_when_nvidia_works():
    assert diagnosed(loaded_ok(nouveau_loaded=True))[0] == "ok"


def test_not_loaded_for_an_unknown_reason_says_how_to_find_out():
    state, message = diagnosed(not_loaded())  # e.g. not root: no modprobe, no kernel log
    assert state == "module_not_loaded"
    assert "sudo modprobe nvidia" in message and "as root" in message


def test_not_loaded_shows_modprobes_unexplained_error():
    error = "modprobe: ERROR: could not insert 'nvidia': Unknown symbol in module, or unknown parameter"
    state, message = diagnosed(not_loaded(modprobe_error=error))
    assert state == "module_not_loaded"
    assert "Unknown symbol" in message


def test_details_carry_the_gathered_facts():
    result = gv.diagnose_driver(not_loaded(fact={"branch": "580", "secret": "x"}, secure_boot=True))
    details = result.details
    assert details["kernel"] == KERNEL
    assert details["pci_gpus"][0]["address"] == "0000:01:00.0"
    assert details["fact"] == {"branch": "580"}  # only the keys the diagnosis reads
    assert details["secure_boot"] is True
    assert details["problem"] and details["fix"]


# -- mode choice ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "expect", "evidence", "cpu_mode"),
    [
        (False, False, [], True),  # nothing NVIDIA here: CPU mode
        (False, False, ["1 NVIDIA GPU(s) on the PCI bus"], False),
        (False, True, [], False),  # --expect-gpu: GPU mode even with no GPU visible
        (True, False, ["1 NVIDIA GPU(s) on the PCI bus"], True),  # --cpu by name wins
        (True, True, [], True),
    ],
)
def test_choose_mode(cpu, expect, evidence, cpu_mode):
    chosen, reason = gv.choose_mode(cpu, expect, evidence)
    assert chosen is cpu_mode
    assert reason


@pytest.mark.parametrize(
    ("fact", "installed"),
    [
        ({}, False),
        ({"kernel_modules": "none", "userspace_only": True}, False),
        ({"kernel_modules": "none", "userspace_only": "True"}, False),
        ({"kernel_modules": "open", "userspace_only": False}, True),
        ({"kernel_modules": "proprietary"}, True),
        ({"userspace_only": "False"}, True),
    ],
)
def test_kernel_driver_installed(fact, installed):
    assert gv.kernel_driver_installed(fact) is installed


def test_cpu_asked_for_by_name_warns_when_a_gpu_is_there():
    ctx = gv.Context(args=gv.parse_args(["--cpu"]))
    gv.system_checks(ctx, ["1 NVIDIA GPU(s) on the PCI bus (0000:01:00.0)"])
    checks = {result.id: result for result in ctx.results}
    assert checks["system.cpu_mode"].status == gv.WARN
    assert "0000:01:00.0" in checks["system.cpu_mode"].message
    assert checks["system.driver_state"].status == gv.SKIP
    assert gv.overall(ctx.results)["exit_code"] == 0


def test_cpu_mode_without_evidence_does_not_warn():
    ctx = gv.Context(args=gv.parse_args(["--cpu"]))
    gv.system_checks(ctx, [])
    assert "system.cpu_mode" not in {result.id for result in ctx.results}


def test_failing_driver_state_fails_the_run():
    failed = gv.diagnose_driver(not_loaded(devices=[], modprobe_error=MODPROBE_NO_DEVICE))
    summary = gv.overall([failed, gv.CheckResult("hardware.cpu", "hardware", gv.PASS, "ok")])
    assert summary["exit_code"] == 1
    assert summary["failed"] == ["system.driver_state"]


# -- the gatherer on a fake tree ---------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def pci(root: Path, address: str, vendor: str, pci_class: str, driver: str | None = None) -> None:
    device = root / "sys" / "bus" / "pci" / "devices" / address
    write(device / "vendor", vendor + "\n")
    write(device / "class", pci_class + "\n")
    write(device / "device", "0x2330\n")
    if driver:
        target = root / "sys" / "bus" / "pci" / "drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        (device / "driver").symlink_to(target)


def load_module(root: Path, version: str = "580.95.05") -> None:
    write(root / "sys" / "module" / "nvidia" / "version", version + "\n")


def device_nodes(root: Path, *names: str) -> None:
    for name in names:
        write(root / "dev" / name, "")


class FakeCommands:
    """Answers commands by program name; records every call. Unknown programs: 127 (not installed)."""

    def __init__(self, answers: dict[str, tuple[int, str, str]], on_modprobe: Callable[[], None] | None = None):
        self.answers = answers
        self.on_modprobe = on_modprobe
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        if argv[0] == "modinfo" and "-F" in argv:
            return self.answers.get("modinfo-signer", (0, "", ""))
        answer = self.answers.get(argv[0], (127, "", f"{argv[0]}: command not found"))
        if argv[0] == "modprobe" and answer[0] == 0 and self.on_modprobe:
            self.on_modprobe()
        return answer

    def ran(self, program: str) -> bool:
        return any(call[0] == program for call in self.calls)


MODINFO_OK = (0, f"/lib/modules/{KERNEL}/kernel/nvidia-580srv/nvidia.ko\n", "")


def test_nvidia_pci_devices_reads_vendor_class_and_driver(tmp_path):
    pci(tmp_path, "0000:00:02.0", "0x8086", "0x030000", "i915")  # Intel graphics: not NVIDIA
    pci(tmp_path, "0000:01:00.0", "0x10de", "0x030000", "nvidia")
    pci(tmp_path, "0000:01:00.1", "0x10de", "0x040300", "snd_hda_intel")  # the GPU's HDMI audio
    pci(tmp_path, "0000:41:00.0", "0x10de", "0x030200")
    pci(tmp_path, "0000:c1:00.0", "0x10de", "0x068000")
    devices = gv.nvidia_pci_devices(tmp_path / "sys")
    assert [device.address for device in devices] == ["0000:01:00.0", "0000:01:00.1", "0000:41:00.0", "0000:c1:00.0"]
    assert [device.address for device in devices if device.is_gpu] == ["0000:01:00.0", "0000:41:00.0"]
    assert [device.address for device in devices if device.is_nvswitch] == ["0000:c1:00.0"]
    assert devices[0].driver == "nvidia"
    assert devices[2].driver is None


def test_no_sysfs_means_no_devices(tmp_path):
    assert gv.nvidia_pci_devices(tmp_path / "sys") == []


def test_gatherer_on_a_working_host_does_not_modprobe(tmp_path):
    pci(tmp_path, "0000:01:00.0", "0x10de", "0x030200", "nvidia")
    load_module(tmp_path)
    device_nodes(tmp_path, "nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm")
    write(tmp_path / "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05", "")
    commands = FakeCommands({"modinfo": MODINFO_OK, "modinfo-signer": (0, CANONICAL + "\n", ""), "dmesg": (0, "", "")})
    state = gv.gather_driver_state(tmp_path, commands, kernel=KERNEL, is_root=True)
    assert state.module_loaded and state.loaded_version == "580.95.05"
    assert state.userspace_version == "580.95.05"
    assert state.gpu_nodes == ["nvidia0", "nvidia1"] and state.control_node
    assert state.signer == CANONICAL
    assert not commands.ran("modprobe")
    assert diagnosed(state)[0] == "ok"


def test_gatherer_as_root_hears_the_rejected_key(tmp_path):
    pci(tmp_path, "0000:01:00.0", "0x10de", "0x030000")
    fact = {
        "kernel_modules": "proprietary",
        "module_source": "dkms",
        "userspace_only": False,
        "mok_enrollment_pending": True,
        "mok_certificate": "/var/lib/dlstack/mok/MOK.der",
        "reboot_required": True,
    }
    write(tmp_path / gv.FACT_FILE, json.dumps(fact))
    efivar = tmp_path / gv.SECURE_BOOT_VAR
    efivar.parent.mkdir(parents=True)
    efivar.write_bytes(b"\x06\x00\x00\x00\x01")
    dmesg = (
        "[    4.2] nvidia: loading out-of-tree module taints kernel.\n"
        "[    4.3] Loading of unsigned module is rejected\n"
    )
    commands = FakeCommands(
        {
            "modinfo": (0, f"/lib/modules/{KERNEL}/updates/dkms/nvidia.ko.zst\n", ""),
            "modinfo-signer": (0, "gpu01 DKMS module signing (dlstack)\n", ""),
            "modprobe": (1, "", MODPROBE_REJECTED + "\n"),
            "dmesg": (0, "[    1.0] unrelated line\n" + dmesg, ""),
            "dpkg-query": (0, "ii  libnvidia-compute-580 580.95.05-0ubuntu0.24.04.2\n", ""),
        }
    )
    state = gv.gather_driver_state(tmp_path, commands, kernel=KERNEL, is_root=True)
    assert ["modinfo", "-k", KERNEL, "-n", "nvidia"] in commands.calls
    assert ["modprobe", "nvidia"] in commands.calls
    assert state.modprobe_error == MODPROBE_REJECTED
    assert state.secure_boot is True
    assert state.userspace_version == "580.95.05"  # from dpkg: no libnvidia-ml file in the tree
    assert state.kernel_log == [line.strip() for line in dmesg.splitlines()]
    assert state.fact["mok_certificate"] == "/var/lib/dlstack/mok/MOK.der"
    name, message = diagnosed(state)
    assert name == "module_rejected"
    assert "mokutil --import /var/lib/dlstack/mok/MOK.der" in message


def test_gatherer_without_root_never_modprobes(tmp_path):
    pci(tmp_path, "0000:01:00.0", "0x10de", "0x030000")
    commands = FakeCommands({"modinfo": MODINFO_OK, "modprobe": (0, "", "")})
    state = gv.gather_driver_state(tmp_path, commands, kernel=KERNEL, is_root=False)
    assert not commands.ran("modprobe")
    assert diagnosed(state)[0] == "module_not_loaded"


def test_gatherer_reads_the_tree_again_after_its_modprobe_loads_the_module(tmp_path):
    pci(tmp_path, "0000:01:00.0", "0x10de", "0x030000", "nvidia")
    write(tmp_path / "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05", "")

    def kernel_loads_it() -> None:
        load_module(tmp_path)
        device_nodes(tmp_path, "nvidiactl", "nvidia0")

    commands = FakeCommands({"modinfo": MODINFO_OK, "modprobe": (0, "", "")}, on_modprobe=kernel_loads_it)
    state = gv.gather_driver_state(tmp_path, commands, kernel=KERNEL, is_root=True)
    assert state.loaded_by_verify and state.module_loaded
    name, message = diagnosed(state)
    assert name == "ok"
    assert "loaded by this check" in message


def test_gatherer_vm_without_gpu_and_module_accepted(tmp_path):
    """The VM tier's case, faked: module installed and signed right, no GPU on the bus."""
    pci(tmp_path, "0000:00:01.0", "0x1af4", "0x010000", "virtio-pci")
    write(tmp_path / gv.FACT_FILE, json.dumps({"kernel_modules": "open", "userspace_only": False}))
    commands = FakeCommands(
        {
            "modinfo": MODINFO_OK,
            "modprobe": (1, "", MODPROBE_NO_DEVICE + "\n"),
            "dmesg": (0, "[    9.1] NVRM: No NVIDIA GPU found.\n", ""),
        }
    )
    state = gv.gather_driver_state(tmp_path, commands, kernel=KERNEL, is_root=True)
    assert state.gpus == []
    assert diagnosed(state)[0] == "no_device"
    assert gv.gpu_evidence(tmp_path) == ["the nvidia_driver role installed kernel modules (open)"]


def test_gatherer_modprobe_not_found_means_missing(tmp_path):
    pci(tmp_path, "0000:01:00.0", "0x10de", "0x030000")
    commands = FakeCommands(
        {"modinfo": (1, "", "modinfo: ERROR: Module nvidia not found.\n"), "modprobe": (1, "", MODPROBE_NOT_FOUND)}
    )
    state = gv.gather_driver_state(tmp_path, commands, kernel=KERNEL, is_root=True)
    assert state.module_present is False
    assert not commands.ran("modprobe")  # nothing to load
    assert diagnosed(state)[0] == "module_missing"


def test_gatherer_without_kmod_tools_leaves_presence_unknown(tmp_path):
    commands = FakeCommands({})
    state = gv.gather_driver_state(tmp_path, commands, kernel=KERNEL, is_root=True)
    assert state.module_present is None
    assert state.modprobe_error is None
    assert state.kernel_log == []


def test_gatherer_reads_nouveau_reboot_pkgs_container_and_a_broken_fact(tmp_path):
    pci(tmp_path, "0000:01:00.0", "0x10de", "0x030000", "nouveau")
    (tmp_path / "sys" / "module" / "nouveau").mkdir(parents=True)
    write(tmp_path / gv.FACT_FILE, "{not json")
    write(tmp_path / gv.REBOOT_PKGS_FILE, "linux-base\nnvidia-kernel-common-580\nlinux-image-6.8.0-47-generic\ndbus\n")
    write(tmp_path / ".dockerenv", "")
    state = gv.gather_driver_state(tmp_path, FakeCommands({"modinfo": MODINFO_OK}), kernel=KERNEL, is_root=False)
    assert state.nouveau_loaded
    assert state.fact == {}
    assert state.reboot_required_pkgs == ["linux-base", "linux-image-6.8.0-47-generic", "nvidia-kernel-common-580"]
    assert state.in_container
    assert diagnosed(state)[0] == "nouveau_bound"


def test_libnvidia_ml_version_takes_the_newest_file(tmp_path):
    for version in ("535.104.05", "580.95.05", "580.82.07"):
        write(tmp_path / f"usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{version}", "")
    write(tmp_path / "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "")
    assert gv.libnvidia_ml_version(tmp_path) == "580.95.05"


def test_detect_report_on_a_fake_tree(tmp_path):
    pci(tmp_path, "0000:01:00.0", "0x10de", "0x030200")
    pci(tmp_path, "0000:c1:00.0", "0x10de", "0x068000")
    report = gv.detect_report(tmp_path)
    assert report["nvidia_gpus"] == ["0000:01:00.0"]
    assert report["nvswitches"] == ["0000:c1:00.0"]
    assert report["expect_gpu"] is True
    assert report["kernel_driver_installed"] is False


def test_evidence_on_an_empty_tree_is_empty(tmp_path):
    assert gv.gpu_evidence(tmp_path) == []
    assert gv.detect_report(tmp_path)["expect_gpu"] is False


# -- the real script ------------------------------------------------------------------------------


@pytest.fixture
def no_frameworks(tmp_path):
    """A PYTHONPATH entry that makes torch and tensorflow absent, whatever this interpreter has."""
    for name in ("torch", "tensorflow"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'raise ImportError("No module named {name!r}")\n')
    return tmp_path


def run_script(*args: str, pythonpath: Path, path_env: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(pythonpath), "PATH": path_env, "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


HAS_NVIDIA = bool(gv.gpu_evidence())
NO_BIN = "/nonexistent-dlstack-bin"


@pytest.mark.skipif(HAS_NVIDIA, reason="this machine has an NVIDIA GPU or driver: the driver may well work")
def test_expect_gpu_on_a_host_without_a_gpu_exits_1_with_the_diagnosis(tmp_path, no_frameworks):
    out = tmp_path / "report.json"
    # no commands on PATH: no nvidia-smi, no modprobe; the diagnosis still reads sysfs
    proc = run_script(
        "--expect-gpu", "--json-out", str(out), "--data-dir", str(tmp_path), pythonpath=no_frameworks, path_env=NO_BIN
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["mode"] == "gpu"
    assert report["mode_reason"] == "--expect-gpu given"
    checks = {check["id"]: check for check in report["checks"]}
    driver = checks["system.driver_state"]
    assert driver["status"] == "fail"
    assert driver["details"]["state"] in {"no_device", "module_missing", "module_rejected", "module_not_loaded"}
    assert "system.driver_state" in report["summary"]["failed"]


@pytest.mark.skipif(HAS_NVIDIA, reason="this machine has an NVIDIA GPU or driver: auto mode picks the GPU")
def test_auto_mode_on_a_host_without_nvidia_runs_on_the_cpu(tmp_path, no_frameworks):
    proc = run_script("--json", "--data-dir", str(tmp_path), pythonpath=no_frameworks, path_env=NO_BIN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["mode"] == "cpu"
    assert "no NVIDIA GPU on the PCI bus" in report["mode_reason"]
    checks = {check["id"]: check for check in report["checks"]}
    assert checks["system.driver_state"]["status"] == "skip"
    assert "system.cpu_mode" not in checks


def test_detect_prints_json(tmp_path, no_frameworks):
    proc = run_script("--detect", pythonpath=no_frameworks, path_env=NO_BIN)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == {"nvidia_gpus", "nvswitches", "kernel_driver_installed", "evidence", "expect_gpu"}
    assert report["expect_gpu"] is HAS_NVIDIA
