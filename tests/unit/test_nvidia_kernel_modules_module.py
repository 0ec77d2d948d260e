"""plugins/modules/dlstack_nvidia_kernel_modules.py: the driver with Canonical's signed modules, and
what it does when the archive lists module packages it does not serve (issue 12, defect 7).

apt is replaced by a small model of the archive (index, dependencies, 404s); the failure output it
prints is the one recorded from a real apt run in the VM tier (tests/fixtures/apt). The VM tier
runs the module against the real archive on a booted Ubuntu kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from file_module import load_file

ROOT = Path(__file__).resolve().parents[2]
mod = load_file(
    "dlstack_nvidia_kernel_modules", ROOT / "plugins" / "modules" / "dlstack_nvidia_kernel_modules.py", register=True
)

RECORDED_404 = (ROOT / "tests" / "fixtures" / "apt" / "noble-updates-404-nvidia-modules.txt").read_text()
PREFIX = "linux-modules-nvidia-580-server-open-"
META = PREFIX + "generic"
DRIVER = ["nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"]


def test_recorded_apt_404_names_the_packages():
    assert mod.unavailable_packages(RECORDED_404) == {
        PREFIX + "6.8.0-151-generic",
        PREFIX + "generic",
    }


def test_module_abis_newest_first_and_only_the_flavour():
    names = [
        PREFIX + "6.8.0-149-generic",
        PREFIX + "6.8.0-151-generic",
        PREFIX + "6.8.0-99-generic",
        PREFIX + "6.8.0-1015-aws",
        PREFIX + "generic",
        PREFIX + "generic-hwe-24.04",
        "linux-signatures-nvidia-6.8.0-151-generic",
    ]
    assert mod.module_abis(names, PREFIX, "generic") == ["6.8.0-151-generic", "6.8.0-149-generic", "6.8.0-99-generic"]
    assert mod.module_abis(names, PREFIX, "aws") == ["6.8.0-1015-aws"]


def test_fallback_stays_on_the_running_kernel_line():
    # recorded in the VM tier: without the series filter a 6.8 GA host got the 7.0 HWE kernel
    names = [PREFIX + "7.0.0-44-generic", PREFIX + "7.0.0-42-generic", PREFIX + "6.8.0-149-generic"]
    assert mod.module_abis(names, PREFIX, "generic", mod.kernel_series("6.8.0-31-generic")) == ["6.8.0-149-generic"]


class Archive:
    """A tiny apt: packages in the index, their dependencies, the ones that 404, dpkg's state, and the
    driver's point releases: each module package is built for one (``built_for``; default the newest) and
    the index offers ``driver_versions`` (newest first; -updates keeps only the newest). Pins
    (``pkg=version``) and holds behave as apt's do."""

    def __init__(self, listed, deps, missing, installed=(), driver_versions=("580.95.05",), built_for=None):
        self.listed, self.deps, self.missing = set(listed), deps, set(missing)
        self.installed = set(installed)
        self.driver_versions = list(driver_versions)
        self.built_for = dict(built_for or {})
        self.driver_installed: str | None = None
        self.held = False
        self.runs: list[list[str]] = []

    def closure(self, names):
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += self.deps.get(name, [])
        return seen

    def module_driver(self, name):
        return self.built_for.get(name, self.driver_versions[0])

    def __call__(self, argv):
        if argv[:2] == ["apt-cache", "pkgnames"]:
            return 0, "\n".join(sorted(n for n in self.listed if n.startswith(argv[2])))
        if argv[:2] == ["apt-cache", "show"]:
            name = argv[2]
            if name not in self.listed:
                return 100, "E: No packages found"
            depends = (
                f"nvidia-kernel-common-580-server (>= {self.module_driver(name)})" if name.startswith(PREFIX) else ""
            )
            return 0, f"Package: {name}\nVersion: 1.0\nDepends: linux-image-x, {depends}\n\n"
        if argv[:2] == ["apt-cache", "madison"]:
            return 0, "".join(
                f" {argv[2]} | {v}-0ubuntu0.24.04.1 | http://archive noble-updates/restricted amd64 Packages\n"
                for v in self.driver_versions
            )
        if argv[0] == "dpkg-query":
            return 0, "".join(f"installed {n} {self.version_of(n)}\n" for n in sorted(self.installed))
        if argv[:2] == ["apt-get", "install"]:
            return self.install([a for a in argv[2:] if not a.startswith("-") and "::" not in a])
        raise AssertionError(argv)

    def version_of(self, name):
        return f"{self.driver_installed}-0ubuntu0.24.04.1" if name in DRIVER and self.driver_installed else "1.0"

    def install(self, args):
        wanted = [a.split("=")[0] for a in args]
        self.runs.append(wanted)
        pins = {a.split("=")[0]: a.split("=")[1].split("-")[0] for a in args if "=" in a}
        new = self.closure(wanted) - self.installed
        driver = next(iter(pins.values()), None) or (self.driver_installed if self.held else self.driver_versions[0])
        modules = [n for n in self.closure(wanted) | self.installed if n.startswith(PREFIX) and n != META]
        if self.held and self.driver_installed and driver != self.driver_installed:
            return 100, "E: Held packages were changed and -y was used without --allow-change-held-packages."
        clash = [m for m in modules if self.module_driver(m) != driver]
        if clash:
            if self.held:
                return 100, "E: Held packages were changed and -y was used without --allow-change-held-packages."
            return 100, (
                f"The following packages have unmet dependencies:\n {clash[0]} : Depends: "
                f"nvidia-kernel-common-580-server (<= {self.module_driver(clash[0])}-1) but {driver} is to be "
                "installed\nE: Unable to correct problems, you have held broken packages."
            )
        broken = sorted(new & self.missing)
        if broken:
            lines = [f"E: Failed to fetch http://archive/pool/{n}_1.0_amd64.deb  404  Not Found" for n in broken]
            return 100, "\n".join(lines)
        self.installed |= new
        if set(DRIVER) & set(wanted):
            self.driver_installed = driver
        return 0, "ok"


