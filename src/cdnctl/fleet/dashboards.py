"""The Grafana dashboards "CDN overview" and "Tenant detail", typed with grafana-foundation-sdk.

Dashboards are code: the SDK's typed builders make the JSON (so it has Grafana's dashboard
structure by construction), `cdnctl dashboards` writes it and roles/grafana provisions it.
Nobody edits the JSON. Queries read the recording rules of templates/prometheus/rules.yml.j2
where one exists; every query of every panel runs against a real Prometheus in the tests
(tests/monitoring/test_live_prometheus.py).

Grafana gets one Prometheus datasource per region (uid `cdn-prometheus-<region>`, see
templates/grafana/datasources.yml.j2). Fleet-wide panels use Grafana's built-in Mixed
datasource with one query per region; region rows use that region's datasource.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

from cdnctl.fleet.monitoring import GENERATED, ansible_environment

MIXED = DataSourceRef(type_val="datasource", uid="-- Mixed --")
SELECTED = DataSourceRef(type_val="prometheus", uid="${datasource}")
TOP = 10  # tenants in the "top tenants" panels
OVERVIEW_UID = "cdn-overview"
TENANT_UID = "cdn-tenant"
# What the dashboards promise: these must show data once an edge served traffic.
CORE_PANELS = frozenset(
    {
        "Requests/s",
        "Cache hit ratio",
        "Bandwidth",
        "5xx ratio",
        "Origin p95",
        "Active tenants",
        "Top tenants by traffic",
        "Cache status mix",
        "Bundle version per edge",
        "Origin status codes",
        "Origin latency",
        "Purges",
    }
)


def datasource_uid(region: str) -> str:
    return f"cdn-prometheus-{region}"


def region_datasource(region: str) -> DataSourceRef:
    return DataSourceRef(type_val="prometheus", uid=datasource_uid(region))


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    table: bool = False  # an instant query in table format (one row per series)


@dataclass(frozen=True)
class Figure:
    """One panel: its title, Grafana unit and queries; `{sel}` stands for the label matchers."""

    title: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or stat, table, bargauge
    description: str = ""
    additive: bool = False  # regions add up (stacked in fleet panels); ratios do not


def _figure(title: str, unit: str, expr: str, legend: str = "", **kwargs: Any) -> Figure:
    return Figure(title, unit, (Query(expr, legend),), **kwargs)


# The six figures of the product's dashboards, per region (one series per region).
REGION_FIGURES = (
    _figure(
        "Requests/s",
        "reqps",
        "sum by (region) (region:cdn_requests:rate5m)",
        "{{region}}",
        additive=True,
    ),
    _figure(
        "Cache hit ratio",
        "percentunit",
        "sum by (region) (region:cdn_cache_hit:ratio_rate5m)",
        "{{region}}",
        description="Served from cache (HIT, STALE, UPDATING, REVALIDATED) of cacheable requests.",
    ),
    _figure(
        "Bandwidth",
        "Bps",
        "sum by (region) (region:cdn_response_bytes:rate5m)",
        "{{region}}",
        additive=True,
    ),
    _figure(
        "5xx ratio",
        "percentunit",
        "sum by (region) (region:cdn_requests_5xx:ratio_rate5m)",
        "{{region}}",
    ),
    _figure(
        "Origin p95",
        "s",
        "sum by (region) (region:cdn_origin_response_seconds:p95_rate5m)",
        "{{region}}",
        description="95th percentile of the time the edges wait for the next tier (shield or "
        "origin) on a cache miss.",
    ),
    _figure(
        "Active tenants",
        "short",
        "sum by (region) (region:cdn_active_tenants:count)",
        "{{region}}",
        description="Tenants with traffic in the last 5 minutes.",
    ),
)

# Per region, what the edges do: the tenants with most traffic, cache status, bundles.
EDGE_FIGURES = (
    Figure(
        "Top tenants by traffic",
        "reqps",
        (Query(f"topk({TOP}, tenant_region:cdn_requests:rate5m)", "{{tenant}}", table=True),),
        kind="bargauge",
    ),
    _figure(
        "Top tenants by bandwidth",
        "Bps",
        f"topk({TOP}, tenant_region:cdn_response_bytes:rate5m)",
        "{{tenant}}",
    ),
    _figure(
        "Cache status mix",
        "reqps",
        'sum by (cache_status) (rate(cdn_requests_total{job="cdn_edge", role="edge"}'
        "[$__rate_interval]))",
        "{{cache_status}}",
    ),
    Figure(
        "Bundle version per edge",
        "short",
        (Query('cdn_config_info{job="cdn_edge"}', "{{host}}", table=True),),
        kind="table",
        description="The bundle each edge and shield runs (CdnConfigDrift fires when one "
        "differs from the region's for 10 minutes).",
    ),
    _figure(
        "Edges up",
        "short",
        'sum by (role) (up{job="cdn_edge"})',
        "{{role}}",
    ),
)

# One tenant ($tenant), in the region of the selected datasource.
TENANT_FIGURES = (
    _figure(
        "Requests/s",
        "reqps",
        'tenant_region:cdn_requests:rate5m{tenant="$tenant"}',
        "{{region}}",
        additive=True,
    ),
    _figure(
        "Cache hit ratio",
        "percentunit",
        'tenant_region:cdn_cache_hit:ratio_rate5m{tenant="$tenant"}',
        "{{region}}",
    ),
    _figure(
        "Bandwidth",
        "Bps",
        'tenant_region:cdn_response_bytes:rate5m{tenant="$tenant"}',
        "{{region}}",
        additive=True,
    ),
    _figure(
        "5xx ratio",
        "percentunit",
        'tenant_region:cdn_requests_5xx:ratio_rate5m{tenant="$tenant"}',
        "{{region}}",
    ),
    Figure(
        "Origin latency",
        "s",
        tuple(
            Query(
                f'tenant_region:cdn_origin_response_seconds:p{q}_rate5m{{tenant="$tenant"}}',
                f"p{q} {{{{region}}}}",
            )
            for q in (50, 95, 99)
        ),
    ),
    _figure(
        "Origin status codes",
        "reqps",
        'sum by (status) (tenant_region_status:cdn_origin_responses:rate5m{tenant="$tenant"})',
        "{{status}}",
        description="Answers of the next tier (shield or origin); 401/403 mean the origin rejects "
        "the CDN's credentials (CdnOriginAuthFailures).",
    ),
    _figure(
        "Cache status mix",
        "reqps",
        'sum by (cache_status) (rate(cdn_requests_total{job="cdn_edge", role="edge", '
        'tenant="$tenant"}[$__rate_interval]))',
        "{{cache_status}}",
    ),
    _figure(
        "Status classes",
        "reqps",
        'sum by (status_class) (rate(cdn_requests_total{job="cdn_edge", role="edge", '
        'tenant="$tenant"}[$__rate_interval]))',
        "{{status_class}}",
    ),
    _figure(
        "Stale copies served",
        "reqps",
        'tenant_region:cdn_stale_responses:rate5m{tenant="$tenant"}',
        "{{region}}",
        description="stale-if-error at work: the origin does not answer (CdnOriginUnreachable).",
    ),
    _figure(
        "Purges",
        "short",
        'sum by (kind) (tenant_region_kind:cdn_purges:increase1h{tenant="$tenant"})',
        "{{kind}}",
        description="Purge history: purge requests of the previous hour by kind (url, prefix, "
        "tag, all), from cdn_purges_total; a purge sent to every edge counts once.",
    ),
    _figure(
        "Certificate expires in",
        "s",
        'min(cdn_certificate_expiry_timestamp_seconds{job="cdn_edge", tenant="$tenant"}) - time()',
        kind="stat",
    ),
)


def _target(query: Query, ref_id: str, datasource: DataSourceRef) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(query.expr).ref_id(ref_id).datasource(datasource)
    if query.table:
        return target.instant().format("table")
    return target.legend_format(query.legend).range()


def _legend() -> VizLegendOptions:
    return (
        VizLegendOptions()
        .show_legend(True)
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
    )


def _last() -> ReduceDataOptions:
    return ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def _visualisation(kind: str) -> Any:
    """An empty panel of `kind` with its display options set."""
    if kind == "timeseries":
        return timeseries.Panel().legend(_legend())
    if kind == "stat":
        return stat.Panel().reduce_options(_last())
    if kind == "bargauge":
        return bargauge.Panel().reduce_options(_last()).orientation(VizOrientation.HORIZONTAL)
    return table.Panel().show_header(True)


def _panel(figure: Figure, datasource: DataSourceRef, width: int = 8) -> Any:
    panel = _visualisation(figure.kind).title(figure.title).unit(figure.unit)
    panel = panel.datasource(datasource)
    if figure.description:
        panel = panel.description(figure.description)
    for index, query in enumerate(figure.queries):
        panel = panel.with_target(_target(query, chr(ord("A") + index), datasource))
    return panel.height(8).span(width)


def _fleet_panel(figure: Figure, regions: Sequence[str]) -> Any:
    """`figure` for every region at once: the Mixed datasource, one query per region."""
    panel = _visualisation("timeseries").title(f"{figure.title}, all regions")
    panel = panel.unit(figure.unit).datasource(MIXED)
    if figure.additive:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL))
    (query,) = figure.queries
    for index, region in enumerate(regions):
        ref_id = chr(ord("A") + index)
        panel = panel.with_target(_target(query, ref_id, region_datasource(region)))
    return panel.height(8).span(8)


def _base(title: str, uid: str, tags: list[str]) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["cdnctl", *tags])
        .refresh("1m")
        .time("now-3h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
    )


def overview(regions: Sequence[str]) -> dict[str, Any]:
    """The "CDN overview" dashboard: fleet-wide panels (all regions), then a row per region."""
    board = _base("CDN overview", OVERVIEW_UID, ["overview"])
    board = board.with_row(dashboard.Row("Fleet (all regions)"))
    for figure in REGION_FIGURES:
        board = board.with_panel(_fleet_panel(figure, regions))
    for region in regions:
        board = board.with_row(dashboard.Row(f"Region {region}"))
        for figure in (*REGION_FIGURES, *EDGE_FIGURES):
            board = board.with_panel(_panel(figure, region_datasource(region)))
    board = board.link(
        dashboard.DashboardLink("Tenant detail").url(f"/d/{TENANT_UID}").include_vars(False)
    )
    return _json(board)


def tenant_detail(regions: Sequence[str]) -> dict[str, Any]:
    """The "Tenant detail" dashboard: one tenant ($tenant) in the region picked with $datasource."""
    board = _base("Tenant detail", TENANT_UID, ["tenant"])
    board = board.with_variable(
        dashboard.DatasourceVariable("datasource")
        .label("Region")
        .type("prometheus")
        .regex("Prometheus .*")
    )
    board = board.with_variable(
        dashboard.QueryVariable("tenant")
        .label("Tenant")
        .datasource(SELECTED)
        .query("label_values(tenant_region:cdn_requests:rate5m, tenant)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    board = board.with_row(dashboard.Row("Tenant $tenant, all regions"))
    for figure in TENANT_FIGURES[:3]:
        board = board.with_panel(_fleet_panel(figure, regions))
    board = board.with_row(dashboard.Row("Tenant $tenant in region ${datasource}"))
    for figure in TENANT_FIGURES:
        board = board.with_panel(_panel(figure, SELECTED))
    board = board.link(
        dashboard.DashboardLink("CDN overview").url(f"/d/{OVERVIEW_UID}").include_vars(False)
    )
    return _json(board)


def _json(board: dashboard.Dashboard) -> dict[str, Any]:
    document = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    # Grafana tells panels apart by id (links, panel view): number them in layout order.
    for number, panel in enumerate(panels(document), start=1):
        panel["id"] = number
    return document


def dashboards(regions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every dashboard by file name."""
    if not regions:
        raise ValueError("no regions: the dashboards need one Prometheus datasource per region")
    regions = sorted(regions)
    return {"cdn-overview.json": overview(regions), "cdn-tenant.json": tenant_detail(regions)}


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def render_datasources(
    hostvars: dict[str, dict[str, Any]], groups: dict[str, list[str]], scrape_interval: str
) -> str:
    """Grafana's datasource provisioning file (templates/grafana/datasources.yml.j2)."""
    template = ansible_environment("grafana").get_template("datasources.yml.j2")
    return template.render(
        hostvars=hostvars,
        groups=groups,
        scrape_interval=scrape_interval,
        ansible_managed=GENERATED.replace("prometheus", "grafana"),
    )


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows included, panels inside collapsed rows too."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
