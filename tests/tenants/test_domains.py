import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdnctl.tenants.domains import (
    DomainClaim,
    _check_unusual_domain,
    check_domain,
    find_conflicts,
)
from cdnctl.tenants.problems import InputError


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("cdn.a.test", "cdn.a.test"), ("cdn.a.test.", "cdn.a.test"), ("*.a.test", "*.a.test")],
)
def test_valid_domains(raw, normalised):
    assert check_domain(raw) == normalised


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("CDN.a.test", "lowercase"),
        ("localhost", "no dot"),
        ("192.0.2.1", "IP address"),
        ("[::1]", "IP address"),
        ("a..test", "bad label"),
        ("-a.test", "bad label"),
        ("a-.test", "bad label"),
        ("a_b.test", "bad label"),
        ("*.test", "whole top-level"),
        ("a.*.test", "bad label"),
        ("**.a.test", "bad label"),
        ("x" * 64 + ".test", "bad label"),
        (".".join(["abcdefghi"] * 26) + ".test", "over DNS's 253"),
        ("a.123", "numeric"),
        (" a.test", "spaces"),
        ("", "empty"),
    ],
)
def test_invalid_domains(raw, reason):
    with pytest.raises(InputError) as caught:
        check_domain(raw)
    assert reason in caught.value.reason


def claim(domain, tenant, index=0):
    return DomainClaim(domain, tenant, f"tenants/{tenant}.yaml", index)


def test_exact_duplicate_across_tenants():
    conflicts = find_conflicts([claim("a.x.test", "one"), claim("a.x.test", "two")])
    assert [(c.claim.tenant, c.other.tenant) for c in conflicts] == [("two", "one")]


def test_wildcard_overlaps_exact_name_of_another_tenant():
    conflicts = find_conflicts([claim("*.x.test", "one"), claim("a.x.test", "two")])
    assert len(conflicts) == 1
    assert conflicts[0].why == "wildcard *.x.test"


def test_wildcard_does_not_cover_deeper_or_apex_names():
    claims = [claim("*.x.test", "one"), claim("b.a.x.test", "two"), claim("x.test", "three")]
    assert find_conflicts(claims) == []


def test_wildcard_and_exact_of_the_same_tenant_are_fine():
    assert find_conflicts([claim("*.x.test", "one"), claim("a.x.test", "one", 1)]) == []


def test_same_wildcard_twice():
    conflicts = find_conflicts([claim("*.x.test", "one"), claim("*.x.test", "two")])
    assert conflicts[0].why == "the same wildcard"


NAMES = st.one_of(
    st.text("ab0-.", min_size=1, max_size=20),
    st.text("a.-*", max_size=10).map("{}.test".format),
    st.text("a1.-", max_size=8).map("*.{}".format),
    st.text("aB9 ._[]:*-é", max_size=12),
    st.builds(
        "{}.{}".format, st.text("ab", min_size=60, max_size=70), st.sampled_from(["io", "9"])
    ),
    st.lists(st.sampled_from(["abcdefghi", "x", "0", "1"]), max_size=30).map(".".join),
)


@given(NAMES)
@settings(max_examples=800, deadline=None)
@example("*.a.test")
@example("*.test")
@example("a.b.123")
@example("192.0.2.1")
@example(".".join(["abcdefghi"] * 25) + ".test")
def test_the_plain_name_shortcut_judges_as_the_full_check(raw):
    """check_domain takes a one-regex shortcut for names already in their normal form: it
    must accept what the full check accepts and refuse (by the full check) the rest."""

    def outcome(check):
        try:
            return check(raw)
        except InputError as exc:
            return exc.reason

    assert outcome(check_domain) == outcome(_check_unusual_domain)