def noble_archive(missing=(PREFIX + "6.8.0-151-generic",), installed=("linux-image-6.8.0-31-generic",)):
    kernels = ["6.8.0-146-generic", "6.8.0-149-generic", "6.8.0-151-generic", "7.0.0-44-generic"]
    deps = {META: [PREFIX + "6.8.0-151-generic"]}
    deps |= {PREFIX + k: [f"linux-image-{k}", "nvidia-kernel-common-580-server"] for k in kernels}
    deps |= {d: ["libnvidia-compute-580-server", "nvidia-kernel-common-580-server"] for d in DRIVER}
    listed = {META, *(PREFIX + k for k in kernels), *DRIVER}
    return Archive(listed, deps, missing, installed)


def params(kernel="6.8.0-31-generic", **extra):
    return {
        "driver": DRIVER,
        "modules_meta": META,
        "modules_prefix": PREFIX,
        "kernel": kernel,
        "meta_required": False,
        "attempts": 4,
    } | extra


def test_archive_serves_everything_meta_and_running_kernel_modules_installed():
    apt = noble_archive(missing=())
    result = mod.converge(params(kernel="6.8.0-149-generic"), apt, check_mode=False)
    assert not result.failed
    assert apt.runs == [[*DRIVER, META, PREFIX + "6.8.0-149-generic"]]
    assert {META, PREFIX + "6.8.0-151-generic", "linux-image-6.8.0-151-generic"} <= apt.installed


def test_release_kernel_without_modules_and_a_404_takes_the_newest_servable_kernel():
    apt = noble_archive()
    result = mod.converge(params(), apt, check_mode=False)
    assert not result.failed, result.failed
    assert apt.runs[-1] == [*DRIVER, PREFIX + "6.8.0-149-generic"]
    assert "linux-image-6.8.0-149-generic" in apt.installed
    assert META not in apt.installed
    assert result.unavailable == [PREFIX + "6.8.0-151-generic"]
    assert any("6.8.0-149-generic" in m for m in result.messages)


def test_running_kernel_whose_modules_404_keeps_a_kernel_that_has_them():
    installed = ("linux-image-6.8.0-149-generic", PREFIX + "6.8.0-149-generic", "linux-image-6.8.0-151-generic")
    apt = noble_archive(installed=installed)
    result = mod.converge(params(kernel="6.8.0-151-generic"), apt, check_mode=False)
    assert not result.failed
    assert apt.runs[-1] == DRIVER
    assert any("already has its NVIDIA module package" in m for m in result.messages)


