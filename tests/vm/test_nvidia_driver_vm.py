"""The nvidia_driver role on a booted Ubuntu kernel (QEMU, no GPU): modules, signatures, reboots.

One VM per release walks the life of a lab host, each test a step that builds on the one before
(``pytest -m vm``; CI runs 24.04, ``DLSTACK_VM_RELEASES=22.04,24.04,26.04`` runs the matrix):

1. it boots the release pocket's kernel, as a host installed from the release's media;
2. site.yml's preflight resolves the driver, the role installs it with Canonical's signed modules
   and, with ``nvidia_driver_reboot: auto``, reboots into a kernel that has them;
3. the kernel enforces module signatures (``module.sig_enforce=1``, as Secure Boot's lockdown
   does): the module is accepted (ENODEV: no GPU) and an unsigned copy is refused (EKEYREJECTED);
4. a plain ``apt-get dist-upgrade`` brings the -updates kernel, and a maintenance reboot starts a
   kernel whose module matches: the new one when the archive serves its modules, else the boot
   guard keeps the previous one and says so;
5. a second converge changes nothing and does not reboot;
6. verification does not pass a host whose GPU does not work (no GPU here);
7. DKMS with a Machine Owner Key (a stand-in nvidia-dkms package, see files/): the key is made,
   DKMS signs with it, and the kernel refuses the module until the key is enrolled, which the role
   and verification report.

The live archive can be in a state where no kernel of the host's line has Canonical's modules for a
driver version the archive offers (2026-12-07: the newest kernels' module packages listed but not
served, the served ones built for a point release the index no longer lists). Step 2 then checks
that the role refuses before installing anything, with its message; the steps that need the
precompiled modules (marked ``precompiled``) are skipped with that message, and DKMS (7) and removal
(8) still run.

What only a GPU host proves: that the module drives a GPU, persistence mode, Fabric Manager
talking to NVSwitches, nvidia-smi after the reboot.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from vmhost import ROOT, VMHost, booted_vm

from dlstack.resolver import resolve

pytestmark = pytest.mark.vm

RELEASES = [r.strip() for r in os.environ.get("DLSTACK_VM_RELEASES", "24.04").split(",") if r.strip()]
CONVERGE = "tests/vm/converge.yml"
HOST_VARS = {
    "nvidia_driver_reboot": "auto",
    # Fabric Manager from the archive at the driver's upstream version (it cannot start without NVSwitch)
    "nvidia_driver_fabricmanager": True,
}
CANONICAL_SIGNER = "Canonical Ltd. Kernel Module Signing"


def _refusal_marker() -> tuple[str, str]:
    """The start of the role's refusal when no consistent precompiled set is servable (the module's own)."""
    path = ROOT / "plugins" / "modules" / "dlstack_nvidia_kernel_modules.py"
    spec = importlib.util.spec_from_file_location("dlstack_nvidia_kernel_modules_vm", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while classes are built
    spec.loader.exec_module(module)
    return str(module.NO_PRECOMPILED), str(module.NOT_SERVED)


NO_PRECOMPILED, NOT_SERVED = _refusal_marker()
# what a skip for the archive's state waits for
RUNS_AGAIN = " [runs again once the mirror serves what its index lists]"


def refusal_text(flat: str, marker: str) -> str:
    """The role's refusal from a run's output (whitespace collapsed): from its first words to its last."""
    text = flat[flat.index(marker) :]
    end = text.find("(dlstack_driver_branch).")
    return text[: end + len("(dlstack_driver_branch).")] if end >= 0 else text[:1500]


@pytest.fixture(scope="class", params=RELEASES)
def host(request) -> Iterator[VMHost]:
    with booted_vm(request.param, HOST_VARS) as machine:
        yield machine


def _module_path(host: VMHost, kernel: str = "$(uname -r)") -> str:
    return host.out(f"modinfo -k {kernel} -n nvidia")


def _report_dirs(tmp_path: Path) -> list[str]:
    """Verification reports go to the test's directory, never into the checkout's reports/."""
    return ["-e", f"gpu_verify_report_dir={tmp_path}", "-e", f"gpu_verify_fleet_report_dir={tmp_path / 'fleet'}"]


def _dkms_package(host: VMHost) -> str:
    """nvidia-dkms-<branch>[-server]-<modules> of the driver the role installs here: from its fact, or (when
    the precompiled converge was refused and wrote none) from the resolver, as preflight resolves it."""
    if host.sh("test -s /etc/ansible/facts.d/nvidia_driver.fact", check=False).returncode == 0:
        fact = host.fact()
        branch, server, modules = fact["branch"], fact["server_line"], fact["kernel_modules"]
    else:
        driver = resolve(os=host.release, driver_line="server").to_dict()["driver"]
        branch, server, modules = driver["branch"], True, driver["kernel_modules"]
    return f"nvidia-dkms-{branch}{'-server' if server else ''}-{modules}"


def _modprobe(host: VMHost) -> tuple[int, str]:
    proc = host.sh("modprobe nvidia", check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(autouse=True)
def _skip_without_precompiled_modules(request, host):
    """Steps that need Canonical's modules installed are skipped once the role refused (step 2)."""
    refusal = host.notes.get("precompiled_refused")
    if refusal and request.node.get_closest_marker("precompiled"):
        pytest.skip(f"no consistent precompiled modules in the archive today; the role refused: {refusal}{RUNS_AGAIN}")
    if host.notes.get("not_served"):
        pytest.skip(
            f"the archive does not serve the driver today; the role refused: {host.notes['not_served']}{RUNS_AGAIN}"
        )


