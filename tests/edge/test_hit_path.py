"""The cache-HIT hot path: headers, metrics and the (optionally buffered) access log."""

from __future__ import annotations

import json
import re
import time

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.edge.nginx_conf import NodeSettings, render

BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"]


def samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_hit_miss_bypass_and_own_answers(make_node, make_origin):
    node = make_node("edge", workers=1)
    origin = make_origin("h")
    bundle = make_bundle(tenant("h", ["h.test"], origin.address, methods=["GET", "HEAD", "POST"]))
    assert node.apply(bundle).status_code == 200

    miss = node.get("h.test", "/a")
    hit = node.get("h.test", "/a")
    # Another path: a POST to /a would invalidate it (RFC 9111 §4.4).
    bypass = node.request("POST", "h.test", "/form", content=b"x")
    unknown = node.get("nobody.test", "/a")
    refused = node.request("DELETE", "h.test", "/a")

    assert miss.headers["X-Cache-Status"] == "MISS" and "Age" not in miss.headers
    assert hit.headers["X-Cache-Status"] == "HIT" and int(hit.headers["Age"]) >= 0
    assert hit.content == miss.content
    assert bypass.headers["X-Cache-Status"] == "BYPASS" and "Age" not in bypass.headers
    for response in (unknown, refused):
        assert "X-Cache-Status" not in response.headers and "Age" not in response.headers
    assert (unknown.status_code, refused.status_code) == (404, 405)
    assert origin.count("/a") == origin.count("/form") == 1  # the MISS and the POST

    time.sleep(1.2)  # workers flush their counters every second
    text = node.metrics()
    got = samples(text)
    requests = {k: v for k, v in got.items() if k.startswith("cdn_requests_total")}
    assert requests == {
        'cdn_requests_total{tenant="h",status_class="2xx",cache_status="MISS"}': 1,
        'cdn_requests_total{tenant="h",status_class="2xx",cache_status="HIT"}': 1,
        'cdn_requests_total{tenant="h",status_class="2xx",cache_status="BYPASS"}': 1,
        'cdn_requests_total{tenant="h",status_class="4xx",cache_status="NONE"}': 1,
        'cdn_requests_total{tenant="_unknown",status_class="4xx",cache_status="NONE"}': 1,
    }
    assert got['cdn_response_bytes_total{tenant="h"}'] >= 2 * len(miss.content)
    # Only the two answers fetched upstream have an origin time: the HIT has none.
    assert got['cdn_origin_response_seconds_count{tenant="h"}'] == 2
    assert got['cdn_origin_response_seconds_bucket{tenant="h",le="+Inf"}'] == 2
    assert got['cdn_origin_response_seconds_bucket{tenant="h",le="10"}'] == 2
    assert got['cdn_origin_response_seconds_sum{tenant="h"}'] >= 0
    les = re.findall(r'cdn_origin_response_seconds_bucket\{tenant="h",le="([^"]+)"\}', text)
    assert les == [*BUCKETS, "+Inf"]
    assert "_unknown" not in "".join(k for k in got if "origin_response" in k)

    node.get("h.test", "/a")
    time.sleep(1.2)
    again = samples(node.metrics())
    assert again['cdn_requests_total{tenant="h",status_class="2xx",cache_status="HIT"}'] == 2
    assert again['cdn_origin_response_seconds_count{tenant="h"}'] == 2


def test_access_log_buffer_renders(tmp_path):
    def access_log(**kwargs) -> list[str]:
        settings = NodeSettings(prefix=tmp_path, admin_token="x" * 16, **kwargs)
        return [line.strip() for line in render(settings).splitlines() if "access.log" in line]

    assert access_log() == [f"access_log {tmp_path}/logs/access.log cdn_json;"]
    assert access_log(access_log_buffer="64k") == [
        f"access_log {tmp_path}/logs/access.log cdn_json buffer=64k flush=1s;"
    ]


def test_buffered_access_log_is_written_within_a_second(make_node, make_origin):
    node = make_node("edge", workers=1, access_log_buffer="64k")
    origin = make_origin("b")
    assert node.apply(make_bundle(tenant("b", ["b.test"], origin.address))).status_code == 200
    node.get("b.test", "/x", headers={"X-Request-ID": "buf-1"})
    node.get("b.test", "/x", headers={"X-Request-ID": "buf-2"})
    deadline = time.monotonic() + 5
    entries: list[dict] = []
    while time.monotonic() < deadline:
        entries = [json.loads(line) for line in node.edge.access_log.read_text().splitlines()]
        if len(entries) >= 2:
            break
        time.sleep(0.1)
    by_id = {e["request_id"]: e for e in entries}
    assert by_id["buf-1"]["cache_status"] == "MISS"
    assert by_id["buf-2"]["cache_status"] == "HIT"
    assert by_id["buf-2"]["tenant"] == "b"
