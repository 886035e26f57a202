"""The edge's per-tenant origin status counters, read from a real edge's admin /metrics."""

from __future__ import annotations

import time

from cdnctl.bundle.synthetic import make_bundle, tenant
from tests.edge.test_hit_path import samples


def test_origin_answers_are_counted_per_tenant_and_status(make_node, make_origin) -> None:
    node = make_node("edge", workers=1)
    origin = make_origin("o")
    for path, status in (("/denied", 401), ("/forbidden", 403), ("/teapot", 418), ("/down", 503)):
        origin.behave(path, status=status, cache_control="no-store")
    down = make_origin("gone")
    bundle = make_bundle(
        tenant("o", ["o.test"], origin.address),
        tenant("gone", ["gone.test"], down.address),
    )
    assert node.apply(bundle).status_code == 200
    down.stop()

    for path in ("/ok", "/ok", "/denied", "/denied", "/forbidden", "/teapot", "/down"):
        node.get("o.test", path)
    assert node.get("gone.test", "/x").status_code == 502
    node.get("nobody.test", "/x")

    time.sleep(1.2)  # workers flush their counters every second
    origin_lines = {k: v for k, v in samples(node.metrics()).items() if "origin_responses" in k}
    # The HIT of /ok asked no origin; 418 is not a code of its own (bounded series): its class.
    assert origin_lines == {
        'cdn_origin_responses_total{tenant="gone",status="502"}': 1,
        'cdn_origin_responses_total{tenant="o",status="200"}': 1,
        'cdn_origin_responses_total{tenant="o",status="401"}': 2,
        'cdn_origin_responses_total{tenant="o",status="403"}': 1,
        'cdn_origin_responses_total{tenant="o",status="4xx"}': 1,
        'cdn_origin_responses_total{tenant="o",status="503"}': 1,
    }