def test_second_run_changes_nothing():
    apt = noble_archive()
    mod.converge(params(), apt, check_mode=False)
    runs = len(apt.runs)
    again = mod.converge(params(kernel="6.8.0-149-generic"), apt, check_mode=False)
    # the meta still cannot be fetched: it is retried, and nothing new is installed
    assert not again.failed
    assert not again.changed
    assert again.installed == []
    assert len(apt.runs) == runs + 2


def test_check_mode_installs_nothing():
    apt = noble_archive(missing=())
    result = mod.converge(params(), apt, check_mode=True)
    assert result.changed
    assert apt.runs == []


def test_desktop_driver_needs_the_meta_and_says_what_to_do():
    apt = noble_archive()
    result = mod.converge(params(meta_required=True), apt, check_mode=False)
    assert "nvidia_driver_flavour" in result.failed
    assert "DKMS" in result.failed


def test_other_apt_failures_are_reported_not_retried():
    apt = noble_archive()

    def broken(argv):
        if argv[:2] == ["apt-get", "install"]:
            return 100, "E: Unable to correct problems, you have held broken packages."
        return apt(argv)

    result = mod.converge(params(), broken, check_mode=False)
    assert "held broken packages" in result.failed


@pytest.mark.parametrize("kernel", ["6.8.0-31-generic", "6.8.0-151-generic"])
def test_nothing_servable_fails_with_the_packages_named(kernel):
    apt = noble_archive(missing={PREFIX + k for k in ("6.8.0-146-generic", "6.8.0-149-generic", "6.8.0-151-generic")})
    result = mod.converge(params(kernel=kernel), apt, check_mode=False)
    assert "nothing was installed" in result.failed
    assert PREFIX + "6.8.0-149-generic" in result.failed
    assert "DKMS" in result.failed
    assert not set(DRIVER) & apt.installed


RECORDED_CONFLICT = (
    ROOT / "tests" / "fixtures" / "apt" / "resolute-release-kernel-modules-for-an-older-driver.txt"
).read_text()


def test_recorded_apt_3_conflict_names_the_running_kernels_package():
    running = "linux-modules-nvidia-595-server-open-7.0.0-14-generic"
    assert mod.blocks_the_driver(RECORDED_CONFLICT, running)
    assert not mod.blocks_the_driver(RECORDED_CONFLICT, "linux-modules-nvidia-595-server-open-7.0.0-99-generic")
    assert not mod.blocks_the_driver("E: Unable to correct problems, you have held broken packages.", running)


def test_a_release_kernel_whose_modules_need_an_older_driver_gets_the_newest_kernels_modules():
    # Ubuntu 26.04: 7.0.0-14's module package pins the release pocket's driver; -updates has a newer one
    apt = noble_archive(missing=(), installed=("linux-image-6.8.0-31-generic",))
    stale = PREFIX + "6.8.0-31-generic"
    apt.listed.add(stale)

    def conflicting(argv):
        if argv[:2] == ["apt-get", "install"] and stale in argv:
            apt.runs.append([a for a in argv[2:] if not a.startswith("-") and "=" not in a])
            return 100, RECORDED_CONFLICT.replace("linux-modules-nvidia-595-server-open-7.0.0-14-generic", stale)
        return apt(argv)

    result = mod.converge(params(), conflicting, check_mode=False)
    assert not result.failed, result.failed
    assert apt.runs == [[*DRIVER, META, stale], [*DRIVER, META]]
    assert {META, PREFIX + "6.8.0-151-generic", "linux-image-6.8.0-151-generic"} <= apt.installed
    assert any("built for another version of the driver" in m for m in result.messages)


# --- the archive moved to a new point release of the driver (recorded 2026-12-07) ------------------

RECORDED_POINT_RELEASE = (
    ROOT / "tests" / "fixtures" / "apt" / "noble-updates-modules-for-an-older-point-release.txt"
).read_text()


def _recorded(command: str) -> str:
    """The lines the fixture recorded after ``$ <command>``, up to the next command."""
    section = RECORDED_POINT_RELEASE.split(f"$ {command}\n", 1)[1]
    return section.split("\n$ ", 1)[0]


