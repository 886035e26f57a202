"""Origin URLs: parsing, and the SSRF gate that keeps tenants from pointing the CDN at itself.

Nothing is resolved here (validation must be deterministic): names are judged by their
form, addresses by their range, in every notation a resolver would accept.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from cdnctl.tenants.problems import InputError

_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
# The common form, split without urlsplit: lowercase scheme and host name, optional port,
# a path of URL characters; no userinfo, query, fragment, brackets or spaces (anything else
# goes through urlsplit; both give the same result for what this matches, see the tests).
_PLAIN_URL = re.compile(
    r"(https?)://([a-z0-9][a-z0-9.-]*)(?::([0-9]{1,5}))?(/[\w.~!$&'()*+,;=:%/-]*)?", re.ASCII
)
_HOST_NAME = re.compile(r"(?:(?!-)[a-z0-9_-]{1,63}(?<!-)\.)*(?!-)[a-z0-9_-]{1,63}(?<!-)")
# Names that always mean "this machine" or a cloud metadata service.
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.tencentyun.com",
        "100-100-100-200.aliyun.com",
    }
)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".arpa")
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("fd00:ec2::254"),
    }
)


@dataclass(frozen=True)
class OriginUrl:
    scheme: str
    host: str  # lowercase, no trailing dot, IPv6 without brackets
    port: int
    base_path: str  # "" or "/path" without trailing slash

    @property
    def default_host_header(self) -> str:
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port else f"{host}:{self.port}"


def parse_origin_url(url: str, *, allow_private: bool) -> OriginUrl:
    """Parse and vet an origin URL, or raise InputError naming the rule and the fix."""
    parsed = split_origin_url(url)
    check_origin_host(parsed.host, bracketed=":" in parsed.host, allow_private=allow_private)
    return parsed


@lru_cache(maxsize=1024)  # validation, then compilation, split each URL back to back
def split_origin_url(url: str) -> OriginUrl:
    """The structure of an origin URL (scheme, host, port, path), checked for form only."""
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None:
        scheme, host, port_text, path = plain.groups()
        port = _checked_port(int(port_text)) if port_text is not None else None
        return _origin_url(scheme, host, port, path or "")
    return _split_with_urlsplit(url)


def _split_with_urlsplit(url: str) -> OriginUrl:
    if _SPACE_OR_CONTROL.search(url):
        raise InputError("URL contains whitespace or control characters", "remove them")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InputError(f"not a URL ({exc})", "write e.g. https://origin.example.com") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(
            f"scheme {parts.scheme or '(none)'!r} is not allowed",
            "use an http:// or https:// URL",
        )
    if "@" in parts.netloc:
        raise InputError(
            "credentials in the URL are not allowed",
            "remove user:password@ and use origin.basic_auth with password_env",
        )
    if parts.query or url.rstrip().endswith("?"):
        raise InputError("origin URL has a query string", "remove the '?...' part")
    if parts.fragment or "#" in url:
        raise InputError("origin URL has a fragment", "remove the '#...' part")
    try:
        port = parts.port
    except ValueError:
        port = -1  # not a number: refused below
    if port is not None:
        _checked_port(port)
    raw_host = parts.hostname or ""
    if not raw_host:
        raise InputError("URL has no host", "write e.g. https://origin.example.com")
    if "[" in parts.netloc and ":" not in raw_host:
        raise InputError("not a valid IPv6 address", "fix the address")
    return _origin_url(scheme, raw_host.lower(), port, parts.path)


def _checked_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InputError("port is not a number between 1 and 65535", "fix the port")
    return port


def _origin_url(scheme: str, host: str, port: int | None, path: str) -> OriginUrl:
    path = path.rstrip("/")
    if "/../" in path + "/" or "/./" in path + "/" or "//" in path:
        raise InputError("origin path has '.', '..' or empty segments", "write a plain path")
    return OriginUrl(scheme, host.rstrip("."), port or (443 if scheme == "https" else 80), path)


def check_origin_host(host: str, *, bracketed: bool, allow_private: bool) -> None:
    if bracketed:
        if "%" in host:
            raise InputError("IPv6 zone identifiers are not allowed", "use a DNS name")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host)
        except ValueError:
            raise InputError("not a valid IPv6 address", "fix the address") from None
        _check_address(address, allow_private)
        return
    literal = parse_ipv4_any_notation(host)
    if literal is not None:
        if str(literal) != host:
            raise InputError(
                f"IP address in a non-standard notation (it means {literal})",
                "write a DNS name for the origin (or the plain dotted address)",
            )
        _check_address(literal, allow_private)
        return
    if not _HOST_NAME.fullmatch(host):
        raise InputError(
            "not a valid host name", "labels are a-z, 0-9, '-' (and '_'), at most 63 long"
        )
    labels = host.split(".")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        raise InputError("host looks like a malformed IP address", "use a DNS name")
    if host in _METADATA_NAMES:
        raise InputError(
            "cloud metadata service host names are never origins",
            "point the origin at the customer's own server",
        )
    if allow_private:
        return
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES) or len(labels) < 2:
        raise InputError(
            "host name points at this machine or a private network",
            "use the origin's public DNS name (private origins are allowed only where the "
            "platform policy sets allow_private_origins: true)",
        )


def _check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: bool) -> None:
    embedded = None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo:
            embedded = address.teredo[1]
    for candidate in filter(None, (address, embedded)):
        if candidate in _METADATA_ADDRESSES:
            raise InputError(
                "cloud metadata service addresses are never origins",
                "point the origin at the customer's own server",
            )
    if allow:
        return
    for candidate in filter(None, (address, embedded)):
        if (
            not candidate.is_global
            or candidate.is_multicast
            or candidate.is_reserved
            or candidate.is_unspecified
        ):
            raise InputError(
                f"address {candidate} is loopback, private, link-local, CGNAT, multicast or "
                "otherwise not public",
                "use the origin's public address or DNS name (private origins are allowed only "
                "where the platform policy sets allow_private_origins: true)",
            )


def parse_ipv4_any_notation(host: str) -> ipaddress.IPv4Address | None:
    """Parse IPv4 the way inet_aton does: 1-4 parts, each decimal, 0x-hex or 0-octal.

    `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1` all mean 127.0.0.1. Returns None when
    `host` is not such a literal.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        try:
            if part.startswith(("0x", "0X")):
                numbers.append(int(part[2:], 16) if part[2:] else 0)
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            elif part.isdigit():
                numbers.append(int(part))
            else:
                return None
        except ValueError:
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)
