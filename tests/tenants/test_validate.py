"""The GitOps gate: each rule, with the offending file and field asserted in the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdnctl.bundle.compile import check_tenants
from cdnctl.tenants.policy import Policy
from cdnctl.tenants.problems import REDACTED

from ..conftest import tenant_doc


def problems_of(directory: Path, policy: Policy | None = None):
    return check_tenants([directory], policy or Policy()).problems


def only_problem(directory: Path, policy: Policy | None = None):
    problems = problems_of(directory, policy)
    assert len(problems) == 1, [p.render() for p in problems]
    return problems[0]


def test_valid_tenant_has_no_problems(tenants_dir, write_tenant):
    write_tenant("acme")
    assert problems_of(tenants_dir) == []


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"origin": {"url": "http://10.0.0.1"}}, "origin.url", "not public"),
        ({"origin": {"url": "http://2130706433"}}, "origin.url", "non-standard"),
        ({"origin": {"url": "http://localhost:8080"}}, "origin.url", "this machine"),
        ({"origin": {"url": "ftp://o.test"}}, "origin.url", "scheme"),
        ({"origin": {"url": "https://o.test", "tls_verify": "no"}}, "origin.tls_verify", "bool"),
        (
            {"origin": {"url": "https://o.test", "connect_timeout": "90s"}},
            "origin.connect_timeout",
            "maximum of 75s",
        ),
        (
            {"origin": {"url": "https://o.test", "read_timeout": 0}},
            "origin.read_timeout",
            "at least 1s",
        ),
        (
            {"origin": {"url": "https://o.test", "host_header": "a b"}},
            "origin.host_header",
            "Host header",
        ),
        ({"domains": []}, "domains", "at least 1"),
        ({"domains": ["cdn.a.test", 5]}, "domains[1]", "must be a string"),
        ({"domains": ["Cdn.A.test"]}, "domains[0]", "lowercase"),
        ({"domains": ["nodot"]}, "domains[0]", "no dot"),
        ({"domains": ["10.0.0.1"]}, "domains[0]", "IP address"),
        ({"domains": ["a.test", "a.test."]}, "domains[1]", "listed twice in this file"),
        ({"cache": {"default_ttl": -5}}, "cache.default_ttl", "must not be negative"),
        ({"cache": {"default_ttl": "999d"}}, "cache.default_ttl", "maximum of 365d"),
        ({"cache": {"default_ttl": "soon"}}, "cache.default_ttl", "not a duration"),
        ({"cache": {"query_string": "some"}}, "cache.query_string", "'all' or 'ignore'"),
        ({"cache": {"query_string": []}}, "cache.query_string", ""),
        (
            {"cache": {"rules": [{"path": "api/*", "ttl": 5}]}},
            "cache.rules[0].path",
            "start with '/' or '*'",
        ),
        ({"cache": {"rules": [{"path": "/a"}]}}, "cache.rules[0]", "rule does nothing"),
        (
            {"cache": {"rules": [{"path": "/a", "ttl": 5, "bypass": True}]}},
            "cache.rules[0]",
            "both bypass and ttl",
        ),
        ({"shield": "yes please"}, "shield", "boolean"),
        ({"tls": {"certificate": "letsencrypt"}}, "tls.certificate", "'acme', 'custom'"),
        ({"tls": {"certificate": "custom"}}, "tls", "needs cert_file and key"),
        ({"tls": {"certificate": "acme", "cert_file": "x.pem"}}, "tls", "only used with"),
        ({"tls": {"certificate": "none", "redirect_http": True}}, "tls", "certificate is none"),
        (
            {"rate_limit": {"requests_per_second": 0}},
            "rate_limit.requests_per_second",
            "greater than or equal to 1",
        ),
        ({"rate_limit": {"burst": 5}}, "rate_limit.requests_per_second", "missing"),
        ({"purge_tokens_env": ["lower-case"]}, "purge_tokens_env[0]", "pattern"),
        ({"methods": ["GET"]}, "methods", "GET and HEAD"),
        ({"methods": ["GET", "HEAD", "TRACE"]}, "methods[2]", "'GET', 'HEAD'"),
        ({"name": 5}, "name", "valid string"),
    ],
)
def test_schema_rules_name_file_field_and_fix(tenants_dir, write_tenant, overrides, field, reason):
    path = write_tenant("acme", **overrides)
    problem = only_problem(tenants_dir)
    assert problem.file == str(path)
    assert problem.field == field
    assert reason in problem.reason
    assert problem.fix
    assert str(path) in problem.render()


def test_unknown_key_suggests_the_close_one(tenants_dir, write_tenant):
    path = write_tenant("acme", cache={"defualt_ttl": "1h"})
    problem = only_problem(tenants_dir)
    assert (problem.file, problem.field) == (str(path), "cache.defualt_ttl")
    assert problem.reason == "unknown key 'defualt_ttl'"
    assert "did you mean 'default_ttl'?" in problem.fix
    assert problem.line == 2


def test_unknown_top_level_key_without_close_match(tenants_dir, write_tenant):
    write_tenant("acme", zzz=1)
    problem = only_problem(tenants_dir)
    assert problem.field == "zzz"
    assert problem.fix.startswith("remove it")


def test_missing_required_fields(tenants_dir, write_tenant):
    write_tenant("acme", text="id: acme\n")
    problems = problems_of(tenants_dir)
    assert {p.field for p in problems} == {"domains", "origin"}
    assert all(p.reason == "required field is missing" for p in problems)


def test_plaintext_secret_is_refused_and_never_echoed(tenants_dir, write_tenant):
    write_tenant(
        "acme",
        origin={"url": "https://o.test", "basic_auth": {"username": "u", "password": "hunter2"}},
    )
    problem = only_problem(tenants_dir)
    assert problem.field == "origin.basic_auth.password"
    assert "plaintext secret" in problem.reason
    assert problem.value == REDACTED
    assert "hunter2" not in problem.render()


def test_vault_encrypted_password_is_accepted(tenants_dir, write_tenant):
    write_tenant(
        "acme",
        text=(
            "id: acme\ndomains: [cdn.acme.test]\norigin:\n  url: https://o.test\n"
            "  basic_auth:\n    username: u\n    password: !vault |\n"
            "      $ANSIBLE_VAULT;1.1;AES256\n      61626364\n"
        ),
    )
    assert problems_of(tenants_dir) == []


def test_basic_auth_needs_exactly_one_secret_source(tenants_dir, write_tenant):
    write_tenant("acme", origin={"url": "https://o.test", "basic_auth": {"username": "u"}})
    assert "exactly one of" in only_problem(tenants_dir).reason


@pytest.mark.parametrize(
    ("filename", "tenant_id", "reason"),
    [
        ("acme.yaml", "other", "does not match the file name 'acme.yaml'"),
        ("Acme.yaml", "Acme", "lowercase letters"),
        ("-acme.yaml", "-acme", "lowercase letters"),
    ],
)
def test_id_must_match_file_name_and_pattern(tenants_dir, filename, tenant_id, reason):
    import yaml

    (tenants_dir / filename).write_text(yaml.safe_dump(tenant_doc(tenant_id)))
    problems = problems_of(tenants_dir)
    assert any(p.field == "id" and reason in p.reason for p in problems), problems
    assert all(p.file == str(tenants_dir / filename) for p in problems)


def test_path_traversal_id_is_refused(tenants_dir, write_tenant):
    write_tenant("acme", id="../etc/passwd")
    reasons = {p.reason for p in problems_of(tenants_dir)}
    assert any("does not match the file name" in r for r in reasons)
    assert any("lowercase letters" in r for r in reasons)


def test_yml_files_are_flagged(tenants_dir, write_tenant):
    (tenants_dir / "acme.yml").write_text("id: acme\n")
    problem = only_problem(tenants_dir)
    assert problem.file.endswith("acme.yml")
    assert "rename it to acme.yaml" in problem.fix


def test_domain_claimed_by_two_tenants(tenants_dir, write_tenant):
    write_tenant("one", domains=["shared.x.test"])
    two = write_tenant("two", domains=["SHARED.x.test."])
    problems = problems_of(tenants_dir)
    conflict = [p for p in problems if "already claimed" in p.reason]
    assert len(conflict) == 1
    assert conflict[0].file == str(two)
    assert "tenant 'one'" in conflict[0].reason


def test_wildcard_overlap_between_tenants(tenants_dir, write_tenant):
    write_tenant("one", domains=["*.x.test"])
    two = write_tenant("two", domains=["a.x.test"])
    problem = only_problem(tenants_dir)
    assert problem.file == str(two)
    assert "wildcard *.x.test" in problem.reason


def test_all_problems_are_reported_at_once(tenants_dir, write_tenant):
    write_tenant("one", origin={"url": "http://127.0.0.1"}, shield="x")
    write_tenant("two", text="id: two\nid: two\n")
    write_tenant("three", text=": : :\n")
    problems = problems_of(tenants_dir)
    assert {Path(p.file).name for p in problems} == {"one.yaml", "two.yaml", "three.yaml"}
    assert len(problems) >= 4


def test_policy_allows_private_origins(tenants_dir, write_tenant):
    write_tenant("lab", origin={"url": "http://127.0.0.1:18081"})
    assert problems_of(tenants_dir)
    assert problems_of(tenants_dir, Policy(allow_private_origins=True)) == []


def test_policy_blocked_hosts_and_domain_limit(tenants_dir, write_tenant):
    write_tenant("acme", origin={"url": "https://evil.test"}, domains=["a.x.test", "b.x.test"])
    policy = Policy(blocked_origin_hosts=["evil.test"], max_domains_per_tenant=1)
    fields = {p.field for p in problems_of(tenants_dir, policy)}
    assert fields == {"origin.url", "domains"}


def test_file_size_limit_from_policy(tenants_dir, write_tenant):
    write_tenant("acme", domains=[f"d{i}.acme.test" for i in range(80)])
    assert problems_of(tenants_dir) == []
    problem = only_problem(tenants_dir, Policy(max_file_bytes=1024))
    assert "over the limit of 1024" in problem.reason


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"contact": 'ops "quoted" ,"domains":[ @t.test', "name": "Ünïcode"},
        {
            "domains": ["b.t.test", "*.a.t.test", "b.t.test"],
            "origin": {
                "url": "https://o.test/base",
                "basic_auth": {"username": "cdn", "password_env": "PW"},
            },
            "rate_limit": {"requests_per_second": 5},
            "purge_tokens_env": ["B", "A"],
            "cache": {"query_string": ["v", "lang"], "rules": [{"path": "/x/*", "ttl": "1h"}]},
        },
    ],
)
def test_a_fragment_is_the_canonical_json_of_the_effective_tenant(overrides):
    """effective_fragment serialises once and splices the digest in: the same bytes as
    serialising the settings with their digest, and that digest."""
    from cdnctl.tenants.canonical import canonical_json
    from cdnctl.tenants.effective import effective_fragment, effective_tenant
    from cdnctl.tenants.model import Tenant

    tenant = Tenant.model_validate(tenant_doc("t1", **overrides), context={"policy": Policy()})
    settings = effective_tenant(tenant)
    assert effective_fragment(tenant) == (canonical_json(settings), settings["digest"])


def test_memoised_yaml_tags_equal_pyyaml_s(tmp_path):
    """The loader's memo of scalar tags gives what PyYAML's safe loader gives, in any order."""
    import yaml

    from cdnctl.tenants.yaml_loader import load_tenant_yaml

    text = "\n".join(
        f"k{n}: {value}"
        for n, value in enumerate(
            ["yes", "no", "on", "~", "null", "1e3", "0x1f", "012", "3s", "2001-12-14", "'yes'"] * 2
        )
    )
    assert load_tenant_yaml(text.encode(), max_bytes=1 << 16).data == {
        key: value if not hasattr(value, "isoformat") else str(value)
        for key, value in yaml.safe_load(text).items()
    }
