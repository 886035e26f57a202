#!/usr/bin/env bash
# Build the systemd Debian 12 image Molecule and the lab boot (idempotent: rebuilt only when
# the package list below changes; the image carries it in the label cdnctl.packages).
#
# Two paths, same result:
#   1. a registry is reachable: pull debian:bookworm and add systemd + python3 (Containerfile);
#   2. no registry (CI): debootstrap from the Debian mirror the host's apt already uses, then
#      `podman import`.
# The packages the roles install (nginx + Lua, gdnsd, Prometheus, node exporter) are
# preinstalled to save minutes per scenario and per lab host; the roles still manage them
# (state: present), so a converge installs nothing from the network when the image is current.
#
# Usage: molecule/image/build.sh [IMAGE]   (default localhost/cdnctl-systemd:bookworm, the image
# of pulumi/Pulumi.local.yaml)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
image="${1:-${CDNCTL_MOLECULE_IMAGE:-localhost/cdnctl-systemd:bookworm}}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/../containers.conf}"
base_packages="python3,python3-apt,systemd,systemd-sysv,dbus,iproute2,ca-certificates,curl"
# Keep in sync with roles/openresty/defaults (debian flavour) and roles/node_exporter.
preinstalled="nginx,libnginx-mod-http-lua,lua-resty-core,lua-resty-lrucache,lua-cjson"
preinstalled="$preinstalled,libnginx-mod-http-brotli-filter,prometheus-node-exporter"
# Keep in sync with roles/geodns, roles/prometheus, roles/lab_pebble and roles/lab_origin.
preinstalled="$preinstalled,gdnsd,prometheus,pebble,python3-typer"
packages="$base_packages,$preinstalled"
# Packaged services stay off until a role runs its own unit on the hosts that need it (no
# stray nginx on :80 of a DNS or Prometheus host).
disabled_units="gdnsd.service prometheus.service nginx.service"
# What the image is built from: its label, compared to decide on a rebuild.
recipe="$packages;disabled=$disabled_units"

if podman image exists "$image"; then
  built_with=$(podman image inspect --format '{{ index .Config.Labels "cdnctl.packages" }}' "$image" 2>/dev/null || true)
  if [ "$built_with" = "$recipe" ]; then
    echo "image $image is current"
    exit 0
  fi
  echo "image $image was built with other packages: rebuilding"
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
  podman build --build-arg "PACKAGES=${packages//,/ }" --build-arg "DISABLED=$disabled_units" \
    --label "cdnctl.packages=$recipe" \
    -t "$image" -f "$here/Containerfile" "$here"
else
  mirror="$(debian_mirror)"
  echo "no registry reachable: debootstrap from $mirror"
  rootfs="$(mktemp -d /var/tmp/cdnctl-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror"
  # systemd in a container: no getty on a console nobody reads, a stable machine-id per boot.
  rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* "$rootfs"/etc/machine-id
  # Packaged services stay off until a role enables them on the hosts that run them.
  systemctl --root="$rootfs" disable $disabled_units >/dev/null 2>&1 || true
  : >"$rootfs/etc/machine-id"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' \
    --change "LABEL cdnctl.packages=$recipe" - "$image" >/dev/null
fi
echo "built $image in $(($(date +%s) - start)) s"
