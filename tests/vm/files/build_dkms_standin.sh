#!/bin/bash
# Runs INSIDE the test VM. Builds a STAND-IN for Ubuntu's nvidia-dkms-<branch...> package, so that the
# DKMS + Machine Owner Key path runs in CI without compiling NVIDIA's driver under emulation (that
# build takes tens of minutes; `DLSTACK_VM_DKMS=real pytest -m vm` runs it with the real package).
#
# What is real: the package is the archive's own .deb (apt-get download), with its control file and
# its maintainer scripts unchanged: postinst runs update-initramfs and DKMS's common.postinst, prerm
# runs `dkms remove`. DKMS, the kernel headers, the compiler and the signing with the Machine Owner
# Key are the host's. What is not: the module source. /usr/src/nvidia-<version>/dkms.conf builds a
# tiny module named nvidia, with the driver's version, whose init fails with ENODEV and logs
# "NVRM: No NVIDIA GPU found." as the real one does on a machine without a GPU. Only the real
# package can prove that NVIDIA's source compiles against the kernel.
#
# Usage: build_dkms_standin.sh PACKAGE   (e.g. nvidia-dkms-595-server-open)
# Result: a signed flat repository under /srv/dlstack-standin, added as an apt source.
set -euo pipefail
package=$1
base=/srv/dlstack-standin
work=$(mktemp -d)
rm -rf "$base" && mkdir -p "$base/repo"
cd "$work"
apt-get download "$package" >/dev/null
deb=$(ls "${package}"_*.deb)
dpkg-deb -R "$deb" pkg
version=$(sed -n 's/^Version: //p' pkg/DEBIAN/control)
upstream=${version%%-*}
src=pkg/usr/src/nvidia-$upstream
[ -f "$src/dkms.conf" ] || { echo "no $src/dkms.conf in $deb" >&2; exit 1; }
rm -rf "$src/patches"
mkdir -p "$src/dlstack-standin"
cat > "$src/dkms.conf" <<CONF
# STAND-IN (dlstack tests): builds dlstack-standin/nvidia.ko instead of NVIDIA's modules
PACKAGE_NAME="nvidia"
PACKAGE_VERSION="$upstream"
BUILT_MODULE_NAME[0]="nvidia"
BUILT_MODULE_LOCATION[0]="dlstack-standin/"
DEST_MODULE_LOCATION[0]="/kernel/drivers/char/drm"
MAKE[0]="make -C \${kernel_source_dir} M=\${dkms_tree}/\${PACKAGE_NAME}/\${PACKAGE_VERSION}/build/dlstack-standin modules"
CLEAN="true"
AUTOINSTALL="yes"
CONF
cat > "$src/dlstack-standin/Makefile" <<'MAKE'
obj-m := nvidia.o
MAKE
cat > "$src/dlstack-standin/nvidia.c" <<C
// STAND-IN (dlstack tests) for NVIDIA's nvidia module: what the real one does without a GPU.
#include <linux/init.h>
#include <linux/module.h>
static int __init nvidia_standin_init(void)
{
	pr_info("NVRM: No NVIDIA GPU found.\n");
	return -ENODEV;
}
static void __exit nvidia_standin_exit(void) {}
module_init(nvidia_standin_init);
module_exit(nvidia_standin_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION("$upstream");
MODULE_DESCRIPTION("dlstack test stand-in for the nvidia module (no GPU code)");
C
sed -i "s/^Version: .*/Version: ${version}+dlstack.standin1/" pkg/DEBIAN/control
sed -i "s/^Description: /Description: STAND-IN (dlstack tests) of /" pkg/DEBIAN/control
(cd pkg && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | xargs -0 md5sum > DEBIAN/md5sums)
dpkg-deb --root-owner-group -Zxz --build pkg "$base/repo/${package}_${version}+dlstack.standin1_amd64.deb" >/dev/null

export GNUPGHOME="$work/gnupg" && mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'dlstack STAND-IN repository <tests@dlstack.invalid>' rsa2048 sign never
gpg --batch --export > "$base/standin-archive-keyring.gpg"
cd "$base/repo"
apt-ftparchive packages . > Packages
apt-ftparchive -o APT::FTPArchive::Release::Origin=dlstack-standin release . > Release
gpg --batch --yes --clearsign -o InRelease Release
printf 'Types: deb\nURIs: file://%s/repo/\nSuites: ./\nSigned-By: %s/standin-archive-keyring.gpg\n' "$base" "$base" \
  > /etc/apt/sources.list.d/dlstack-standin.sources
apt-get update -qq >/dev/null
rm -rf "$work"
echo "stand-in ${package} ${version}+dlstack.standin1 at file://$base/repo/"
