#!/usr/bin/env bash
# Build the systemd Debian 12 image Molecule boots (idempotent: nothing to do if it exists).
#
# Two paths, same result:
#   1. a registry is reachable: pull debian:bookworm and add systemd + python3 (Containerfile);
#   2. no registry (CI): debootstrap from the Debian mirror the host's apt already uses, then
#      `podman import`.
# The nginx + Lua and node-exporter packages are preinstalled to save minutes per scenario;
# the roles still manage them (state: present).
#
# Usage: molecule/image/build.sh [IMAGE]   (default localhost/cdnctl-molecule-bookworm:latest)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
image="${1:-${CDNCTL_MOLECULE_IMAGE:-localhost/cdnctl-molecule-bookworm:latest}}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/../containers.conf}"
base_packages="python3,systemd,systemd-sysv,dbus,iproute2,ca-certificates,curl"
# Keep in sync with roles/openresty/defaults (debian flavour) and roles/node_exporter.
preinstalled="nginx,libnginx-mod-http-lua,lua-resty-core,lua-resty-lrucache,lua-cjson"
preinstalled="$preinstalled,libnginx-mod-http-brotli-filter,prometheus-node-exporter"

if podman image exists "$image"; then
  echo "image $image exists"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "build.sh: run as root (debootstrap and rootful podman need it)" >&2
  exit 1
fi

# The Debian mirror of the host (deb822 `URIs:` or one-line `deb URL bookworm ...`).
debian_mirror() {
  local files uri
  files=$(ls /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null || true)
  for f in $files; do
    uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")
    [ -z "$uri" ] && uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")
    if [ -n "$uri" ]; then
      echo "$uri"
      return
    fi
  done
  echo "http://deb.debian.org/debian"
}

start=$(date +%s)
if timeout 90 podman pull -q docker.io/library/debian:bookworm >/dev/null 2>&1; then
  echo "building $image from docker.io/library/debian:bookworm"
  podman build --build-arg "PACKAGES=${base_packages//,/ } ${preinstalled//,/ }" \
    -t "$image" -f "$here/Containerfile" "$here"
else
  mirror="$(debian_mirror)"
  echo "no registry reachable: debootstrap from $mirror"
  rootfs="$(mktemp -d /var/tmp/cdnctl-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include="$base_packages,$preinstalled" bookworm "$rootfs" "$mirror"
  # systemd in a container: no getty on a console nobody reads, a stable machine-id per boot.
  rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* "$rootfs"/etc/machine-id
  : >"$rootfs/etc/machine-id"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >/dev/null
fi
echo "built $image in $(($(date +%s) - start)) s"
