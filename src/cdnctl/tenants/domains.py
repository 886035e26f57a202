"""Domain names tenants are served on: normalisation, syntax, and fleet-wide ownership."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple

from cdnctl.tenants.problems import InputError

MAX_NAME = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# A name already in its normal form whose labels are all well formed (optionally under a
# `*.`), in one match: what check_domain has left to judge of it is its length and last label
_PLAIN_NAME = re.compile(
    r"(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


def normalise_domain(name: str) -> str:
    """Lowercase, no trailing dot: the form used for indexing and comparison."""
    return name.strip().lower().rstrip(".")


def check_domain(raw: str) -> str:
    """Return the normalised domain or raise InputError. `*.` as first label is allowed."""
    if (
        _PLAIN_NAME.fullmatch(raw)
        and len(raw) <= MAX_NAME
        and not raw.rpartition(".")[2].isdigit()  # (so not an IPv4 address either)
        and (raw[0] != "*" or raw.count(".") >= 2)
    ):
        return raw
    return _check_unusual_domain(raw)


def _check_unusual_domain(raw: str) -> str:
    if raw != raw.strip():
        raise InputError("domain has surrounding spaces", "remove the spaces")
    name = normalise_domain(raw)
    if name != raw.rstrip("."):
        raise InputError("domain must be lowercase", f"write {name!r}")
    if not name:
        raise InputError("domain is empty", "write a full name like cdn.example.com")
    if len(name) > MAX_NAME:
        raise InputError(
            f"domain is {len(name)} characters, over DNS's {MAX_NAME}", "use a shorter name"
        )
    if _is_ip(name):
        raise InputError(
            "an IP address is not a domain", "serve the tenant on a DNS name (cdn.example.com)"
        )
    labels = name.split(".")
    if len(labels) < 2:
        raise InputError("domain has no dot", "use a fully qualified name like cdn.example.com")
    wildcard = labels[0] == "*"
    for label in labels[1:] if wildcard else labels:
        if not _LABEL.match(label):
            raise InputError(
                f"bad label {label!r}",
                "labels are 1-63 of a-z, 0-9 and '-', not starting or ending with '-'; "
                "a wildcard is only a whole first label ('*.example.com')",
            )
    if wildcard and len(labels) < 3:
        raise InputError("wildcard covers a whole top-level domain", "use '*.name.tld' or deeper")
    if labels[-1].isdigit():
        raise InputError("top-level label is numeric", "use a real domain name")
    return name


def _is_ip(name: str) -> bool:
    text = name.strip("[]")
    if ":" not in text and not text.replace(".", "").isdigit():
        return False  # neither IPv6 (colons) nor IPv4 (digits and dots): no exception to raise
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class DomainClaim(NamedTuple):
    domain: str  # normalised
    tenant: str
    file: str
    index: int  # position in the tenant's `domains` list


class DomainConflict(NamedTuple):
    claim: DomainClaim
    other: DomainClaim
    why: str


def find_conflicts(claims: Iterable[tuple[str, str, str, int]]) -> list[DomainConflict]:
    """Domains claimed twice, exactly or through a one-label wildcard (`*.x.test` vs `a.x.test`).

    `claims` are (domain, tenant, file, index) tuples, plain or DomainClaim (plain tuples
    are much cheaper to build by the 100k). Linear: exact names and wildcard suffixes are
    indexed in dicts. The first claimant in iteration order is reported as the owner.
    """
    exact: dict[str, tuple[str, str, str, int]] = {}
    wildcards: dict[str, tuple[str, str, str, int]] = {}  # suffix after "*." -> claim
    conflicts: list[DomainConflict] = []
    for claim in claims:
        domain = claim[0]
        if domain.startswith("*."):
            owner = wildcards.setdefault(domain[2:], claim)
            why = "the same wildcard"
        else:
            owner = exact.setdefault(domain, claim)
            why = "the same domain"
        if owner is not claim:
            conflicts.append(DomainConflict(DomainClaim(*claim), DomainClaim(*owner), why))
    if wildcards:
        for domain, claim in exact.items():
            owner = wildcards.get(domain.partition(".")[2])
            if owner is not None and owner[1] != claim[1]:
                conflicts.append(
                    DomainConflict(DomainClaim(*claim), DomainClaim(*owner), f"wildcard {owner[0]}")
                )
    return conflicts
