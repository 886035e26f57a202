"""Certificates for the fleet: renewal decisions (unit), and issuance by a real pebble
(Debian's ACME test server) validating HTTP-01 against real edges (integration).

pebble resolves the tenant names through pebble-challtestsrv (same Debian package), a DNS
server on 127.0.0.1 answering every A query with 127.0.0.1, where the edges listen: the
validation is real, over HTTP, against the token the edges serve from their shared dict.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from cdnctl.bundle.synthetic import tenant
from cdnctl.edge.admin_client import Edge
from cdnctl.edge.pki import self_signed_pem
from cdnctl.edge.runner import free_port
from cdnctl.fleet.certificates import (
    AcmeSettings,
    CertificateError,
    Decision,
    Failures,
    Held,
    Wanted,
    backoff,
    converge,
    decide,
    load_settings,
    status,
    wanted_certificates,
)
from tests.conftest import tenant_doc
from tests.edge import conftest as edge_fixtures
from tests.edge.conftest import ADMIN_TOKEN, Node
from tests.fleet import pebble as pebble_fixtures
from tests.fleet.pebble import Pebble, verified_leaf

# Real edges as in tests/edge/, and a real pebble.
make_node = edge_fixtures.make_node
make_pebble = pebble_fixtures.make_pebble

DAY = 86400.0
ROOT = Path(__file__).resolve().parents[2]


# --- renewal decisions (unit) ----------------------------------------------------------------


def held(names: tuple[str, ...], not_before: float, not_after: float) -> Held:
    return Held("chain", "key", names, not_before, not_after)


WANT = Wanted("shop", "acme", ("shop.test", "www.shop.test"))


@pytest.mark.parametrize(
    ("current", "failures", "now", "action"),
    [
        (None, Failures(), 0, "issue"),
        (held(("shop.test",), 0, 90 * DAY), Failures(), DAY, "issue"),  # a name was added
        (held(WANT.names, 0, 90 * DAY), Failures(), 59 * DAY, "keep"),  # 34 % left
        (held(WANT.names, 0, 90 * DAY), Failures(), 61 * DAY, "renew"),  # 32 % left
        (held(WANT.names, 0, 90 * DAY), Failures(), 91 * DAY, "renew"),  # expired
        (held(WANT.names, 0, 160 * 3600), Failures(), 100 * 3600, "keep"),  # short-lived
        (held(WANT.names, 0, 160 * 3600), Failures(), 110 * 3600, "renew"),
        (None, Failures(2, 5000, "boom"), 4999, "wait"),
        (None, Failures(2, 5000, "boom"), 5000, "issue"),
        (held(WANT.names, 0, 90 * DAY), Failures(1, 61 * DAY + 1, "x"), 61 * DAY, "wait"),
    ],
)
def test_renewal_decisions(
    current: Held | None, failures: Failures, now: float, action: str
) -> None:
    assert decide(WANT, current, failures, now, 1 / 3).action == action


def test_renewal_fraction_is_a_setting() -> None:
    current = held(WANT.names, 0, 100 * DAY)
    assert decide(WANT, current, Failures(), 60 * DAY, 0.5).action == "renew"
    assert decide(WANT, current, Failures(), 60 * DAY, 0.3).action == "keep"


def test_only_wildcard_names_are_skipped() -> None:
    wildcard = Wanted("w", "acme", (), ("*.w.test",))
    assert decide(wildcard, None, Failures(), 0, 1 / 3).action == "skip"


def test_backoff_doubles_up_to_its_maximum() -> None:
    settings = AcmeSettings(backoff_initial=600, backoff_max=3000)
    failures = Failures()
    waits = []
    for _ in range(5):
        failures = backoff(failures, "rate limited", 1000, settings)
        waits.append(failures.next_attempt - 1000)
    assert waits == [600, 1200, 2400, 3000, 3000]
    assert failures.count == 5


def test_wanted_certificates_from_effective_tenants(tmp_path: Path) -> None:
    a = tenant("a", ["a.test", "*.a.test"], "127.0.0.1:1")
    a["tls"] = {"certificate": "acme", "cert_file": None, "key_vault": None}
    b = tenant("b", ["b.test"], "127.0.0.1:1")
    b["tls"] = {"certificate": "custom", "cert_file": "certs/b.pem", "key_vault": "$ANSIBLE..."}
    c = tenant("c", ["c.test"], "127.0.0.1:1")  # certificate: none
    wanted = wanted_certificates({"c": c, "b": b, "a": a}, tmp_path)
    assert wanted == [
        Wanted("a", "acme", ("a.test",), ("*.a.test",)),
        Wanted(
            "b", "custom", ("b.test",), cert_file=tmp_path / "certs/b.pem", key_vault="$ANSIBLE..."
        ),
    ]


def test_settings_come_from_the_inventory(tmp_path: Path) -> None:
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    path = tmp_path / "group_vars" / "all" / "certificates.yml"
    path.write_text("cdn_acme:\n  contact: [ops@example.test]\n")
    with pytest.raises(CertificateError, match=r"certificates.yml: cdn_acme.contact.*mailto"):
        load_settings(tmp_path)
    path.write_text(
        "cdn_acme:\n  contact: [mailto:ops@example.test]\n  renew_remaining_fraction: 0.25\n"
    )
    settings = load_settings(tmp_path)
    assert settings.renew_remaining_fraction == 0.25
    assert settings.directory_url.startswith("https://acme-v02.api.letsencrypt.org/")
    for inventory in ("lab", "production"):
        load_settings(ROOT / "inventories" / inventory)


# --- pebble (integration) --------------------------------------------------------------------


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def edge_of(node: Node) -> Edge:
    return Edge(name=node.address, url=node.edge.admin_url)


def acme_tenant(tenant_id: str, domains: list[str]) -> dict:
    t = tenant(tenant_id, domains, "127.0.0.1:1")
    t["tls"] = {"certificate": "acme", "cert_file": None, "key_vault": None}
    return t


@pytest.mark.integration
def test_pebble_issues_through_every_edge_and_a_second_run_does_nothing(
    make_node: Callable[..., Node], make_pebble: Callable[[int], Pebble], tmp_path: Path
) -> None:
    # Two edges (two regions): pebble's validator reaches the first one only (every name
    # resolves to it), and the second must have been given the token all the same.
    http_port = free_port()
    first = make_node(
        "eu", listen=f"127.0.0.1:{http_port}", https_listen=f"127.0.0.1:{free_port()}"
    )
    second = make_node("us", https_listen=f"127.0.0.1:{free_port()}")
    edges = [edge_of(first), edge_of(second)]
    pebble = make_pebble(http_port)
    settings = AcmeSettings(
        directory_url=pebble.directory_url,
        ca_bundle=pebble.listener_ca,
        contact=["mailto:ops@cdn.test"],
        state_dir=tmp_path / "controller",
    )
    published: list[str] = []
    wanted = wanted_certificates(
        {"shop": acme_tenant("shop", ["shop.test", "www.shop.test", "*.img.shop.test"])}, tmp_path
    )
    masters = [first.edge.master_pid, second.edge.master_pid]

    report = converge(wanted, settings, edges, ADMIN_TOKEN)
    assert report.ok, report
    assert report.issued == ["shop"]
    assert [(e.set, e.removed) for e in report.edges] == [(["shop"], []), (["shop"], [])]
    root = pebble.issuing_root()
    for node in (first, second):
        for name in ("shop.test", "www.shop.test"):
            cert = verified_leaf(node, name, root)
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            assert sorted(san.value.get_values_for_type(x509.DNSName)) == [
                "shop.test",
                "www.shop.test",
            ]
        # The tokens are withdrawn once the order is done.
        log = (node.edge.prefix / "logs" / "access.log").read_text()
        published += [line for line in log.splitlines() if "acme-challenge" in line]
    assert published, "pebble never fetched a challenge from the first edge"
    assert all('"status":200' in line for line in published)
    assert [first.edge.master_pid, second.edge.master_pid] == masters

    store = settings.state_dir
    assert store.stat().st_mode & 0o777 == 0o700
    for path in store.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    key_before = (store / "shop.key").read_bytes()

    again = converge(wanted, settings, edges, ADMIN_TOKEN)
    assert again.ok and again.issued == []
    assert [t.decision.action for t in again.tenants] == ["keep"]
    assert [(e.set, e.removed) for e in again.edges] == [([], []), ([], [])]
    assert (store / "shop.key").read_bytes() == key_before
    rows = status(wanted, settings)
    assert [(r.tenant, r.decision.action) for r in rows] == [("shop", "keep")]

    # A tenant that stops wanting a certificate loses it on every edge.
    gone = converge([], settings, edges, ADMIN_TOKEN)
    assert [(e.set, e.removed) for e in gone.edges] == [([], ["shop"]), ([], ["shop"])]


@pytest.mark.integration
def test_an_edge_that_cannot_take_the_token_fails_the_order_and_backs_off(
    make_node: Callable[..., Node], make_pebble: Callable[[int], Pebble], tmp_path: Path
) -> None:
    node = make_node("eu", https_listen=f"127.0.0.1:{free_port()}")
    pebble = make_pebble(port_of(node.address))
    down = Edge(name="down", url=f"http://127.0.0.1:{free_port()}")
    settings = AcmeSettings(
        directory_url=pebble.directory_url,
        ca_bundle=pebble.listener_ca,
        state_dir=tmp_path / "controller",
        backoff_initial=3600,
    )
    wanted = wanted_certificates({"shop": acme_tenant("shop", ["shop.test"])}, tmp_path)
    now = time.time()

    report = converge(wanted, settings, [edge_of(node), down], ADMIN_TOKEN, now=lambda: now)
    assert not report.ok
    assert "publishing the HTTP-01 token failed on 1 of 2 edge(s): down" in str(
        report.tenants[0].error
    )
    failures = json.loads((settings.state_dir / "shop.json").read_text())
    assert failures["count"] == 1 and failures["next_attempt"] == now + 3600
    # Never a hot loop: the next run does not go to the CA before the back-off is over.
    again = converge(wanted, settings, [edge_of(node)], ADMIN_TOKEN, now=lambda: now + 60)
    assert again.tenants[0].decision.action == "wait"
    assert again.issued == []
    later = converge(wanted, settings, [edge_of(node)], ADMIN_TOKEN, now=lambda: now + 3601)
    assert later.ok and later.issued == ["shop"]
    assert not (settings.state_dir / "shop.json").exists()


@pytest.mark.integration
def test_custom_certificate_is_deployed_as_given(
    make_node: Callable[..., Node], tmp_path: Path
) -> None:
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    node = make_node("eu", https_listen=f"127.0.0.1:{free_port()}")
    cert, key = self_signed_pem(["brand.test"], days=30)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "brand.pem").write_bytes(cert)
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(b"vault-pass"))])
    t = tenant("brand", ["brand.test"], "127.0.0.1:1")
    t["tls"] = {
        "certificate": "custom",
        "cert_file": "certs/brand.pem",
        "key_vault": vault.encrypt(key.decode()).decode(),
    }
    wanted = wanted_certificates({"brand": t}, tmp_path)
    settings = AcmeSettings(state_dir=tmp_path / "controller")

    report = converge(wanted, settings, [edge_of(node)], ADMIN_TOKEN, vault_secret="vault-pass")
    assert report.ok, report
    served = node.admin.get("/certificates").json()["certificates"]["brand"]
    assert served["fingerprint"] == hashlib.sha256(cert + b"\n" + key).hexdigest()
    assert served["names"] == ["brand.test"]
    assert not list(settings.state_dir.glob("brand*"))  # custom keys stay in the repo's vault

    # A certificate that cannot be read now is left as the edges serve it, not removed.
    missing = converge(wanted, settings, [edge_of(node)], ADMIN_TOKEN)
    assert "vault password" in str(missing.tenants[0].error)
    assert missing.tenants[0].decision == Decision("keep", "custom certificate")
    assert [(e.set, e.removed) for e in missing.edges] == [([], [])]


@pytest.mark.integration
def test_the_playbook_issues_once_then_reports_no_change(
    make_node: Callable[..., Node], make_pebble: Callable[[int], Pebble], tmp_path: Path
) -> None:
    node = make_node("eu", https_listen=f"127.0.0.1:{free_port()}")
    pebble = make_pebble(port_of(node.address))
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    edge_host = {
        "cdn_private_address": "127.0.0.1",
        "cdn_admin_api_port": port_of(node.edge.settings.admin_listen),
    }
    (inventory / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {"edge": {"hosts": {"eu-edge-1": edge_host}}}}})
    )
    (inventory / "group_vars" / "all" / "certificates.yml").write_text(
        yaml.safe_dump(
            {
                "cdn_acme": {
                    "directory_url": pebble.directory_url,
                    "ca_bundle": str(pebble.listener_ca),
                    "state_dir": str(tmp_path / "state"),
                }
            }
        )
    )
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    (tenants / "shop.yaml").write_text(yaml.safe_dump(tenant_doc("shop", domains=["shop.test"])))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(Path(sys.executable).with_name("ansible-playbook")),
                "-i",
                str(inventory),
                "-e",
                f"cdn_tenants_dir={tenants}",
                str(ROOT / "ansible" / "certificates.yml"),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env={
                **os.environ,
                "CDNCTL_ADMIN_TOKEN": ADMIN_TOKEN,
                "ANSIBLE_NOCOLOR": "1",
                "PYTHONPATH": str(ROOT / "src"),
            },
        )

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed=1" in first.stdout
    assert node.admin.get("/certificates").json()["certificates"]["shop"]["names"] == ["shop.test"]
    second = run()
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changed=0" in second.stdout


def test_key_and_ca_paths_may_start_with_home() -> None:
    settings = AcmeSettings(ca_bundle="~/ca.pem", account_key_file="~/acme/account.pem")
    assert settings.ca_bundle == Path.home() / "ca.pem"
    assert settings.account_key_file == Path.home() / "acme" / "account.pem"