def test_the_driver_a_module_was_built_for_is_read_from_its_dependencies():
    show = _recorded(
        "apt-cache show linux-modules-nvidia-595-server-open-6.8.0-149-generic | grep -E '^(Package|Version|Depends)'"
    )
    assert mod.module_driver_version(show) == "595.91.07"
    newest = _recorded(
        "apt-cache show linux-modules-nvidia-595-server-open-6.8.0-155-generic | grep -E '^(Package|Version|Depends)'"
    )
    assert mod.module_driver_version(newest) == "595.112.07"
    madison = _recorded("apt-cache madison nvidia-utils-595-server")
    assert mod.madison_versions(madison) == ["595.112.07-0ubuntu0.24.04.1"]
    assert mod.upstream_version("1:595.112.07-0ubuntu0.24.04.1") == "595.112.07"


def test_the_recorded_conflict_is_one_the_module_recognises():
    conflict = _recorded(
        "apt-get install nvidia-headless-no-dkms-595-server-open nvidia-utils-595-server "
        "linux-modules-nvidia-595-server-open-6.8.0-149-generic"
    )
    assert mod.blocks_the_driver(conflict, "linux-modules-nvidia-595-server-open-6.8.0-149-generic")


def point_release_archive(driver_versions, installed=("linux-image-6.8.0-31-generic",)):
    """6.8.0-149's modules built for 580.82.07; 6.8.0-151's (and the meta) for 580.95.05 but not served."""
    apt = noble_archive(missing=(PREFIX + "6.8.0-151-generic",), installed=installed)
    apt.driver_versions = list(driver_versions)
    apt.built_for = {PREFIX + "6.8.0-149-generic": "580.82.07", PREFIX + "6.8.0-146-generic": "580.65.06"}
    return apt


def test_modules_built_for_an_older_point_release_get_the_driver_at_that_release():
    apt = point_release_archive(["580.95.05", "580.82.07"])  # the older one still offered (another pocket)
    result = mod.converge(params(), apt, check_mode=False)
    assert not result.failed, result.failed
    assert apt.runs[-1] == [*DRIVER, PREFIX + "6.8.0-149-generic"]
    assert apt.driver_installed == "580.82.07"
    assert any("older point release of the driver" in m for m in result.messages)


def test_a_point_release_the_archive_no_longer_offers_is_refused_with_nothing_installed():
    # the state of 2026-12-07: only the newest driver in the index, its kernels' modules not served
    apt = point_release_archive(["580.95.05"])
    result = mod.converge(params(), apt, check_mode=False)
    assert result.failed.startswith(mod.NO_PRECOMPILED), result.failed
    assert f"{PREFIX}6.8.0-149-generic is built for a driver version the archive no longer offers" in result.failed
    assert "nvidia_driver_prefer_precompiled: false" in result.failed
    assert not set(DRIVER) & apt.installed


def test_a_held_driver_stays_when_the_meta_needs_a_newer_point_release():
    # converged on 580.82.07 with 6.8.0-149's modules; the archive now serves 6.8.0-151's, for 580.95.05
    apt = point_release_archive(["580.95.05", "580.82.07"])
    mod.converge(params(), apt, check_mode=False)
    apt.missing.clear()
    apt.held = True
    before = set(apt.installed)
    again = mod.converge(params(kernel="6.8.0-149-generic"), apt, check_mode=False)
    assert not again.failed, again.failed
    assert not again.changed
    assert apt.installed == before and apt.driver_installed == "580.82.07"
    assert any("needs a newer driver than the one installed and held" in m for m in again.messages)


def test_driver_packages_the_archive_does_not_serve_are_refused_at_once():
    # 2026-12-07 on 24.04: the index lists 580.196.07, the mirror answers 404 for the driver itself
    apt = noble_archive(missing=(*DRIVER, PREFIX + "6.8.0-151-generic"))
    result = mod.converge(params(), apt, check_mode=False)
    assert result.failed.startswith(mod.NOT_SERVED + " " + ", ".join(sorted(DRIVER))), result.failed
    assert "nothing was installed" in result.failed
    assert len(apt.runs) == 1


def test_the_role_refuses_with_the_modules_words():
    import yaml

    role_vars = yaml.safe_load((ROOT / "roles" / "nvidia_driver" / "vars" / "main.yml").read_text())
    assert role_vars["__nvidia_driver_not_served"] == mod.NOT_SERVED
