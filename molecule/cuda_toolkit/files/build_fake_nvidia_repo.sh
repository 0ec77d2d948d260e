#!/bin/bash
# Builds a LOCAL stand-in for NVIDIA's CUDA apt repository (which this test cannot reach) inside
# the test container: tiny fake packages made with dpkg-deb, indexed with apt-ftparchive, the
# Release file signed with a throwaway gpg key. Laid out like the real repository
# (<base>/<distro>/<arch>/ flat, key file 3bf863cc.pub next to the index) so the roles use it as a
# "mirror" through their base-URL setting. Served as file:// (no network, no port).
# The packages contain only marker files: nothing here is NVIDIA software.
set -euo pipefail
base=/srv/nvidia-mirror
distro="ubuntu$(. /etc/os-release && echo "${VERSION_ID//./}")"
repo="$base/$distro/x86_64"
work=$(mktemp -d)
rm -rf "$base" && mkdir -p "$repo"

# name version [depends] [postinst] [file=content ...]
pkg() {
  local name=$1 version=$2 depends=$3 postinst=$4; shift 4
  local dir="$work/${name}_${version}"
  mkdir -p "$dir/DEBIAN"
  {
    echo "Package: $name"; echo "Version: $version"; echo "Architecture: all"
    echo "Maintainer: dlstack tests <tests@dlstack.invalid>"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Description: FAKE $name for dlstack tests (not NVIDIA software)"
  } > "$dir/DEBIAN/control"
  if [ -n "$postinst" ]; then printf '#!/bin/sh\nset -e\n%s\n' "$postinst" > "$dir/DEBIAN/postinst"; chmod 755 "$dir/DEBIAN/postinst"; fi
  local spec
  for spec in "$@"; do
    mkdir -p "$dir/$(dirname "${spec%%=*}")"
    printf '%s\n' "${spec#*=}" > "$dir/${spec%%=*}"
    case "${spec%%=*}" in */bin/*) chmod 755 "$dir/${spec%%=*}";; esac
  done
  dpkg-deb --root-owner-group -Zxz --build "$dir" "$repo/${name}_${version}_all.deb" >/dev/null
}

# NVIDIA's cuda-toolkit-X-Y is a metapackage: nvcc, the libraries and the files under
# /usr/local/cuda-X.Y come from its dependencies (apt marks them automatic), some shared by all
# releases (cuda-toolkit-config-common), so removing the metapackage alone would leave the toolkit.
# Here the "cuda" alternative is registered by a dependency's postinst and never unregistered by a
# package: which of NVIDIA's packages registers it and whether its prerm unregisters it is not
# checked against the real repository, so the role removes the entry itself and the removal test
# proves that the role does, not what NVIDIA's packages do.
toolkit() {  # major minor full-version
  local x=$1 y=$2 v=$3 prefix="/usr/local/cuda-$1.$2"
  pkg "cuda-nvcc-$x-$y" "$v-1" "" "" \
    "$prefix/bin/nvcc=#!/bin/sh
echo 'FAKE nvcc: Cuda compilation tools, release $x.$y, V$v'"
  pkg "cuda-toolkit-$x-$y-config-common" "$v-1" "" \
    "if [ \"\$1\" = configure ]; then update-alternatives --install /usr/local/cuda cuda $prefix $((x * 100 + y)); fi" \
    "$prefix/version.json={\"cuda\": {\"version\": \"$v\"}}"
  pkg "cuda-toolkit-$x-$y" "$v-1" \
    "cuda-nvcc-$x-$y (= $v-1), cuda-toolkit-$x-$y-config-common (= $v-1), cuda-toolkit-config-common" ""
}

pkg cuda-toolkit-config-common 13.0.88-1 "" "" "/usr/share/doc/cuda-toolkit-config-common/FAKE=13.0.88"
toolkit 12 8 12.8.93
toolkit 13 0 13.0.88
for v in 9.10.2.21-1 9.12.0.46-1; do
  pkg libcudnn9-cuda-12 "$v" "" "" "/usr/lib/x86_64-linux-gnu/FAKE-libcudnn9-cuda-12=$v"
  pkg libcudnn9-dev-cuda-12 "$v" "libcudnn9-cuda-12 (= $v)" "" "/usr/include/FAKE-cudnn-$v.h=$v"
done
pkg libnccl2 2.27.5-1+cuda12.9 "" "" "/usr/lib/x86_64-linux-gnu/FAKE-libnccl2=2.27.5"
pkg libnccl-dev 2.27.5-1+cuda12.9 "libnccl2 (= 2.27.5-1+cuda12.9)" "" "/usr/include/FAKE-nccl.h=2.27.5"
# Driver packages as NVIDIA names them from 590 on (no branch in the name), in two branches, and
# the branch-pinning package that makes apt keep the 595 ones although 610 is newer.
for v in 595.45.04-1 610.43.02-1; do
  pkg libnvidia-compute "$v" "" "" "/usr/lib/x86_64-linux-gnu/FAKE-libnvidia-compute=$v"
  pkg nvidia-utils "$v" "libnvidia-compute (= $v)" "" "/usr/share/doc/nvidia-utils/FAKE=$v"
done
# Fabric Manager as NVIDIA names it from 580 on: no branch in the name, and its own Debian revision
# (the driver here is -1, Fabric Manager -1ubuntu1): the role must match the upstream version only.
for v in 595.45.04-1ubuntu1 610.43.02-1ubuntu1; do
  pkg nvidia-fabricmanager "$v" "" "" "/usr/share/doc/nvidia-fabricmanager/FAKE=$v"
done
pkg nvidia-driver-pinning-595 595-1 "" "" "/etc/apt/preferences.d/nvidia-driver-pinning-595=Package: libnvidia-compute nvidia-utils
Pin: version 595.*
Pin-Priority: 1000"

# Not from NVIDIA's repository and not in its index: an unrelated package that prepare.yml installs
# and marks automatic, so apt finds it unneeded before the roles run. Removing CUDA must leave it
# (the role takes along only what the CUDA packages needed, it runs no blanket autoremove).
pkg dlstack-test-unneeded 1 "" "" "/usr/share/doc/dlstack-test-unneeded/FAKE=1"
mv "$repo/dlstack-test-unneeded_1_all.deb" "$base/"

export GNUPGHOME="$work/gnupg" && mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'dlstack FAKE NVIDIA repository <tests@dlstack.invalid>' rsa2048 sign never
gpg --batch --armor --export > "$repo/3bf863cc.pub"
gpg --batch --with-colons --list-keys | awk -F: '/^fpr:/ {print $10; exit}' > "$base/fingerprint"
cd "$repo"
apt-ftparchive packages . > Packages
apt-ftparchive -o APT::FTPArchive::Release::Origin=FAKE-NVIDIA release . > Release
gpg --batch --yes --clearsign -o InRelease Release
rm -rf "$work"
echo "fake repository at file://$base/$distro/x86_64/ key $(cat "$base/fingerprint")"
