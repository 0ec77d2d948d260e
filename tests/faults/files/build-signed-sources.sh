#!/bin/bash
# Stand-ins for the signed apt sources dlstack adds (NVIDIA's CUDA repository, NVIDIA's container
# toolkit repository, Docker's repository), built inside a throwaway test host: packages with the
# names and versions the roles would install (empty: the tests prove they are never installed),
# indexed with apt-ftparchive and laid out like the real repositories. Two signing keys: "pinned"
# (its fingerprint is what the roles are told to expect) and "other" (an attacker's, or a key
# rotation the pins were not updated for). Every repository is built twice, once signed by each.
#
#   /srv/sources/{pinned,other}.{asc,fpr,sha256}   the keys, their fingerprints, the files' SHA-256
#   /srv/sources/<signer>/<repo>/...               the repository <repo>, InRelease signed by <signer>
#
# Usage: build-signed-sources.sh <repo> <layout> <name=version>...
#   layout: flat:<subdir> (NVIDIA: <uri>/<subdir>/{Packages,InRelease}) or dists (Docker:
#   <uri>/dists/<codename>/stable/binary-<arch>/Packages, InRelease in dists/<codename>/).
set -euo pipefail
repo=$1 layout=$2
shift 2
root=/srv/sources
arch=$(dpkg --print-architecture)
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for signer in pinned other; do
  home=$root/gnupg-$signer
  if [ ! -d "$home" ]; then
    mkdir -p -m 0700 "$home"
    GNUPGHOME=$home gpg --batch --quiet --passphrase '' --quick-gen-key "dlstack test key $signer <$signer@dlstack.invalid>" ed25519 sign never
    GNUPGHOME=$home gpg --batch --armor --export > "$root/$signer.asc"
    GNUPGHOME=$home gpg --batch --with-colons --list-keys | awk -F: '$1 == "fpr" { print $10; exit }' > "$root/$signer.fpr"
    sha256sum "$root/$signer.asc" | cut -d' ' -f1 > "$root/$signer.sha256"
  fi
done

pool=$work/pool
mkdir -p "$pool"
for spec in "$@"; do
  name=${spec%%=*} version=${spec#*=}
  pkg=$work/$name
  mkdir -p "$pkg/DEBIAN"
  printf '%s\n' "Package: $name" "Version: $version" "Architecture: $arch" \
    "Maintainer: dlstack tests <tests@dlstack.invalid>" \
    "Description: stand-in $name for the dlstack wrong-key tests (never to be installed)" > "$pkg/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$pkg" "$pool/${name}_${version#*:}_$arch.deb" > /dev/null
done

for signer in pinned other; do
  base=$root/$signer/$repo
  case $layout in
    flat:*)
      dir=$base/${layout#flat:}
      mkdir -p "$dir" && cp "$pool"/*.deb "$dir/"
      (cd "$dir" && apt-ftparchive packages . > Packages && apt-ftparchive release . > Release)
      release=$dir ;;
    dists)
      mkdir -p "$base/pool" "$base/dists/$codename/stable/binary-$arch" && cp "$pool"/*.deb "$base/pool/"
      (cd "$base" && apt-ftparchive packages pool > "dists/$codename/stable/binary-$arch/Packages")
      (cd "$base/dists/$codename" && apt-ftparchive -o APT::FTPArchive::Release::Suite="$codename" \
        -o APT::FTPArchive::Release::Codename="$codename" -o APT::FTPArchive::Release::Components=stable \
        -o APT::FTPArchive::Release::Architectures="$arch" release . > Release)
      release=$base/dists/$codename ;;
    *) echo "unknown layout $layout" >&2; exit 2 ;;
  esac
  GNUPGHOME=$root/gnupg-$signer gpg --batch --yes --clearsign --output "$release/InRelease" "$release/Release"
done
