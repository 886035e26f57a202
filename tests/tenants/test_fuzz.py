"""Hypothesis: whatever bytes or structures a tenant file holds, validation never crashes."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdnctl.tenants.policy import Policy
from cdnctl.tenants.validate import check_file

from ..conftest import tenant_doc

POLICY = Policy()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["1h", "-5s", "http://127.1", "*.x.test", "all", "!vault", "0x7f000001"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    ["id", "domains", "origin", "cache", "shield", "tls", "rate_limit", "methods", "name", "x"]
)


def assert_clean(raw: bytes) -> None:
    result = check_file("tenants/fuzz.yaml", raw, POLICY)
    for problem in result.problems:
        assert problem.file == "tenants/fuzz.yaml"
        assert problem.reason and problem.fix
        problem.render()
    assert (result.fragment is None) == bool(result.problems)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes(raw):
    assert_clean(raw)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    assert_clean(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(st.dictionaries(keys, values, max_size=8))
def test_arbitrary_structures(doc):
    assert_clean(yaml.safe_dump(doc).encode())


@FUZZ
@given(
    st.sampled_from(["origin", "cache", "tls", "rate_limit", "domains", "methods", "shield"]),
    values,
)
def test_one_field_mutated(field, value):
    assert_clean(yaml.safe_dump(tenant_doc("fuzz", **{field: value})).encode())
