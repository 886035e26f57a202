import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdnctl.tenants.origins import (
    _split_with_urlsplit,
    parse_ipv4_any_notation,
    parse_origin_url,
    split_origin_url,
)
from cdnctl.tenants.problems import InputError

PRIVATE = "not public"
NOTATION = "non-standard notation"
LOCAL_NAME = "this machine or a private network"
METADATA = "metadata"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", PRIVATE),
        ("http://10.1.2.3", PRIVATE),
        ("http://172.16.0.1", PRIVATE),
        ("http://192.168.1.1", PRIVATE),
        ("http://100.64.0.1", PRIVATE),  # CGNAT
        ("http://169.254.1.1", PRIVATE),  # link-local
        ("http://0.0.0.0", PRIVATE),
        ("http://224.0.0.1", PRIVATE),  # multicast
        ("http://240.0.0.1", PRIVATE),  # reserved
        ("http://255.255.255.255", PRIVATE),
        ("http://169.254.169.254/latest/meta-data", METADATA),
        ("http://[::1]/", PRIVATE),
        ("http://[::]/", PRIVATE),
        ("http://[fe80::1]/", PRIVATE),
        ("http://[fc00::1]/", PRIVATE),
        ("http://[ff02::1]/", PRIVATE),
        ("http://[::ffff:127.0.0.1]/", PRIVATE),  # IPv4-mapped
        ("http://[::ffff:169.254.169.254]/", METADATA),
        ("http://[64:ff9b::7f00:1]/", PRIVATE),  # NAT64 of 127.0.0.1
        ("http://[2002:c0a8:101::]/", PRIVATE),  # 6to4 of 192.168.1.1
        ("http://[fd00:ec2::254]/", METADATA),
        ("http://[fe80::1%25eth0]/", "zone identifiers"),
        ("http://2130706433/", NOTATION),  # decimal 127.0.0.1
        ("http://0x7f000001/", NOTATION),  # hex
        ("http://0x7f.0x0.0x0.0x1/", NOTATION),
        ("http://0177.0.0.1/", NOTATION),  # octal
        ("http://127.1/", NOTATION),  # short form
        ("http://10.1/", NOTATION),
        ("http://017700000001/", NOTATION),
        ("http://localhost/", LOCAL_NAME),
        ("http://LOCALHOST./", LOCAL_NAME),
        ("http://api.localhost/", LOCAL_NAME),
        ("http://printer.local/", LOCAL_NAME),
        ("http://db.internal/", LOCAL_NAME),
        ("http://intranet/", LOCAL_NAME),
        ("http://metadata.google.internal/", METADATA),
        ("http://metadata/", METADATA),
        ("http://instance-data/", METADATA),
        ("ftp://origin.example.com/", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://origin.example.com/", "scheme"),
        ("origin.example.com", "scheme '(none)'"),
        ("http://user:pw@origin.example.com/", "credentials"),
        ("http://user@origin.example.com/", "credentials"),
        ("http://origin.example.com/?a=1", "query string"),
        ("http://origin.example.com/?", "query string"),
        ("http://origin.example.com/#top", "fragment"),
        ("http://origin.example.com:0/", "between 1 and 65535"),
        ("http://origin.example.com:65536/", "between 1 and 65535"),
        ("http://origin.example.com:http/", "between 1 and 65535"),
        ("http:///path", "no host"),
        ("http://bad_host!.com/", "not a valid host"),
        ("http://origin.example.com/a/../b", "'..'"),
        ("http://origin .example.com/", "whitespace"),
        ("http://999.1.1.1/", "malformed IP"),
    ],
)
def test_dangerous_or_malformed_origins_are_refused(url, reason):
    with pytest.raises(InputError) as caught:
        parse_origin_url(url, allow_private=False)
    assert reason in caught.value.reason
    assert caught.value.fix


@pytest.mark.parametrize(
    ("url", "host", "port", "path"),
    [
        ("https://origin.example.com", "origin.example.com", 443, ""),
        ("http://origin.example.com:8080/static/", "origin.example.com", 8080, "/static"),
        ("HTTPS://Origin.Example.COM./x", "origin.example.com", 443, "/x"),
        ("http://93.184.216.34/", "93.184.216.34", 80, ""),
        ("https://[2606:2800:220:1::]/", "2606:2800:220:1::", 443, ""),
    ],
)
def test_public_origins_are_accepted(url, host, port, path):
    parsed = parse_origin_url(url, allow_private=False)
    assert (parsed.host, parsed.port, parsed.base_path) == (host, port, path)


def test_private_origins_allowed_by_policy_but_never_metadata():
    assert parse_origin_url("http://127.0.0.1:8080", allow_private=True).port == 8080
    assert parse_origin_url("http://localhost", allow_private=True).host == "localhost"
    with pytest.raises(InputError, match="metadata"):
        parse_origin_url("http://169.254.169.254", allow_private=True)
    with pytest.raises(InputError, match="non-standard"):
        parse_origin_url("http://2130706433", allow_private=True)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("1.2.3.4", "1.2.3.4"),
    ],
)
def test_ipv4_notations(text, address):
    assert str(parse_ipv4_any_notation(text)) == address


@pytest.mark.parametrize("text", ["a.b", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "0x", "08.1.1.1"])
def test_not_ipv4(text):
    assert parse_ipv4_any_notation(text) is None or text == "0x"


def test_default_host_header():
    assert parse_origin_url("https://o.test", allow_private=False).default_host_header == "o.test"
    assert (
        parse_origin_url("http://o.test:8080", allow_private=False).default_host_header
        == "o.test:8080"
    )


URL_PARTS = st.lists(
    st.sampled_from(
        [
            "http",
            "https",
            "HTTP",
            "://",
            ":",
            "/",
            ".",
            "..",
            "-",
            "a",
            "b0",
            "x-y",
            "80",
            "0",
            "065536",
            "@",
            "?",
            "#",
            "%2e",
            "[",
            "]",
            "//",
            "A",
            "é",
        ]
    ),
    max_size=12,
).map("".join)
# what the shortcut takes, and its near misses
STRUCTURED = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https", "http", "https", "HTTPS", "ftp"]),
    st.one_of(
        st.text("ab0-.", min_size=1, max_size=12).map("a{}".format), st.text("aA_é[]:.", max_size=6)
    ),
    st.sampled_from(["", "", ":", ":0", ":80", ":08080", ":65535", ":65536", ":123456", ":x"]),
    st.one_of(
        st.just(""),
        st.text("/.a;=~_:%2e*'(", max_size=12).map("/{}".format),
        st.text("/a@?# é\\", max_size=6),
    ),
)


@given(
    st.one_of(
        URL_PARTS,
        STRUCTURED,
        STRUCTURED,
        st.builds("{}://{}".format, st.sampled_from(["http", "https"]), URL_PARTS),
    )
)
@settings(max_examples=600, deadline=None)
@example("https://origin-1.example.net/base/")
@example("http://a.example:0/")
@example("http://a.example:65536/x")
@example("http://a.example:00080")
@example("http://a.example./x//")
@example("http://a..example/")
@example("http://a.example/x/../y")
@example("http://a.example/%2e%2e/y;p=1,2")
def test_the_plain_url_shortcut_splits_as_urlsplit_does(url):
    """split_origin_url takes a regex shortcut for common URLs: for every URL, it must give
    what the urlsplit path gives (the same OriginUrl, or the same refusal)."""

    def outcome(split):
        try:
            return split(url)
        except InputError as exc:
            return exc.reason

    assert outcome(split_origin_url.__wrapped__) == outcome(_split_with_urlsplit)