@pytest.mark.usefixtures("host")
class TestNvidiaDriverOnARealKernel:
    # ---------------------------------------------------------------- 1. the release pocket's kernel

    def test_boots_the_release_pocket_kernel(self, host):
        assert host.kernel() == host.image.kernel
        codename = host.out(". /etc/os-release && echo $VERSION_CODENAME")
        installed = host.out("dpkg-query -W -f='${Version}' linux-image-virtual")
        madison = host.out("apt-cache madison linux-image-virtual")
        release_versions = [
            line.split("|")[1].strip() for line in madison.splitlines() if re.search(rf" {codename}/main ", line)
        ]
        assert release_versions == [installed]

    # ---------------------------------------------------------------- 2. converge: signed modules, reboot

    def test_converge_installs_the_driver_and_reboots_into_a_kernel_with_its_module(self, host):
        before = host.boot_id()
        result = host.play(CONVERGE, "converge")
        flat = " ".join(result.output.split())  # the callback folds long messages over lines
        if result.rc != 0 and NOT_SERVED in flat:
            why = refusal_text(flat, NOT_SERVED)
            assert "nothing was installed" in why, why
            host.notes["not_served"] = why
            pytest.skip(f"the archive does not serve the driver today; the role refused: {why}{RUNS_AGAIN}")
        if result.rc != 0 and NO_PRECOMPILED in flat:
            # the archive's state, not the role's: it must refuse before installing anything, and say why
            refusal = flat[flat.index(NO_PRECOMPILED) :]
            refusal = refusal[: refusal.index("enrolled).") + len("enrolled).")] if "enrolled)." in refusal else refusal
            assert "nvidia_driver_prefer_precompiled: false" in refusal, refusal[:2000]
            packages = host.out(
                "dpkg-query -W -f='${db:Status-Status} ${Package}\\n' | awk '$1==\"installed\"{print $2}'"
            )
            assert [p for p in packages.split() if re.match(r"^(lib)?nvidia-|^linux-modules-nvidia-", p)] == []
            assert host.boot_id() == before
            host.notes["precompiled_refused"] = refusal
            pytest.skip(
                f"no consistent precompiled modules in the archive today; the role refused: {refusal}{RUNS_AGAIN}"
            )
        assert result.rc == 0, result.tail()
        assert result.recap()["failed"] == 0
        # nvidia_driver_reboot: auto rebooted (no release-pocket kernel has modules of today's branches)
        assert host.boot_id() != before
        assert host.fact()["reboot_required"] is False
        guard = json.loads(host.out("cat /var/lib/dlstack/nvidia-boot-guard.json"))
        assert host.kernel() == guard["boot_kernel"]
        assert host.kernel() != host.image.kernel

    @pytest.mark.precompiled
    def test_precompiled_module_of_the_running_kernel_from_canonicals_package(self, host):
        path = _module_path(host)
        assert path.startswith(f"/lib/modules/{host.kernel()}/kernel/")
        owner = host.out(f"dpkg -S {path}").split(":")[0]
        assert re.match(rf"^linux-modules-nvidia-\d{{3}}.*-{re.escape(host.kernel())}$", owner)

    @pytest.mark.precompiled
    def test_no_dkms_package_and_nothing_under_updates_dkms(self, host):
        packages = host.out("dpkg-query -W -f='${db:Status-Status} ${Package}\\n' | awk '$1==\"installed\"{print $2}'")
        assert [p for p in packages.split() if p.startswith("nvidia-dkms") or re.match(r"^nvidia-headless-\d", p)] == []
        assert host.out("find /lib/modules -path '*/updates/dkms/*' -name 'nvidia*'") == ""

    @pytest.mark.precompiled
    def test_module_is_signed_by_canonical(self, host):
        assert host.out("modinfo -F signer nvidia") == CANONICAL_SIGNER

    # ---------------------------------------------------------------- 3. signature enforcement

    @pytest.mark.precompiled
    def test_kernel_enforces_module_signatures(self, host):
        assert host.out("cat /sys/module/module/parameters/sig_enforce") == "Y"
        assert host.fact()["signatures_enforced"] is True

    @pytest.mark.precompiled
    def test_signed_module_is_accepted_and_finds_no_gpu(self, host):
        rc, output = _modprobe(host)
        assert rc != 0
        assert "No such device" in output
        assert "Key was rejected" not in output
        assert "NVRM: No NVIDIA GPU found." in host.out("dmesg")

    @pytest.mark.precompiled
    def test_the_same_module_without_its_signature_is_refused(self, host):
        # negative control: enforcement is real. The signature is appended to the .ko after a
        # 12-byte struct and the "~Module signature appended~" marker; cut it off and load the rest.
        strip = (
            "import struct,sys; d=open(sys.argv[1],'rb').read(); m=b'~Module signature appended~\\n'; "
            "assert d.endswith(m); n=struct.unpack('>I', d[-len(m)-4:-len(m)])[0]; "
            "open('/tmp/nvidia-unsigned.ko','wb').write(d[:-len(m)-12-n])"
        )
        host.sh(f'python3 -c "{strip}" {_module_path(host)}')
        proc = host.sh("insmod /tmp/nvidia-unsigned.ko", check=False)
        assert proc.returncode != 0
        assert "Key was rejected by service" in proc.stdout + proc.stderr

    # ---------------------------------------------------------------- holds, services, guard

    @pytest.mark.precompiled
    def test_driver_is_held_and_kernel_modules_are_not(self, host):
        held = host.out("apt-mark showhold").split()
        fact = host.fact()
        assert sorted(held) == sorted(fact["packages"])
        assert f"libnvidia-compute-{fact['branch']}-server" in held
        assert [p for p in held if p.startswith("linux-")] == []

    @pytest.mark.precompiled
    def test_unattended_upgrades_leave_kernels_and_their_modules_free(self, host):
        out = host.out("apt-config dump Unattended-Upgrade::Package-Blacklist")
        # the list's own line has an empty value: `Unattended-Upgrade::Package-Blacklist "";`
        patterns = [line.split('"')[1] for line in out.splitlines() if '"' in line and line.split('"')[1]]
        assert patterns, "the role writes its held packages as exclusions"
        installed = host.out("dpkg-query -W -f='${Package}\\n'").split()
        kernel_packages = [p for p in installed if re.match(r"^linux-(image|modules)-", p)]
        assert [p for p in kernel_packages if p.startswith("linux-modules-nvidia-")], "no module package to check"
        for package in kernel_packages:
            assert not [p for p in patterns if re.match(p, package)], package

    @pytest.mark.precompiled
    def test_persistence_mode_is_on_in_the_unit(self, host):
        exec_start = host.out("systemctl show -p ExecStart nvidia-persistenced")
        assert "--persistence-mode" in exec_start
        assert "--no-persistence-mode" not in exec_start
        # no GPU: the udev rule that starts the daemon never fires, so it is not running here
        assert host.sh("systemctl is-active nvidia-persistenced", check=False).stdout.strip() != "active"

    @pytest.mark.precompiled
    def test_fabric_manager_at_the_drivers_upstream_version(self, host):
        fact = host.fact()
        version = host.out(f"dpkg-query -W -f='${{Version}}' nvidia-fabricmanager-{fact['branch']}")
        assert version.split("-")[0] == fact["version"]

    @pytest.mark.precompiled
    def test_boot_guard_hooks_are_installed(self, host):
        for hook in ("postinst", "postrm"):
            path = f"/etc/kernel/{hook}.d/dlstack-nvidia-boot-guard"
            assert host.sh(f"test -x {path}", check=False).returncode == 0, path
        assert "dlstack-nvidia-boot-guard" in host.out("apt-config dump DPkg::Post-Invoke")

    # ---------------------------------------------------------------- 4. kernel update, maintenance reboot

    @pytest.mark.precompiled
    def test_kernel_update_and_a_maintenance_reboot_start_a_kernel_with_its_module(self, host):
        # A package that carries a kernel ABI but no driver branch (defect 1 read "151" as a branch
        # and removed it on every run); real hosts keep it from older layouts.
        signatures = f"linux-signatures-nvidia-{host.kernel()}"
        if host.out(f"apt-cache pkgnames {signatures}") == signatures:
            host.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {signatures}")
            host.notes["signatures"] = signatures
        upgrade = host.sh("DEBIAN_FRONTEND=noninteractive apt-get dist-upgrade -y -q", check=False)
        assert upgrade.returncode == 0, upgrade.stdout[-3000:] + upgrade.stderr[-3000:]
        state = json.loads(host.out("cat /var/lib/dlstack/nvidia-boot-guard.json"))
        newest = state["newest_kernel"]
        assert newest != host.image.kernel
        host.reboot()
        running = host.kernel()
        newest_has_module = newest not in state["kernels_without_module"]
        if newest_has_module:
            assert running == newest
        else:
            # the archive lists the new kernel's modules but does not serve them yet (defect 7)
            assert running != newest
            assert state["override"] is True
            assert f"kernel {newest} is the newest" in state["message"]
            default = host.out("grep ^GRUB_DEFAULT /etc/default/grub.d/99-dlstack-nvidia.cfg")
            assert f"gnulinux-{running}-advanced" in default
        assert _module_path(host).startswith(f"/lib/modules/{running}/")
        _rc, output = _modprobe(host)
        assert "No such device" in output

    # ---------------------------------------------------------------- 5. idempotence

    @pytest.mark.precompiled
    def test_second_converge_changes_nothing_and_does_not_reboot(self, host):
        before = host.boot_id()
        result = host.play(CONVERGE, "idempotence")
        assert result.rc == 0, result.tail()
        assert result.recap()["changed"] == 0, result.tail(120)
        assert host.boot_id() == before
        if "signatures" in host.notes:
            assert host.sh(f"dpkg -s {host.notes['signatures']}", check=False).returncode == 0

    # ---------------------------------------------------------------- 6. verification without a GPU

    @pytest.mark.precompiled
    def test_verification_does_not_pass_a_host_whose_gpu_does_not_work(self, host, tmp_path):
        result = host.play("playbooks/verify.yml", "verify", None, *_report_dirs(tmp_path))
        assert result.rc != 0, "verification passed a host with kernel modules and no working GPU"
        report = json.loads((tmp_path / "dlstack-vm" / "system.json").read_text())
        assert report["mode"] == "gpu"
        check = next(c for c in report["checks"] if c["id"] == "system.driver_state")
        assert check["status"] == "fail"
        assert check["details"]["state"] == "no_device"

    # ---------------------------------------------------------------- 7. DKMS with a Machine Owner Key

    def test_dkms_builds_a_module_signed_with_the_machine_owner_key(self, host):
        real = os.environ.get("DLSTACK_VM_DKMS", "standin") == "real"
        package = _dkms_package(host)
        if not real:
            script = (ROOT / "tests/vm/files/build_dkms_standin.sh").read_text()
            host.sh(f"cat > /root/standin.sh <<'EOF'\n{script}EOF\nbash /root/standin.sh {package}")
        result = host.play(CONVERGE, "dkms", {"nvidia_driver_prefer_precompiled": False})
        flat = " ".join(result.output.split())
        if result.rc != 0 and NOT_SERVED in flat:
            host.notes["not_served"] = refusal_text(flat, NOT_SERVED)
            pytest.skip(
                f"the archive does not serve the driver today; the role refused: {host.notes['not_served']}{RUNS_AGAIN}"
            )
        assert result.rc == 0, result.tail()
        fact = host.fact()
        assert fact["module_source"] == "dkms"
        assert fact["mok_enrollment_pending"] is True
        assert fact["mok_certificate"] == "/var/lib/shim-signed/mok/MOK.der"
        certificate = "/var/lib/shim-signed/mok/MOK.der"
        subject = host.out(f"openssl x509 -inform DER -in {certificate} -noout -subject -nameopt multiline")
        common_name = re.search(r"commonName\s*=\s*(.+)", subject).group(1).strip()
        path = _module_path(host)
        assert "/updates/dkms/" in path
        assert host.out(f"modinfo -F signer {path}") == common_name
        assert "Enroll it once: run `sudo mokutil --import" in result.output or "no MOK list to enroll" in result.output

    def test_the_unenrolled_key_is_refused_and_verification_says_enroll_it(self, host, tmp_path):
        rc, output = _modprobe(host)
        assert rc != 0
        assert "Key was rejected by service" in output
        result = host.play("playbooks/verify.yml", "verify-dkms", None, *_report_dirs(tmp_path))
        assert result.rc != 0
        report = json.loads((tmp_path / "dlstack-vm" / "system.json").read_text())
        check = next(c for c in report["checks"] if c["id"] == "system.driver_state")
        assert check["details"]["state"] == "module_rejected"
        assert "mokutil --import /var/lib/shim-signed/mok/MOK.der" in check["message"]

    # ---------------------------------------------------------------- 8. removal

    def test_removal_leaves_no_driver_module_or_guard_behind(self, host):
        result = host.play(CONVERGE, "absent", {"nvidia_driver_state": "absent"})
        assert result.rc == 0, result.tail()
        packages = host.out("dpkg-query -W -f='${db:Status-Status} ${Package}\\n' | awk '$1==\"installed\"{print $2}'")
        driver = re.compile(r"^(lib)?nvidia-|^linux-(modules|objects|signatures)-nvidia-")
        left = [p for p in packages.split() if driver.match(p)]
        assert left == []
        assert host.out("apt-mark showhold") == ""
        for kernel in host.out("ls /lib/modules").split():
            assert host.sh(f"modinfo -k {kernel} -n nvidia", check=False).returncode != 0, kernel
        for path in (
            "/usr/local/sbin/dlstack-nvidia-boot-guard",
            "/etc/kernel/postinst.d/dlstack-nvidia-boot-guard",
            "/etc/apt/apt.conf.d/99dlstack-nvidia-boot-guard",
            "/etc/default/grub.d/99-dlstack-nvidia.cfg",
            "/etc/ansible/facts.d/nvidia_driver.fact",
            "/etc/modprobe.d/dlstack-blacklist-nouveau.conf",
        ):
            assert host.sh(f"test -e {path}", check=False).returncode != 0, path
        # GRUB starts the newest kernel again, and the Machine Owner Key (the owner's) is kept
        assert "gnulinux-advanced" not in host.out("grep -h ^GRUB_DEFAULT /etc/default/grub /etc/default/grub.d/*.cfg")
        assert host.sh("test -s /var/lib/shim-signed/mok/MOK.der", check=False).returncode == 0

    def test_removal_twice_changes_nothing(self, host):
        result = host.play(CONVERGE, "absent-again", {"nvidia_driver_state": "absent"})
        assert result.rc == 0, result.tail()
        assert result.recap()["changed"] == 0, result.tail(120)
