"""Talking to running edges and shields through their admin API (see DESIGN.md).

`GET /health`, `GET /config`, `GET /config/manifest`, `POST /config` (bundle),
`POST /config/delta` (delta),
`POST /purge`, `GET|POST /certificates`, `POST /acme-challenges`, all with
`Authorization: Bearer <token>`. Calls to many edges fan out in parallel threads and
every edge gets its own result: one unreachable edge never hides the others.
"""

from __future__ import annotations

import functools
import os
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TOKEN_ENV = "CDNCTL_ADMIN_TOKEN"
DEFAULT_ADMIN_PORT = 9145
# How long an edge may take to answer a bundle or delta it is sent (as the tenants
# playbook's push, ansible/tasks/push_bundle.yml): it answers once the apply is done, and
# an all-new apply of 1M tenants takes about a minute (README, Performance).
APPLY_TIMEOUT = 300.0


class EdgeError(RuntimeError):
    """An edge answered with an error (`status`), or could not be reached (status None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Edge:
    name: str
    url: str  # admin base URL, e.g. http://10.0.0.5:9145


@dataclass
class EdgeResult:
    edge: Edge
    ok: bool
    seconds: float
    detail: dict[str, Any] | None = None
    error: str | None = None


def read_token(token_file: Path | None) -> str:
    """The admin token: from --token-file, else $CDNCTL_ADMIN_TOKEN."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenError(f"cannot read token file {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise TokenError(
            f"no admin token: set {TOKEN_ENV} or pass --token-file with the edges' admin token"
        )
    return token


def edges_from_urls(urls: Sequence[str]) -> list[Edge]:
    edges = []
    for url in urls:
        parsed = httpx.URL(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"--edge {url!r}: expected an admin base URL like http://HOST:PORT")
        edges.append(Edge(name=parsed.netloc.decode(), url=str(parsed).rstrip("/")))
    return edges


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings of every client this process opens (httpx's defaults: certifi's CAs,
    SSL_CERT_FILE/SSL_CERT_DIR honoured), built once: building one costs about 35 ms of CPU
    under the GIL, more than a whole admin call to a nearby edge, and a fleet-wide call
    opens a client per edge."""
    return httpx.create_ssl_context()


class AdminClient:
    """One edge's admin API."""

    def __init__(self, edge: Edge, token: str, timeout: float = 30.0) -> None:
        self.edge = edge
        self._timeout = timeout
        self._client = httpx.Client(
            base_url=edge.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=5.0),
            verify=tls_context(),
        )

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EdgeError(f"{self.edge.url}: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise EdgeError(
                f"HTTP {response.status_code}: {message or response.reason_phrase}",
                response.status_code,
            )
        return body if isinstance(body, dict) else {"result": body}

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def running_config(self) -> dict[str, Any]:
        return self._call("GET", "/config")

    def running_manifest(self) -> bytes | None:
        """The manifest of the bundle the edge runs (format.py), None if it has none."""
        try:
            response = self._client.get("/config/manifest")
        except httpx.HTTPError as exc:
            raise EdgeError(f"{self.edge.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise EdgeError(
                f"HTTP {response.status_code}: GET /config/manifest", response.status_code
            )
        return response.content

    def metrics(self) -> str:
        """`GET /metrics`: the edge's Prometheus text."""
        try:
            response = self._client.get("/metrics")
        except httpx.HTTPError as exc:
            raise EdgeError(f"{self.edge.url}/metrics: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise EdgeError(
                f"{self.edge.url}/metrics: HTTP {response.status_code}", response.status_code
            )
        return response.text

    def running_tenants(self) -> dict[str, Any]:
        """{"version", "tenants": {id: digest}} of what the edge serves."""
        return self._call("GET", "/config/tenants")

    def push_bundle(self, bundle: bytes, commit: str | None = None) -> dict[str, Any]:
        return self._post_config("/config", bundle, commit)

    def push_delta(self, delta: bytes, commit: str | None = None) -> dict[str, Any]:
        """POST /config/delta: EdgeError with status 409 when the edge does not run the
        delta's base (send the full bundle then)."""
        return self._post_config("/config/delta", delta, commit)

    def _post_config(self, path: str, body: bytes, commit: str | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if commit:
            headers["X-Cdnctl-Commit"] = commit
        timeout = httpx.Timeout(self._timeout, connect=5.0, read=max(self._timeout, APPLY_TIMEOUT))
        return self._call("POST", path, content=_chunks(body), headers=headers, timeout=timeout)

    def purge(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/purge", json=request)

    def certificates(self) -> dict[str, Any]:
        """{tenant: {names, not_before, not_after, fingerprint}} the edge serves."""
        return self._call("GET", "/certificates")["certificates"]

    def set_certificates(self, items: list[dict[str, str]], remove: list[str]) -> dict[str, Any]:
        """Add or replace ({tenant, cert, key} PEM) and remove, as one validated change."""
        return self._call("POST", "/certificates", json={"set": items, "remove": remove})

    def acme_challenges(
        self, set_: dict[str, str] | None = None, remove: list[str] | None = None, ttl: int = 600
    ) -> dict[str, Any]:
        """Publish HTTP-01 tokens ({token: key authorization}) or withdraw them."""
        body = {"set": set_ or {}, "remove": remove or [], "ttl": ttl}
        return self._call("POST", "/acme-challenges", json=body)


SEND_CHUNK = 1 << 20


def _chunks(data: bytes) -> Iterator[memoryview]:
    """The body in 1 MiB views: httpx sends one 100 MB bytes object about twice as slowly."""
    view = memoryview(data)
    for start in range(0, len(data), SEND_CHUNK):
        yield view[start : start + SEND_CHUNK]


def fan_out(
    edges: Sequence[Edge],
    token: str,
    action: Callable[[AdminClient], dict[str, Any]],
    *,
    timeout: float = 30.0,
) -> list[EdgeResult]:
    """Run `action` against every edge in parallel; results in the order of `edges`."""

    def one(edge: Edge) -> EdgeResult:
        start = time.perf_counter()
        try:
            with AdminClient(edge, token, timeout) as client:
                detail = action(client)
            return EdgeResult(edge, True, time.perf_counter() - start, detail)
        except EdgeError as exc:
            return EdgeResult(edge, False, time.perf_counter() - start, error=str(exc))

    if not edges:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(edges))) as pool:
        return list(pool.map(one, edges))
