"""The CLI contract: exit codes 0/1/2, JSON for CI, scaffolding, schema freshness."""

from __future__ import annotations

import json
import subprocess

import yaml
from typer.testing import CliRunner

from cdnctl.bundle import patch
from cdnctl.bundle.compile import compile_paths
from cdnctl.bundle.delta import make_delta
from cdnctl.bundle.manifest_store import ManifestStore
from cdnctl.cli.app import app
from cdnctl.tenants.policy import Policy
from cdnctl.tenants.schema import render_schema

from ..conftest import ROOT

runner = CliRunner()


def test_validate_sample_tenants_ok():
    result = runner.invoke(app, ["validate", str(ROOT / "tenants"), "--cache-dir", "/nonexistent"])
    assert result.exit_code == 0, result.output
    assert "3 tenant(s) valid" in result.stdout


def test_validate_invalid_exit_1_and_json(tenants_dir, write_tenant, tmp_path):
    bad = write_tenant("acme", origin={"url": "http://169.254.169.254"})
    args = ["validate", str(tenants_dir), "--cache-dir", str(tmp_path / "c")]
    text = runner.invoke(app, args)
    assert text.exit_code == 1
    assert f"{bad}:" in text.stderr and "origin.url" in text.stderr and "Fix:" in text.stderr
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["valid"] is False
    assert document["problems"][0]["file"] == str(bad)
    assert document["problems"][0]["field"] == "origin.url"


def test_usage_errors_exit_2(tmp_path):
    assert runner.invoke(app, ["validate", "--format", "xml"]).exit_code == 2
    assert runner.invoke(app, ["validate", "--inventory", str(tmp_path / "nope")]).exit_code == 2


def test_policy_comes_from_the_inventory(tenants_dir, write_tenant, tmp_path):
    write_tenant("lab", origin={"url": "http://127.0.0.1:18081"})
    inventory = tmp_path / "inv"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "cdn.yml").write_text(
        "cdn_tenant_policy:\n  allow_private_origins: true\n"
    )
    args = ["validate", str(tenants_dir), "--cache-dir", str(tmp_path / "c")]
    assert runner.invoke(app, args).exit_code == 1
    assert runner.invoke(app, [*args, "--inventory", str(inventory)]).exit_code == 0
    (inventory / "group_vars" / "all" / "cdn.yml").write_text(
        "cdn_tenant_policy:\n  allow_privat_origins: true\n"
    )
    bad = runner.invoke(app, [*args, "--inventory", str(inventory)])
    assert bad.exit_code == 2 and "allow_privat_origins" in bad.stderr


def test_compile_writes_bundle(tmp_path):
    out = tmp_path / "build"
    result = runner.invoke(
        app, ["compile", str(ROOT / "tenants"), "--out", str(out), "--cache-dir", "/nonexistent"]
    )
    assert result.exit_code == 0, result.output
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["version"] in result.stdout


def test_compile_writes_a_patched_bundle_and_its_delta(
    tenants_dir, write_tenant, tmp_path, monkeypatch
):
    """In a git work tree a one-tenant edit patches the last bundle: bundle.json is a cold
    compile's bytes, delta.json the delta a full comparison of the manifests gives."""
    patches = []
    real_patch = patch.patch_bundle
    monkeypatch.setattr(
        patch, "patch_bundle", lambda *a: patches.append(real_patch(*a)) or patches[-1]
    )
    repo, cache, out = tenants_dir.parent, tmp_path / "cache", tmp_path / "build"
    (repo / ".gitignore").write_text("/cache/\n/build/\n")
    for i in range(3):
        write_tenant(f"t{i}")
    git = ["git", "-c", "user.email=ci@cdnctl.test", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "three"], cwd=repo, check=True)
    args = ["compile", str(tenants_dir), "--out", str(out), "--cache-dir", str(cache)]
    assert runner.invoke(app, args).exit_code == 0
    base = json.loads((out / "bundle.json").read_bytes())["version"]
    write_tenant("t1", cache={"default_ttl": 5})
    subprocess.run([*git, "commit", "-qam", "t1"], cwd=repo, check=True)
    result = runner.invoke(app, [*args, "--delta-from", base])
    assert result.exit_code == 0, result.output
    cold = compile_paths([tenants_dir], Policy())
    assert (out / "bundle.json").read_bytes() == cold.bundle
    full = make_delta(cold.bundle, cold.manifest, ManifestStore(cache).load(base), base)
    assert (out / "delta.json").read_bytes() == full.body
    assert json.loads(full.body)["tenants"].keys() == {"t1"}
    assert len(patches) == 1 and patches[0] is not None


def test_compile_refuses_invalid_and_writes_nothing(tenants_dir, write_tenant, tmp_path):
    write_tenant("acme", shield="x")
    out = tmp_path / "build"
    result = runner.invoke(app, ["compile", str(tenants_dir), "--out", str(out)])
    assert result.exit_code == 1
    assert not (out / "bundle.json").exists()


def test_new_writes_a_valid_tenant(tenants_dir, tmp_path):
    args = [
        "new",
        "shop",
        "--domain",
        "cdn.shop.test",
        "--domain",
        "*.img.shop.test",
        "--origin",
        "https://origin.shop.test/base",
        "--tenants",
        str(tenants_dir),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load((tenants_dir / "shop.yaml").read_text())
    assert doc["domains"] == ["cdn.shop.test", "*.img.shop.test"]
    assert runner.invoke(app, ["validate", str(tenants_dir), "--cache-dir", "/x"]).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_new_refuses_invalid_input_and_writes_nothing(tenants_dir):
    result = runner.invoke(
        app,
        [
            "new",
            "shop",
            "--domain",
            "cdn.shop.test",
            "--origin",
            "http://10.0.0.1",
            "--tenants",
            str(tenants_dir),
        ],
    )
    assert result.exit_code == 1
    assert "origin.url" in result.stderr
    assert not (tenants_dir / "shop.yaml").exists()


def test_checked_in_schema_is_fresh():
    assert (ROOT / "tenants" / "schema.json").read_text() == render_schema(), (
        "tenants/schema.json is stale: run `cdnctl schema` and commit it"
    )


def test_schema_describes_the_fields():
    schema = json.loads(render_schema())
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"id", "domains", "origin"}
    assert "default_ttl" in schema["$defs"]["Cache"]["properties"]
