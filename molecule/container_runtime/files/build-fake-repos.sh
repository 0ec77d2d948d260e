#!/bin/bash
# Build signed local apt repositories that stand in for Docker's and NVIDIA's (unreachable from
# the test machine): small fake packages made with dpkg-deb, indexed with apt-ftparchive, signed
# with a throwaway gpg key, served as file:///srv/fake-apt/...
# Usage: build-fake-repos.sh <toolkit version> <codename>
set -euo pipefail
toolkit_version=$1
codename=$2
root=/srv/fake-apt
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
export GNUPGHOME=$work/gnupg
mkdir -m 0700 "$GNUPGHOME"

gpg --batch --quiet --passphrase '' --quick-gen-key 'dlstack fake repository <fake-repo@dlstack.invalid>' ed25519 sign never
mkdir -p "$root/nvidia/$arch" "$root/docker/pool" "$root/docker/dists/$codename/stable/binary-$arch"
gpg --batch --armor --export > "$root/key.asc"
gpg --batch --with-colons --list-keys | awk -F: '$1 == "fpr" { print $10; exit }' > "$root/key.fpr"
sha256sum "$root/key.asc" | cut -d' ' -f1 > "$root/key.sha256"

# package <name> <version> <dir> [depends] [payload dir]
package() {
  local name=$1 version=$2 dir=$3 depends=${4:-} payload=${5:-}
  local pkg=$work/$name-$version
  mkdir -p "$pkg/DEBIAN"
  [ -n "$payload" ] && cp -a "$payload/." "$pkg/"
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: dlstack tests <fake-repo@dlstack.invalid>"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Description: fake $name for the dlstack container_runtime scenario"
  } > "$pkg/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$pkg" "$dir/${name}_${version}_${arch}.deb" > /dev/null
}

# The toolkit at the pinned version (with a working nvidia-ctk double and the CDI refresh units) and
# a newer release that the pin must not pick.
base=$work/base-payload
install -D -m 0755 /tmp/fake-nvidia-ctk "$base/usr/bin/nvidia-ctk"
install -d "$base/usr/lib/systemd/system"
printf '%s\n' '#!/bin/sh' 'exec runc "$@"' > "$base/usr/bin/nvidia-container-runtime"
chmod 0755 "$base/usr/bin/nvidia-container-runtime"
printf '%s\n' '[Unit]' 'Description=Trigger CDI refresh (fake)' '[Path]' 'PathChanged=/lib/modules/%v/modules.dep' \
  '[Install]' 'WantedBy=multi-user.target' > "$base/usr/lib/systemd/system/nvidia-cdi-refresh.path"
printf '%s\n' '[Unit]' 'Description=Refresh NVIDIA CDI specification file (fake)' '[Service]' 'Type=oneshot' \
  'Environment=NVIDIA_CTK_CDI_OUTPUT_FILE_PATH=/var/run/cdi/nvidia.yaml' \
  'EnvironmentFile=-/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env' \
  'ExecStart=/usr/bin/nvidia-ctk cdi generate' > "$base/usr/lib/systemd/system/nvidia-cdi-refresh.service"
for version in "$toolkit_version" 99.0.0-1; do
  package libnvidia-container1 "$version" "$root/nvidia/$arch"
  package libnvidia-container-tools "$version" "$root/nvidia/$arch" "libnvidia-container1 (= $version)"
  package nvidia-container-toolkit-base "$version" "$root/nvidia/$arch" "" "$base"
  package nvidia-container-toolkit "$version" "$root/nvidia/$arch" \
    "nvidia-container-toolkit-base (= $version), libnvidia-container-tools (= $version)"
done
# A flat repository, like NVIDIA's: <uri>/<arch>/{Packages,InRelease}.
(cd "$root/nvidia/$arch" && apt-ftparchive packages . > Packages && apt-ftparchive release . > Release)
gpg --batch --yes --clearsign --output "$root/nvidia/$arch/InRelease" "$root/nvidia/$arch/Release"

# Docker's layout: dists/<codename>/stable/binary-<arch>/Packages, one fake docker-ce.
package docker-ce 5:99.0.0-1~ubuntu "$root/docker/pool"
(cd "$root/docker" && apt-ftparchive packages pool > "dists/$codename/stable/binary-$arch/Packages")
(cd "$root/docker/dists/$codename" && apt-ftparchive -o APT::FTPArchive::Release::Suite="$codename" \
  -o APT::FTPArchive::Release::Codename="$codename" -o APT::FTPArchive::Release::Components=stable \
  -o APT::FTPArchive::Release::Architectures="$arch" release . > Release)
gpg --batch --yes --clearsign --output "$root/docker/dists/$codename/InRelease" "$root/docker/dists/$codename/Release"

# A stand-in for the kubelet of a Kubernetes node (pkgs.k8s.io can't be reached from the test
# machine). Like the real package it is named kubelet, ships /usr/bin/kubelet and kubelet.service,
# and does not depend on containerd (the real one's other dependencies, kubernetes-cni among them,
# are left out: they are not in Ubuntu's archive); like the real kubelet's CRI calls, it puts its
# containers in containerd's k8s.io namespace. It proves that the role notices such a node the way
# dpkg, systemd and containerd show it, not that Kubernetes keeps working.
kubelet=$work/kubelet-payload
install -d "$kubelet/usr/bin" "$kubelet/usr/lib/systemd/system"
printf '%s\n' '#!/bin/sh' '# dlstack test stand-in for the kubelet: registers with containerd, then idles.' \
  'until ctr namespaces list -q 2>/dev/null | grep -qx k8s.io || ctr namespaces create k8s.io; do sleep 1; done' \
  'exec sleep infinity' > "$kubelet/usr/bin/kubelet"
chmod 0755 "$kubelet/usr/bin/kubelet"
printf '%s\n' '[Unit]' 'Description=kubelet: The Kubernetes Node Agent (dlstack test stand-in)' \
  'Wants=containerd.service' 'After=containerd.service' '[Service]' 'ExecStart=/usr/bin/kubelet' 'Restart=always' \
  '[Install]' 'WantedBy=multi-user.target' > "$kubelet/usr/lib/systemd/system/kubelet.service"
package kubelet 1.34.1-1.1 "$root" "" "$kubelet"
mv "$root/kubelet_1.34.1-1.1_$arch.deb" "$root/kubelet.deb"

# A tiny image for `docker import` (no registry here): a static busybox.
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sh"
tar -C "$work/rootfs" -cf "$root/tiny-rootfs.tar" .
rm -rf "$work"
