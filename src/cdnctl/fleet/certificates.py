"""Tenant certificates for the whole fleet: ACME HTTP-01 issuance and renewal on the
controller, custom certificates from the repository, the platform's wildcard certificate by
DNS-01, and their deployment to every edge.

One implementation for the playbook path and the sync loop: `converge()` decides per tenant
(issue, renew, keep, or wait out a back-off), talks to the ACME server (the Python `acme`
library: Let's Encrypt in production, pebble in tests), publishes every HTTP-01 token on
EVERY edge (GeoDNS may send the validator to any region) and then makes every edge serve
exactly the wanted certificates (`POST /certificates`, fingerprints compared first, so a
second run sends nothing). The platform certificate (`*.<platform domain>`, with
`cdn_acme.platform_wildcard`) is validated by DNS-01: its TXT payload goes to every DNS host
(`gdnsdctl acme-dns-01`, which gdnsd serves for its `acme_challenge_ttl` and then forgets)
before the CA is asked to look; edges serve it under the reserved id `platform` for every
name under the platform domain. Keys live in the controller's state directory (0700, files
0600), never in git; edges keep theirs in their own 0600 state.

State directory layout: `account.pem` (ACME account key, unless `account_key_file`), and
per tenant `<id>.crt` (chain), `<id>.key`, `<id>.json` (failures, next attempt, last error).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import josepy as jose
import yaml
from acme import challenges, client, errors, messages
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdnctl.bundle.secrets import decrypt_vault
from cdnctl.edge.admin_client import AdminClient, Edge, fan_out
from cdnctl.edge.pki import csr_pem, dns_names, key_pem, leaf, new_key
from cdnctl.fleet import dns, dns_hosts
from cdnctl.fleet.targets import inventory_json
from cdnctl.paths import write_private
from cdnctl.tenants.model import PLATFORM_CERTIFICATE_ID

SETTINGS_FILE = Path("group_vars") / "all" / "certificates.yml"
SETTINGS_KEY = "cdn_acme"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"

Action = Literal["issue", "renew", "keep", "wait", "skip"]


class AcmeSettings(BaseModel):
    """Platform settings (`cdn_acme` in `inventories/<env>/group_vars/all/certificates.yml`)."""

    model_config = ConfigDict(extra="forbid")

    directory_url: str = LETS_ENCRYPT
    contact: list[str] = Field(default_factory=list, description="e.g. mailto:ops@example.com")
    state_dir: Path = Path("~/.local/state/cdnctl/certificates")
    account_key_file: Path | None = Field(None, description="PEM; default: state_dir/account.pem")
    ca_bundle: Path | None = Field(
        None, description="CA of the ACME server's TLS listener (tests: pebble's); None: system"
    )
    # Renew once less than this fraction of a certificate's lifetime is left.
    renew_remaining_fraction: float = Field(1 / 3, gt=0, lt=1)
    # After a failed order: wait initial * 2^(failures - 1) seconds, at most max.
    backoff_initial: int = Field(600, ge=1)
    backoff_max: int = Field(86400, ge=1)
    challenge_ttl: int = Field(600, ge=30, le=86400)
    order_timeout: float = Field(90, gt=0)
    platform_wildcard: bool = Field(
        False,
        description="Issue *.<cdn_domain> by DNS-01 through the inventory's DNS hosts and "
        "serve it on every edge for the platform's names (edge.<domain>, <tenant>.<domain>)",
    )

    @field_validator("account_key_file", "ca_bundle")
    @classmethod
    def _home(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value else value  # `~/...` as in state_dir

    @field_validator("contact")
    @classmethod
    def _mailto(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.startswith("mailto:"):
                raise ValueError(f"{item!r}: contacts are mailto: URLs")
        return value

    @property
    def store(self) -> Path:
        return self.state_dir.expanduser()


class CertificateError(RuntimeError):
    pass


def load_settings(inventory: Path) -> AcmeSettings:
    """The ACME settings of an inventory directory (defaults when it sets none)."""
    path = inventory / SETTINGS_FILE
    if not path.is_file():
        return AcmeSettings()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return AcmeSettings.model_validate(data.get(SETTINGS_KEY) or {})
    except yaml.YAMLError as exc:
        raise CertificateError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        details = "; ".join(
            f"{SETTINGS_KEY}.{'.'.join(map(str, e['loc']))}: {e['msg']} (value: {e['input']!r})"
            for e in exc.errors()
        )
        raise CertificateError(f"{path}: {details}") from None


# --- what each tenant needs ------------------------------------------------------------------


# The id the platform certificate is stored and served under (reserved: no tenant has it).
PLATFORM = PLATFORM_CERTIFICATE_ID


@dataclass(frozen=True)
class Wanted:
    tenant: str
    kind: Literal["acme", "custom"]
    names: tuple[str, ...]  # acme: the names the challenge below can validate
    skipped: tuple[str, ...] = ()  # a tenant's wildcard names: its DNS is not ours (no DNS-01)
    cert_file: Path | None = None
    key_vault: str | None = None
    challenge: Literal["http-01", "dns-01"] = "http-01"


def platform_wanted(domain: str) -> Wanted:
    """The platform's wildcard, validated by DNS-01 on the platform's own DNS hosts."""
    return Wanted(PLATFORM, "acme", (f"*.{domain}",), challenge="dns-01")


def platform_from_inventory(
    inventory: Path, listing: Mapping[str, Any] | None = None
) -> tuple[Wanted, Callable[[dict[str, str]], None]]:
    """The platform wildcard of an inventory (its GeoDNS domain) and the DNS-01 publisher
    that puts a payload on every host of its `dns` group, or fails naming the hosts.
    `listing`: its `ansible-inventory --list`, when the caller has it (about 1 s)."""
    listing = inventory_json(inventory) if listing is None else listing
    domain = dns.load_settings(inventory, dns.platform_vars(listing)).domain
    hosts = dns_hosts.DnsHosts(inventory)

    def publish(records: dict[str, str]) -> None:
        results = hosts.acme_dns_01(records)
        failed = [r for r in results if not r.ok]
        if failed or not results:
            details = "; ".join(f"{r.host}: {r.error}" for r in failed) or "no host in group dns"
            raise CertificateError(f"publishing the DNS-01 payload failed: {details}")

    return platform_wanted(domain), publish


def wanted_certificates(tenants: Mapping[str, Mapping[str, Any]], base_dir: Path) -> list[Wanted]:
    """One entry per tenant with `tls.certificate` acme or custom (effective tenants, as in a
    compiled bundle). Custom `cert_file` paths are relative to `base_dir` (the repository)."""
    out = []
    for tenant_id in sorted(tenants):
        t = tenants[tenant_id]
        tls = t.get("tls") or {}
        domains = sorted(t["domains"])
        if tls.get("certificate") == "acme":
            names = tuple(d for d in domains if not d.startswith("*."))
            wildcards = tuple(d for d in domains if d.startswith("*."))
            out.append(Wanted(tenant_id, "acme", names, wildcards))
        elif tls.get("certificate") == "custom":
            out.append(
                Wanted(
                    tenant_id,
                    "custom",
                    tuple(domains),
                    cert_file=base_dir / tls["cert_file"],
                    key_vault=tls["key_vault"],
                )
            )
    return out


# --- the controller's store -----------------------------------------------------------------


@dataclass
class Held:
    """A certificate the controller holds for a tenant."""

    chain: str
    key: str
    names: tuple[str, ...]
    not_before: float
    not_after: float

    @property
    def fingerprint(self) -> str:
        # The edge's fingerprint of the same pair (certs.lua): SHA-256 of cert "\n" key.
        return hashlib.sha256((self.chain + "\n" + self.key).encode()).hexdigest()


def held_from_pem(chain: str, key: str) -> Held:
    cert = leaf(chain.encode())
    return Held(
        chain,
        key,
        tuple(dns_names(cert)),
        cert.not_valid_before_utc.timestamp(),
        cert.not_valid_after_utc.timestamp(),
    )


@dataclass
class Failures:
    count: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None


class Store:
    """The state directory: 0700, every file in it 0600."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)

    def held(self, tenant: str) -> Held | None:
        try:
            chain = (self.directory / f"{tenant}.crt").read_text(encoding="utf-8")
            key = (self.directory / f"{tenant}.key").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return held_from_pem(chain, key)

    def save_acme(self, tenant: str, chain: str, key: str) -> None:
        # The key first: a chain never sits next to a key it does not belong to.
        write_private(self.directory / f"{tenant}.key", key)
        write_private(self.directory / f"{tenant}.crt", chain)

    def failures(self, tenant: str) -> Failures:
        try:
            data = json.loads((self.directory / f"{tenant}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Failures()
        return Failures(**data)

    def save_failures(self, tenant: str, failures: Failures) -> None:
        path = self.directory / f"{tenant}.json"
        if failures.count == 0:
            path.unlink(missing_ok=True)
            return
        write_private(path, json.dumps(failures.__dict__, sort_keys=True))


# --- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(
    wanted: Wanted,
    held: Held | None,
    failures: Failures,
    now: float,
    renew_remaining_fraction: float,
) -> Decision:
    """What to do for one ACME tenant now. Pure: the unit tests' subject."""
    if not wanted.names:
        return Decision(
            "skip",
            "only wildcard names: DNS-01 would need the customer's DNS (give a custom "
            "certificate, tls.certificate: custom)",
        )
    if failures.count and now < failures.next_attempt:
        until = dt.datetime.fromtimestamp(failures.next_attempt, dt.UTC).isoformat(
            timespec="seconds"
        )
        return Decision("wait", f"{failures.count} failed attempt(s); next after {until}")
    if held is None:
        return Decision("issue", "no certificate yet")
    if held.names != wanted.names:
        return Decision(
            "issue", f"names changed: {', '.join(held.names)} -> {', '.join(wanted.names)}"
        )
    lifetime = held.not_after - held.not_before
    left = held.not_after - now
    if left <= 0:
        return Decision("renew", "expired")
    if left < renew_remaining_fraction * lifetime:
        return Decision("renew", f"{left / lifetime:.0%} of its lifetime left")
    return Decision("keep", f"{left / lifetime:.0%} of its lifetime left")


def backoff(failures: Failures, error: str, now: float, settings: AcmeSettings) -> Failures:
    count = failures.count + 1
    wait = min(settings.backoff_max, settings.backoff_initial * 2 ** (count - 1))
    return Failures(count, now + wait, error)


# --- ACME -----------------------------------------------------------------------------------


class Acme:
    """An ACME account on one directory (acme.client.ClientV2), created on first use."""

    def __init__(self, settings: AcmeSettings, store: Store) -> None:
        key_file = settings.account_key_file or store.directory / "account.pem"
        if not key_file.exists():
            write_private(key_file, key_pem(new_key()).decode())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        self.account_key = jose.JWKEC(key=key)
        # verify: a CA file path is what requests takes (then REQUESTS_CA_BUNDLE is ignored).
        verify: Any = str(settings.ca_bundle) if settings.ca_bundle else True
        net = client.ClientNetwork(
            self.account_key, alg=jose.ES256, verify_ssl=verify, user_agent="cdnctl"
        )
        directory = client.ClientV2.get_directory(settings.directory_url, net)
        self.client = client.ClientV2(directory, net)
        # Asked on every run that orders (not stored): the CA answers an existing key with
        # its account, and an account it has forgotten (a restarted pebble) is made anew.
        try:
            uri = self.client.new_account(
                messages.NewRegistration.from_data(
                    contact=tuple(settings.contact), terms_of_service_agreed=True
                )
            ).uri
        except errors.ConflictError as exc:  # the key already has an account there
            uri = exc.location
        net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
        self.settings = settings

    def order(
        self,
        names: Sequence[str],
        publish: Callable[[dict[str, str]], object],
        withdraw: Callable[[list[str]], object],
        publish_dns: Callable[[dict[str, str]], object] | None = None,
    ) -> tuple[str, str]:
        """(chain, key) PEM for `names`. With `publish_dns`, DNS-01: the TXT payloads (domain
        -> payload, the domain without `_acme-challenge.` or `*.`) go out through it before
        any challenge is answered. Otherwise HTTP-01: the tokens go out through `publish`
        first and are withdrawn whatever happens."""
        kind = challenges.DNS01 if publish_dns else challenges.HTTP01
        key = new_key()
        order = self.client.new_order(csr_pem(key, list(names)))
        answers = []
        tokens: dict[str, str] = {}
        records: dict[str, str] = {}
        for authz in order.authorizations:
            if authz.body.status.name == "valid":
                continue  # the CA reuses a recent validation
            domain = authz.body.identifier.value  # a wildcard's without its "*." (RFC 8555)
            chosen = next((c for c in authz.body.challenges if isinstance(c.chall, kind)), None)
            if chosen is None:
                raise CertificateError(f"{domain}: the CA offers no {kind.typ} challenge")
            response, validation = chosen.response_and_validation(self.account_key)
            if publish_dns:
                records[domain] = validation
            else:
                tokens[chosen.chall.encode("token")] = validation
            answers.append((chosen, response))
        try:
            if records and publish_dns:
                publish_dns(records)
            if tokens:
                publish(tokens)
            for challenge, response in answers:
                self.client.answer_challenge(challenge, response)
            deadline = dt.datetime.now() + dt.timedelta(seconds=self.settings.order_timeout)
            done = self.client.poll_and_finalize(order, deadline)
        finally:
            if tokens:
                withdraw(list(tokens))
        return done.fullchain_pem, key_pem(key).decode()


# --- the fleet ------------------------------------------------------------------------------


@dataclass
class TenantOutcome:
    tenant: str
    kind: str
    decision: Decision
    issued: bool = False
    error: str | None = None
    not_after: float | None = None


@dataclass
class EdgeOutcome:
    edge: str
    ok: bool
    set: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Report:
    tenants: list[TenantOutcome]
    edges: list[EdgeOutcome]

    @property
    def issued(self) -> list[str]:
        return [t.tenant for t in self.tenants if t.issued]

    @property
    def ok(self) -> bool:
        return all(t.error is None for t in self.tenants) and all(e.ok for e in self.edges)


def _on_every_edge(
    edges: Sequence[Edge], token: str, what: str, action: Callable[[AdminClient], dict[str, Any]]
) -> None:
    failed = [r for r in fan_out(edges, token, action) if not r.ok]
    if failed:
        raise CertificateError(
            f"{what} failed on {len(failed)} of {len(edges)} edge(s): "
            + "; ".join(f"{r.edge.name}: {r.error}" for r in failed)
        )


def _custom(wanted: Wanted, vault_secret: str | None) -> Held:
    assert wanted.cert_file is not None and wanted.key_vault is not None
    if vault_secret is None:
        raise CertificateError("tls.key is a vault string: give the vault password")
    try:
        chain = wanted.cert_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CertificateError(f"tls.cert_file {wanted.cert_file}: {exc.strerror}") from None
    key = decrypt_vault(wanted.key_vault, vault_secret)
    try:
        return held_from_pem(chain, key)
    except ValueError as exc:
        raise CertificateError(
            f"tls.cert_file {wanted.cert_file}: not a PEM chain: {exc}"
        ) from None


def converge(
    wanted: Sequence[Wanted],
    settings: AcmeSettings,
    edges: Sequence[Edge],
    token: str,
    *,
    renew: bool = True,
    vault_secret: str | None = None,
    publish_dns: Callable[[dict[str, str]], object] | None = None,
    now: Callable[[], float] = time.time,
) -> Report:
    """Issue what is missing (and, with `renew`, renew what is due), then make every edge
    serve exactly the wanted certificates. An edge that cannot take a challenge token fails
    the order before the CA is asked to validate; a failed order backs off. DNS-01 orders
    (the platform wildcard) publish through `publish_dns` (every DNS host, or fail)."""
    store = Store(settings.store)
    acme: Acme | None = None
    outcomes: list[TenantOutcome] = []
    serve: dict[str, Held] = {}
    for want in wanted:
        if want.kind == "custom":
            outcome = TenantOutcome(want.tenant, "custom", Decision("keep", "custom certificate"))
            try:
                serve[want.tenant] = _custom(want, vault_secret)
                outcome.not_after = serve[want.tenant].not_after
            except (CertificateError, ValueError) as exc:
                outcome.error = str(exc)
            outcomes.append(outcome)
            continue
        held = store.held(want.tenant)
        failures = store.failures(want.tenant)
        decision = decide(want, held, failures, now(), settings.renew_remaining_fraction)
        if decision.action == "renew" and not renew:
            decision = Decision("keep", decision.reason + " (renewal not asked for)")
        outcome = TenantOutcome(want.tenant, "acme", decision)
        outcomes.append(outcome)
        if decision.action in ("issue", "renew"):
            try:
                if want.challenge == "dns-01" and publish_dns is None:
                    raise CertificateError("DNS-01 needs the DNS hosts (inventory group dns)")
                if acme is None:
                    acme = Acme(settings, store)
                chain, key = acme.order(
                    want.names,
                    lambda tokens: _on_every_edge(
                        edges,
                        token,
                        "publishing the HTTP-01 token",
                        lambda c: c.acme_challenges(set_=tokens, ttl=settings.challenge_ttl),
                    ),
                    # Best effort: a token an edge missed expires there (challenge_ttl).
                    lambda tokens: fan_out(
                        edges, token, lambda c: c.acme_challenges(remove=tokens)
                    ),
                    publish_dns if want.challenge == "dns-01" else None,
                )
                store.save_acme(want.tenant, chain, key)
                store.save_failures(want.tenant, Failures())
                held = store.held(want.tenant)
                outcome.issued = True
            except Exception as exc:  # every ACME, network or edge failure backs off
                error = f"{type(exc).__name__}: {exc}"
                store.save_failures(want.tenant, backoff(failures, error, now(), settings))
                outcome.error = error
        if held is not None and held.not_after > now():
            serve[want.tenant] = held
            outcome.not_after = held.not_after
    failed = {o.tenant for o in outcomes if o.error is not None and o.tenant not in serve}
    return Report(outcomes, deploy(serve, edges, token, leave=failed))


def deploy(
    serve: Mapping[str, Held], edges: Sequence[Edge], token: str, leave: Set[str] = frozenset()
) -> list[EdgeOutcome]:
    """Make every edge serve exactly `serve`: only differing certificates are sent, and
    those of tenants that no longer want one are removed, except the tenants in `leave`
    (whose certificate could not be read or issued this time: the edges keep theirs)."""

    def one(client: AdminClient) -> dict[str, Any]:
        running = client.certificates()
        items = [
            {"tenant": tenant, "cert": held.chain, "key": held.key}
            for tenant, held in sorted(serve.items())
            if running.get(tenant, {}).get("fingerprint") != held.fingerprint
        ]
        remove = sorted(set(running) - set(serve) - leave)
        if items or remove:
            client.set_certificates(items, remove)
        return {"set": [i["tenant"] for i in items], "removed": remove}

    return [
        EdgeOutcome(
            r.edge.name,
            r.ok,
            (r.detail or {}).get("set", []),
            (r.detail or {}).get("removed", []),
            r.error,
        )
        for r in fan_out(edges, token, one)
    ]


@dataclass(frozen=True)
class StatusRow:
    tenant: str
    kind: str
    names: tuple[str, ...]
    not_after: float | None
    decision: Decision
    failures: Failures


def status(
    wanted: Sequence[Wanted], settings: AcmeSettings, now: float | None = None
) -> list[StatusRow]:
    """What the controller holds per tenant and what the next `renew` would do."""
    store = Store(settings.store)
    at = time.time() if now is None else now
    rows = []
    for want in wanted:
        if want.kind == "custom":
            rows.append(
                StatusRow(
                    want.tenant,
                    "custom",
                    want.names,
                    None,
                    Decision("keep", "custom certificate"),
                    Failures(),
                )
            )
            continue
        held = store.held(want.tenant)
        failures = store.failures(want.tenant)
        rows.append(
            StatusRow(
                want.tenant,
                "acme",
                want.names,
                held.not_after if held else None,
                decide(want, held, failures, at, settings.renew_remaining_fraction),
                failures,
            )
        )
    return rows
