"""`cdnctl prepare-rollout` (used by ansible/tenants.yml) and its smoke-target choice."""

from __future__ import annotations

import json
import stat

import pytest
import yaml
from typer.testing import CliRunner

from cdnctl.bundle.format import sha256_tag
from cdnctl.bundle.rollout import smoke_target
from cdnctl.cli.app import app

from ..conftest import tenant_doc

BUNDLE = {
    "tenants": {
        "alpha": {"domains": ["cdn.alpha.test"]},
        "beta": {"domains": ["*.beta.test", "cdn.beta.test"]},
    }
}


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (None, ("alpha", "cdn.alpha.test")),
        ({"added": [], "changed": {}}, ("alpha", "cdn.alpha.test")),
        ({"added": ["beta"], "changed": {}}, ("beta", "smoke.beta.test")),
        ({"added": [], "changed": {"beta": []}, "removed": ["zeta"]}, ("beta", "smoke.beta.test")),
        ({"added": ["gone"], "changed": {}}, ("alpha", "cdn.alpha.test")),
    ],
)
def test_smoke_target(plan, expected):
    assert smoke_target(BUNDLE, plan) == expected


def test_no_tenants_no_smoke_target():
    assert smoke_target({"tenants": {}}, None) is None


@pytest.fixture
def compiled(tmp_path, tenants_dir):
    doc = tenant_doc(
        "acme",
        origin={
            "url": "https://o.test",
            "basic_auth": {"username": "u", "password_env": "ACME_PW"},
        },
    )
    (tenants_dir / "acme.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "build"
    result = CliRunner().invoke(app, ["compile", str(tenants_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "bundle.json"


def test_prepare_rollout_writes_a_private_resolved_bundle(compiled, tmp_path, tenants_dir):
    out = tmp_path / "resolved.json"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"added": ["acme"], "changed": {}, "removed": []}))
    args = [
        "prepare-rollout",
        "--bundle",
        str(compiled),
        "--out",
        str(out),
        "--tenants",
        str(tenants_dir),
        "--plan",
        str(plan),
    ]
    result = CliRunner(env={"ACME_PW": "s3cret"}).invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["version"] == json.loads(compiled.read_text())["version"]
    assert summary["content"] == sha256_tag(out.read_bytes())
    assert (summary["smoke_tenant"], summary["smoke_domain"]) == ("acme", "cdn.acme.test")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    auth = json.loads(out.read_text())["tenants"]["acme"]["origin"]["basic_auth"]
    assert auth["authorization"].startswith("Basic ") and "password_env" not in auth
    again = CliRunner(env={"ACME_PW": "s3cret"}).invoke(app, args)
    assert again.exit_code == 2 and "only ever written fresh" in again.stderr


def test_prepare_rollout_without_the_secret_writes_nothing(compiled, tmp_path, monkeypatch):
    monkeypatch.delenv("ACME_PW", raising=False)
    out = tmp_path / "resolved.json"
    result = CliRunner().invoke(
        app, ["prepare-rollout", "--bundle", str(compiled), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert "ACME_PW" in result.stderr and "nothing was rolled out" in result.stderr
    assert not out.exists()


def test_compile_and_prepare_rollout_write_deltas_from_earlier_versions(tmp_path, tenants_dir):
    cache, out_dir = tmp_path / "cache", tmp_path / "build"
    plain = [tenant_doc(f"t{i}") for i in range(5)]
    for doc in plain:
        (tenants_dir / f"{doc['id']}.yaml").write_text(yaml.safe_dump(doc))

    def compile_(*extra: str):
        args = ["compile", str(tenants_dir), "--out", str(out_dir), "--cache-dir", str(cache)]
        result = CliRunner().invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        return json.loads((out_dir / "bundle.json").read_bytes())["version"]

    first = compile_()
    (tenants_dir / "t9.yaml").write_text(yaml.safe_dump(tenant_doc("t9")))
    (tenants_dir / "t0.yaml").unlink()
    second = compile_("--delta-from", first)
    delta = json.loads((out_dir / "delta.json").read_bytes())
    assert (delta["base"], delta["version"]) == (first, second)
    assert (sorted(delta["tenants"]), delta["removed"]) == (["t9"], ["t0"])
    assert delta["hosts"] == {"cdn.t9.test": "t9", "cdn.t0.test": None}
    unknown = CliRunner().invoke(
        app, ["compile", str(tenants_dir), "--out", str(out_dir), "--cache-dir", str(cache),
              "--delta-from", "sha256:" + "1" * 64],
    )  # fmt: skip
    assert unknown.exit_code == 2 and "no manifest of that version" in unknown.stderr
    resolved = tmp_path / "resolved.json"
    args = ["prepare-rollout", "--bundle", str(out_dir / "bundle.json"), "--out", str(resolved),
            "--tenants", str(tenants_dir), "--cache-dir", str(cache),
            "--delta-base", first, "--delta-base", "sha256:" + "2" * 64]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary["deltas"]) == [first]  # no manifest of the other: the full bundle
    written = tmp_path / summary["deltas"][first]
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert json.loads(written.read_bytes())["content"] == summary["content"]
