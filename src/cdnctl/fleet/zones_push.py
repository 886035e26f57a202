"""Putting a new zone set in service on every DNS host, the way the geodns role does, for
the sync loop (about a second: one Ansible `raw` call for all hosts).

The role installs each zone set (`dns.render_zones`) in `<geodns_config_dir>/zones.d/<
zones_digest>/`, checks it with the running config (`gdnsd checkconf` on a directory put
together aside) and then points the `zones` symlink at it and runs `gdnsdctl reload-zones`.
This writes the same files with the same modes (0644 in 0755 directories), so a later role
run finds nothing to change, and keeps the newest `geodns_keep_zone_sets` old sets as the
role does. A set gdnsd refuses is not put in service: the host keeps serving its zones.

The zones travel inside the command (JSON, zlib, base64), like `drain.host_command`:
about 25 bytes a tenant once compressed, so up to some thousands of tenants fit the 128 KiB
one command may have; more needs the role (`ansible/site.yml --tags geodns_configure`).
"""

from __future__ import annotations

import base64
import json
import shlex
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdnctl.fleet import dns, dns_hosts

# Ansible fills these in per host (the geodns role's variables; double quotes: the command
# runs in a single-quoted sh -c).
KEEP = "{{ geodns_keep_zone_sets | default(2) }}"
MAX_COMMAND = 120_000
# Writes the zones of argv[1] (base64 zlib JSON {name: text}) into the directory argv[2].
_WRITE = (
    "import base64,json,os,sys,zlib\n"
    "d=sys.argv[2];os.makedirs(d,0o755)\n"
    "z=json.loads(zlib.decompress(base64.b64decode(sys.argv[1])))\n"
    "for n,t in z.items():\n"
    " p=os.path.join(d,n);open(p,'w').write(t);os.chmod(p,0o644)\n"
    "os.chmod(d,0o755)\n"
)
# $1 config dir, $2 zone set name, $3 zones payload, $4 old sets kept.
_SCRIPT = """set -e
cfg=$1; sets=$cfg/zones.d; new=$sets/$2
if [ "$(readlink "$cfg/zones" || true)" = "zones.d/$2" ]; then echo unchanged; exit 0; fi
mkdir -p "$sets"; chmod 0755 "$sets"
if [ ! -d "$new" ]; then
  rm -rf "$new.tmp"; python3 -c "$WRITE" "$3" "$new.tmp"; mv "$new.tmp" "$new"
fi
w=$(mktemp -d); cp "$cfg/config" "$w/config"; ln -s "$new" "$w/zones"
if ! gdnsd -c "$w" checkconf >"$w/log" 2>&1; then cat "$w/log" >&2; rm -rf "$w"; exit 3; fi
rm -rf "$w"
if [ -d "$cfg/zones" ] && [ ! -L "$cfg/zones" ]; then rm -rf "$cfg/zones"; fi
ln -sfn "zones.d/$2" "$cfg/zones.new"; mv -T "$cfg/zones.new" "$cfg/zones"
gdnsdctl -c "$cfg" reload-zones >/dev/null
cd "$sets"; ls -1t | grep -vx "$2" | tail -n +$(($4 + 1)) | xargs -r rm -rf
echo installed"""


class ZonesError(RuntimeError):
    """A zone set could not be put in service on every DNS host."""


@dataclass(frozen=True)
class ZoneSet:
    digest: str
    zones: Mapping[str, str]


def names_of_bundle(bundle: bytes) -> list[dns.TenantNames]:
    """Tenant ids and domains of a compiled bundle (what the edges were last given)."""
    tenants = json.loads(bundle).get("tenants") or {}
    return [dns.TenantNames(tid, tuple(tenants[tid]["domains"])) for tid in sorted(tenants)]


def kept_names(
    before: Sequence[dns.TenantNames], after: Sequence[dns.TenantNames]
) -> list[dns.TenantNames]:
    """The names both in `before` and `after`: what DNS may serve while edges go from one to
    the other (a removed tenant or domain already gone, an added one not yet there)."""
    old = {tenant.id: set(tenant.domains) for tenant in before}
    return [
        dns.TenantNames(tenant.id, tuple(d for d in tenant.domains if d in old[tenant.id]))
        for tenant in after
        if tenant.id in old
    ]


class DnsZones:
    """The DNS settings and hosts of an inventory that has a `dns` group."""

    def __init__(self, inventory: Path, listing: Mapping[str, Any]) -> None:
        self.settings = dns.load_settings(inventory, dns.platform_vars(listing))
        self.fleet = dns.fleet_from_inventory(listing)
        self.hosts = dns_hosts.DnsHosts(inventory)

    def render(self, names: Sequence[dns.TenantNames]) -> ZoneSet:
        zones = dns.render_zones(self.settings, self.fleet, names)
        return ZoneSet(dns.zones_digest(zones), zones)

    def install(
        self, zone_set: ZoneSet, only: Sequence[str] | None = None
    ) -> list[dns_hosts.HostResult]:
        """Put `zone_set` in service on every DNS host (or `only` those); raises ZonesError
        naming the hosts that refused it (they keep serving what they had). Hosts Ansible
        cannot reach are not an error: they come back `unreachable`, to be caught up."""
        payload = base64.b64encode(
            zlib.compress(json.dumps(dict(zone_set.zones), sort_keys=True).encode(), 9)
        ).decode()
        command = (
            f"WRITE={shlex.quote(_WRITE)} /bin/sh -c {shlex.quote(_SCRIPT)} install "
            f"{dns_hosts.CONFIG_DIR} {zone_set.digest} {payload} {KEEP}"
        )
        if len(command) > MAX_COMMAND:
            raise ZonesError(
                f"the zone set is {len(payload)} bytes compressed: too large for one command; "
                "put it in service with the geodns role (ansible/site.yml --tags "
                "geodns_configure)"
            )
        try:
            hosts = self.hosts if only is None else self.hosts.only(only)
            results = hosts.run(command)
        except dns.DnsError as exc:  # Ansible itself failed (inventory, connection plugin)
            raise ZonesError(f"zone set {zone_set.digest}: {exc}") from None
        failed = [
            f"{r.host}: {r.error or r.stdout}".strip()
            for r in results
            if not r.ok and not r.unreachable
        ]
        if failed or not results:
            raise ZonesError(
                "zone set "
                + zone_set.digest
                + " not in service on "
                + ("; ".join(failed) if failed else "any DNS host (none in the inventory)")
            )
        return results
