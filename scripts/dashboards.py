#!/usr/bin/env python3
"""Generates the Grafana dashboards in dashboards/ from the panel lists below: one source, so
every dashboard has the same variables, rows, annotations and selectors.

    scripts/dashboards.py          # writes dashboards/tierd-*.json
    scripts/dashboards.py --check  # fails if a committed dashboard differs from what it generates

Every query selects `job=~"$job",instance=~"$instance"` (and `route=~"$route"` on per-route
panels) and every datasource is `${datasource}`: no datasource uid or job name is hard-coded, so
the dashboards import into any Grafana whatever its Prometheus is called and whatever job
scrapes tierd. In the expressions below, `SEL` stands for that selector and `RSEL` for it with
the route.
"""

import argparse
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job",instance=~"$instance"'
RSEL = SEL + ',route=~"$route"'
RATE = "[$__rate_interval]"

# Hits: answered from storage (fresh, stale or collapsed); cacheable: GET/HEAD not refused.
HITS = 'cache_status=~"hit|stale_while_revalidate|stale_if_error|stale_origin_limited|collapsed"'
CACHEABLE = 'method=~"GET|HEAD",cache_status!~"rate_limited|rejected"'


def q(expr, legend, **extra):
    """A query; `SEL`/`RSEL` in `expr` become the dashboard's selectors."""
    t = {"expr": expr.replace("RSEL", RSEL).replace("SEL", SEL), "legendFormat": legend}
    t.update(extra)
    return t


def P(title, desc, unit, *targets, kind="timeseries", w=12, h=8, lo=None, hi=None,
      thresholds=None, stack=False):
    """A panel. `thresholds`: [(value, color)] from the lowest; drawn as lines on time series."""
    return dict(title=title, desc=desc, unit=unit, targets=list(targets), kind=kind, w=w, h=h,
                lo=lo, hi=hi, thresholds=thresholds, stack=stack)


def ROW(title):
    return {"row": title}


GOOD_HIGH = [(None, "red"), (0.5, "orange"), (0.8, "green")]
BAD_HIGH = [(None, "green"), (0.8, "orange"), (0.95, "red")]

# Panels on more than one dashboard.
ORIGIN_CONNECTIONS = P(
    "Origin connections", "Requests sent to the origin and not answered yet, against the pool's "
    "limit (upstream.max_connections x workers): at the limit, misses queue for a connection.",
    "short",
    q("sum by (instance) (tierd_origin_requests_in_flight{SEL})", "{{instance}} in flight"),
    q("sum by (instance) (tierd_origin_connections_max{SEL})", "{{instance}} limit"), w=8, lo=0)
REDIS_CONNECTIONS = P(
    "Redis connections", "Connections L2 holds open to Redis against tiers.l2.pool_size, and "
    "commands waiting for Redis's answer.", "short",
    q("sum by (instance) (tierd_tier_connections{SEL,tier=\"l2\"})", "{{instance}} open"),
    q("sum by (instance) (tierd_tier_connections_max{SEL,tier=\"l2\"})", "{{instance}} pool size"),
    q("sum by (instance) (tierd_tier_operations_in_flight{SEL,tier=\"l2\"})",
      "{{instance}} commands in flight"), w=8, lo=0)

OVERVIEW = [
    ROW("Requests"),
    P("Requests per second", "All requests answered by the gateways.", "reqps",
      q("sum(rate(tierd_requests_total{SEL}" + RATE + "))", "req/s"), kind="stat", w=6, h=5),
    P("Error ratio", "Requests answered 5xx, of all requests: the client-facing SLO (99.9%) "
      "the burn-rate alerts watch.", "percentunit",
      # `or vector(0)`: no 5xx at all is a ratio of 0, not "no data".
      q("(sum(rate(tierd_requests_total{SEL,status_class=\"5xx\"}" + RATE + ")) or vector(0)) / "
        "sum(rate(tierd_requests_total{SEL}" + RATE + "))", "5xx ratio"),
      kind="stat", w=6, h=5, lo=0, thresholds=[(None, "green"), (0.001, "orange"), (0.01, "red")]),
    P("Latency p99", "99th percentile of the time to the response head, over all requests.", "s",
      q("histogram_quantile(0.99, sum by (le) (rate(tierd_request_duration_seconds_bucket{SEL}"
        + RATE + ")))", "p99"),
      kind="stat", w=6, h=5, thresholds=[(None, "green"), (0.25, "orange"), (1, "red")]),
    P("Nodes", "tierd processes scraped, and the build each runs.", "short",
      q("tierd_build_info{SEL}", "{{instance}} {{version}} {{revision}}", instant=True,
        range=False, format="table"),
      kind="table", w=6, h=5),
    P("Requests by cache status", "Request rate per cache status (hit, miss, stale, pass, error...).",
      "reqps", q("sum by (cache_status) (rate(tierd_requests_total{SEL}" + RATE + "))",
                 "{{cache_status}}"), stack=True),
    P("Responses by status class and method", "Request rate per status class and method, after 304s.",
      "reqps", q("sum by (status_class, method) (rate(tierd_requests_total{SEL}" + RATE + "))",
                 "{{method}} {{status_class}}")),
    P("Latency p50 by cache status", "Median time to the response head.", "s",
      q("histogram_quantile(0.5, sum by (le, cache_status) (rate(tierd_request_duration_seconds_bucket{SEL}"
        + RATE + ")))", "{{cache_status}}"), w=8),
    P("Latency p99 by cache status", "99th percentile of the time to the response head.", "s",
      q("histogram_quantile(0.99, sum by (le, cache_status) (rate(tierd_request_duration_seconds_bucket{SEL}"
        + RATE + ")))", "{{cache_status}}"), w=8),
    P("Latency distribution", "Requests per latency bucket (10 µs to 10 s), every cache status.", "s",
      q("sum by (le) (rate(tierd_request_duration_seconds_bucket{SEL}" + RATE + "))", "{{le}}",
        format="heatmap"), kind="heatmap", w=8),
    P("Requests by route", "Request rate per rule template (other: no rule matched).", "reqps",
      q("sum by (route) (rate(tierd_requests_total{RSEL}" + RATE + "))", "{{route}}")),
    P("Latency p99 by route", "99th percentile of the time to the response head, per rule template.",
      "s", q("histogram_quantile(0.99, sum by (le, route) (rate(tierd_request_duration_seconds_bucket{RSEL}"
             + RATE + ")))", "{{route}}")),
    ROW("Cache effectiveness"),
    P("Hit ratio", "Share of GET/HEAD requests answered from storage (fresh, stale or collapsed); "
      "refused requests are neither.", "percentunit",
      q("sum(rate(tierd_requests_total{SEL,method=~\"GET|HEAD\"," + HITS + "}" + RATE + ")) / "
        "sum(rate(tierd_requests_total{SEL," + CACHEABLE + "}" + RATE + "))", "hit ratio"),
      kind="stat", w=6, h=5, lo=0, hi=1, thresholds=GOOD_HIGH),
    P("Origin offload (bytes)", "Share of body bytes sent to clients that came from the cache.",
      "percentunit",
      q("sum(rate(tierd_response_bytes_total{SEL,source=\"cache\"}" + RATE + ")) / "
        "sum(rate(tierd_response_bytes_total{SEL}" + RATE + "))", "from cache"),
      kind="stat", w=6, h=5, lo=0, hi=1, thresholds=GOOD_HIGH),
    P("Origin offload (requests)", "Share of the requests tierd answered (refused ones left out) "
      "that did not reach the origin.", "percentunit",
      q("1 - sum(rate(tierd_origin_requests_total{SEL}" + RATE + ")) / "
        "sum(rate(tierd_requests_total{SEL,cache_status!~\"rate_limited|rejected\"}" + RATE + "))",
        "offload"),
      kind="stat", w=6, h=5, lo=0, hi=1, thresholds=GOOD_HIGH),
    P("304 Not Modified", "Conditional requests answered with 304.", "reqps",
      q("sum(rate(tierd_not_modified_total{SEL}" + RATE + "))", "304/s"), kind="stat", w=6, h=5),
    P("Answered by", "Where answers came from: a fresh entry in L1, L2 or L3 (each tier is asked "
      "only when the faster ones missed), or the origin.", "reqps",
      q("sum by (tier) (rate(tierd_tier_lookups_total{SEL,outcome=\"hit\"}" + RATE + "))", "{{tier}}"),
      q("sum(rate(tierd_origin_requests_total{SEL}" + RATE + "))", "origin"), stack=True),
    P("Hit ratio by route", "Share of each route's GET/HEAD requests answered from storage.",
      "percentunit",
      q("sum by (route) (rate(tierd_requests_total{RSEL,method=~\"GET|HEAD\"," + HITS + "}" + RATE
        + ")) / sum by (route) (rate(tierd_requests_total{RSEL," + CACHEABLE + "}" + RATE + "))",
        "{{route}}"), lo=0, hi=1),
    P("Hit ratio per tier", "Lookups in each tier that found a fresh entry, over all lookups in "
      "that tier.", "percentunit",
      q("sum by (tier) (rate(tierd_tier_lookups_total{SEL,outcome=\"hit\"}" + RATE + ")) / "
        "sum by (tier) (rate(tierd_tier_lookups_total{SEL}" + RATE + "))", "{{tier}}"), lo=0, hi=1),
    P("Bytes served", "Body bytes per second sent to clients, from the cache and from the origin.",
      "Bps", q("sum by (source) (rate(tierd_response_bytes_total{SEL}" + RATE + "))", "{{source}}"),
      stack=True),
    ROW("Saturation"),
    P("Requests and connections", "Requests in flight (to the response head) and client "
      "connections open, against the listener's limit (server.max_connections x workers).",
      "short",
      q("sum by (instance) (tierd_requests_in_flight{SEL})", "{{instance}} requests in flight"),
      q("sum by (instance) (tierd_connections_open{SEL})", "{{instance}} connections"),
      q("sum by (instance) (tierd_connections_max{SEL})", "{{instance}} connection limit"),
      w=8, lo=0),
    ORIGIN_CONNECTIONS,
    REDIS_CONNECTIONS,
    P("Write queues", "Writes waiting for L2/L3 and journal rows waiting for the journal's writer, "
      "as a share of their queue's capacity: at 1, writes and rows are dropped.", "percentunit",
      q("max by (instance, tier) (tierd_tier_queue_depth{SEL} / tierd_tier_queue_capacity{SEL})",
        "{{instance}} {{tier}}"),
      q("max by (instance) (tierd_journal_queue_depth{SEL} / (tierd_journal_queue_capacity{SEL} > 0))",
        "{{instance}} journal"), w=8, lo=0, hi=1, thresholds=BAD_HIGH),
    P("Tier size", "L1 and L3 bytes held, as a share of their cap (tiers.*.max_bytes): near 1 "
      "they evict to make room.", "percentunit",
      q("max by (instance, tier) (tierd_tier_bytes{SEL} / tierd_tier_max_bytes{SEL})",
        "{{instance}} {{tier}}"), w=8, lo=0, hi=1, thresholds=BAD_HIGH),
    P("File descriptors", "Open fds of each tierd process (sockets included), as a share of its "
      "limit: past it, accepts and origin connects fail.", "percentunit",
      q("max by (instance) (process_open_fds{SEL} / process_max_fds{SEL})", "{{instance}}"),
      w=8, lo=0, hi=1, thresholds=BAD_HIGH),
    P("Memory", "Resident memory of each tierd process.", "bytes",
      q("sum by (instance) (process_resident_memory_bytes{SEL})", "{{instance}}"), w=12, lo=0),
    P("CPU", "CPU seconds per second used by each tierd process (1 = one core).", "percentunit",
      q("sum by (instance) (rate(process_cpu_seconds_total{SEL}" + RATE + "))", "{{instance}}"),
      w=12, lo=0),
    ROW("Rate limiting and hardening"),
    P("Refused requests", "429s by quota (client, rule, origin), requests refused by hardening, by "
      "reason, and requests a dry-run quota would have refused (let through)", "reqps",
      q("sum by (quota) (rate(tierd_rate_limited_total{SEL}" + RATE + "))", "429 {{quota}}"),
      q("sum by (reason) (rate(tierd_requests_rejected_total{SEL}" + RATE + "))", "{{reason}}"),
      q("sum by (quota) (rate(tierd_rate_limit_dry_run_total{SEL}" + RATE + "))",
        "dry run: would be 429 {{quota}}"), w=8, lo=0),
    P("Rate-limit clients", "Clients with a bucket per quota (bounded by rate_limit.max_clients), "
      "and requests sent to the shared overflow bucket", "short",
      q("sum by (quota) (tierd_rate_limit_clients{SEL})", "{{quota}} clients"),
      q("sum by (quota) (rate(tierd_rate_limit_overflow_total{SEL}" + RATE + "))",
        "{{quota}} overflow/s"), w=8, lo=0),
    P("Request headers stripped", "Request headers removed before forwarding, by reason: listed in "
      "cache.strip_request_headers, an underscore in the name, or a forwarding claim from a peer "
      "that is not a trusted proxy.", "ops",
      q("sum by (reason) (rate(tierd_request_headers_stripped_total{SEL}" + RATE + "))", "{{reason}}"),
      w=8, lo=0),
    ROW("Warming"),
    P("Warm fetches", "Fetches by the warmer, by trigger (start, schedule, predict, refresh, purge, "
      "demand) and outcome (fetched, revalidated, from_tier, fresh, not_stored, failed)", "reqps",
      q("sum by (trigger, outcome) (rate(tierd_warm_fetches_total{SEL}" + RATE + "))",
        "{{trigger}} {{outcome}}"), w=8, lo=0),
    P("Warming precision and origin overhead", "Precision: warmed entries a client was served, of "
      "those used or wasted in the last hour (1 = every warm fetch paid). Overhead: the warmer's "
      "share of the requests sent to the origin", "percentunit",
      q("sum(increase(tierd_warm_used_total{SEL}[1h])) / clamp_min(sum(increase(tierd_warm_used_total{SEL}[1h]))"
        " + sum(increase(tierd_warm_wasted_total{SEL}[1h])), 1)", "precision"),
      q("sum(rate(tierd_warm_fetches_total{SEL,outcome=~\"fetched|revalidated\"}" + RATE + ")) / "
        "clamp_min(sum(rate(tierd_origin_requests_total{SEL}" + RATE + ")), 1e-9)", "origin overhead"),
      w=8, lo=0, hi=1),
    P("Warm candidates skipped", "Candidates the warmer did not fetch, by reason: budget (rate, "
      "slots or share of origin traffic), backoff (the origin failed or slowed), busy (clients' "
      "fetches in flight), leased (another node fetches it), queue_full, deadline", "reqps",
      q("sum by (reason) (rate(tierd_warm_skipped_total{SEL}" + RATE + "))", "{{reason}}"), w=8, lo=0),
    P("Warming model", "Predictions the model holds, relearned from the journal every "
      "warming.model_refresh_seconds.", "short",
      q("max by (instance) (tierd_warm_model_transitions{SEL})", "{{instance}} predictions"),
      w=12, h=6, lo=0),
    P("Last warm pass", "When each node's last warm pass ended (1970: none yet).", "dateTimeFromNow",
      q("max by (instance) (tierd_warm_last_pass_timestamp_seconds{SEL}) * 1000", "{{instance}}"),
      kind="stat", w=12, h=6),
]

TIERS = [
    ROW("Lookups"),
    P("Lookups by tier and outcome", "Lookups per second in each tier: hit (fresh), stale, miss, "
      "error.", "ops",
      q("sum by (tier, outcome) (rate(tierd_tier_lookups_total{SEL}" + RATE + "))",
        "{{tier}} {{outcome}}")),
    P("Get latency p99 by tier", "99th percentile of one lookup in each tier.", "s",
      q("histogram_quantile(0.99, sum by (le, tier) (rate(tierd_tier_operation_duration_seconds_bucket{SEL,op=\"get\"}"
        + RATE + ")))", "{{tier}}")),
    P("Operation latency p50", "Median get, put (one L1 entry; one L2/L3 batch) and delete (one "
      "purge).", "s",
      q("histogram_quantile(0.5, sum by (le, tier, op) (rate(tierd_tier_operation_duration_seconds_bucket{SEL}"
        + RATE + ")))", "{{tier}} {{op}}")),
    P("Operation latency p99", "99th percentile of get, put and delete per tier.", "s",
      q("histogram_quantile(0.99, sum by (le, tier, op) (rate(tierd_tier_operation_duration_seconds_bucket{SEL}"
        + RATE + ")))", "{{tier}} {{op}}")),
    ROW("Health"),
    P("Tier up", "1 while a configured tier serves; 0 while it failed to start, is being reopened, "
      "is unreachable or its circuit is open.", "short",
      q("min by (instance, tier) (tierd_tier_up{SEL})", "{{instance}} {{tier}} up"),
      q("max by (instance, tier) (tierd_tier_failed{SEL})", "{{instance}} {{tier}} failed"),
      w=8, lo=0, hi=1,
      thresholds=[(None, "red"), (1, "green")]),
    P("Circuit breaker open", "1 while a tier's circuit is open and the tier is skipped.", "short",
      q("max by (tier) (tierd_tier_circuit_open{SEL})", "{{tier}}"), w=8, lo=0, hi=1),
    P("Errors by kind", "Failed tier operations: timeout, unavailable, circuit_open (skipped), "
      "decode.", "ops",
      q("sum by (tier, kind) (rate(tierd_tier_errors_total{SEL}" + RATE + "))", "{{tier}} {{kind}}"),
      w=8),
    ROW("Size and capacity"),
    P("Entries", "Entries held by L1 and L3 (Redis keys: see redis_exporter).", "short",
      q("sum by (tier) (tierd_tier_entries{SEL})", "{{tier}}"), w=8),
    P("Bytes against the cap", "Bytes held by L1 and L3, and the cap each evicts to stay under "
      "(tiers.*.max_bytes).", "bytes",
      q("sum by (tier) (tierd_tier_bytes{SEL})", "{{tier}} held"),
      q("sum by (tier) (tierd_tier_max_bytes{SEL})", "{{tier}} cap"),
      q("sum by (tier) (tierd_tier_file_bytes{SEL,tier=\"l3\"})", "{{tier}} on disk"), w=8),
    P("Evictions by cause", "Entries leaving a tier: expired, size (capacity), explicit (purge), "
      "replaced.", "ops",
      q("sum by (tier, cause) (rate(tierd_tier_evictions_total{SEL}" + RATE + "))", "{{tier}} {{cause}}"),
      w=8),
    P("Resyncs and compactions", "Whole-L1 clears because cross-node purges may have been missed "
      "(0 while the Redis subscription is healthy), and L3 files rewritten to reclaim deleted "
      "rows' space, in the last hour.", "short",
      q("sum by (reason) (increase(tierd_l1_resyncs_total{SEL}[1h]))", "L1 resyncs: {{reason}}"),
      q("sum(increase(tierd_l3_compactions_total{SEL}[1h]))", "L3 compactions"), w=24, h=6, lo=0),
    ROW("Writes"),
    P("Write queue depth", "Writes accepted for L2/L3 and not yet applied, against the queue's "
      "capacity (tiers.*.queue_capacity).", "short",
      q("sum by (tier) (tierd_tier_queue_depth{SEL})", "{{tier}} queued"),
      q("sum by (tier) (tierd_tier_queue_capacity{SEL})", "{{tier}} capacity"), w=8),
    P("Writes by outcome", "Entries written, refused because the queue was full (dropped), or "
      "failed.", "ops",
      q("sum by (tier, outcome) (rate(tierd_tier_writes_total{SEL}" + RATE + "))",
        "{{tier}} {{outcome}}"), w=8),
    P("Promotions", "Hits in L2/L3 copied into the faster tiers, by the tier that answered.", "ops",
      q("sum by (tier) (rate(tierd_tier_promotions_total{SEL}" + RATE + "))", "{{tier}}"), w=8),
    ROW("Redis (L2)"),
    dict(REDIS_CONNECTIONS, w=12),
    P("Redis latency", "p50 and p99 of one L2 lookup, and of one write batch.", "s",
      q("histogram_quantile(0.5, sum by (le, op) (rate(tierd_tier_operation_duration_seconds_bucket{SEL,tier=\"l2\"}"
        + RATE + ")))", "p50 {{op}}"),
      q("histogram_quantile(0.99, sum by (le, op) (rate(tierd_tier_operation_duration_seconds_bucket{SEL,tier=\"l2\"}"
        + RATE + ")))", "p99 {{op}}")),
    ROW("Journal"),
    P("Journal rows", "Access journal rows written to its DuckDB file, and dropped (queue full, "
      "file unwritable): dropped rows are requests analytics and warming never see.", "ops",
      q("sum by (outcome) (rate(tierd_journal_rows_total{SEL}" + RATE + "))", "{{outcome}}"),
      q("sum by (reason) (rate(tierd_journal_deleted_rows_total{SEL}" + RATE + "))",
        "deleted: {{reason}}"), w=8),
    P("Journal queue and writes", "Rows waiting for the journal's writer against the queue's "
      "capacity, and the p99 time to append one batch.", "short",
      q("sum(tierd_journal_queue_depth{SEL})", "queued rows"),
      q("sum(tierd_journal_queue_capacity{SEL})", "capacity"),
      q("histogram_quantile(0.99, sum by (le) (rate(tierd_journal_write_duration_seconds_bucket{SEL}"
        + RATE + ")))", "p99 batch seconds"), w=8),
    P("Journal file", "The journal file's size with its WAL (kept under journal.max_bytes), and 1 "
      "while it cannot be opened or written.", "bytes",
      q("max by (instance) (tierd_journal_file_bytes{SEL})", "{{instance}} bytes"),
      q("max by (instance) (tierd_journal_failed{SEL})", "{{instance}} failed"), w=8),
]

ORIGIN = [
    ROW("Origin"),
    P("Origin requests", "Requests tierd sent to the origin (misses, passes, revalidations, "
      "refreshes).", "reqps",
      q("sum(rate(tierd_origin_requests_total{SEL}" + RATE + "))", "req/s"), w=8),
    P("Origin latency", "Time to the origin's response head, p50 and p99.", "s",
      q("histogram_quantile(0.5, sum by (le) (rate(tierd_origin_request_duration_seconds_bucket{SEL}"
        + RATE + ")))", "p50"),
      q("histogram_quantile(0.99, sum by (le) (rate(tierd_origin_request_duration_seconds_bucket{SEL}"
        + RATE + ")))", "p99"), w=8),
    ORIGIN_CONNECTIONS,
    P("Origin errors by kind", "Transport failures (connect, timeout, protocol, body) apart from "
      "the origin's own 5xx answers.", "ops",
      q("sum by (kind) (rate(tierd_origin_errors_total{SEL}" + RATE + "))", "{{kind}}")),
    P("Origin error ratio", "Origin requests that failed or answered 5xx, over all origin requests.",
      "percentunit",
      q("sum(rate(tierd_origin_errors_total{SEL}" + RATE + ")) / "
        "sum(rate(tierd_origin_requests_total{SEL}" + RATE + "))", "error ratio"),
      lo=0, hi=1, thresholds=[(None, "green"), (0.05, "red")]),
    ROW("Staleness and coalescing"),
    P("Stale served", "Stale responses served while revalidating or because the origin failed.",
      "ops", q("sum by (reason) (rate(tierd_stale_served_total{SEL}" + RATE + "))", "{{reason}}"),
      w=8),
    P("Coalescing and refreshes", "Requests that waited on another's fetch, and those that stopped "
      "waiting (served stale, or 504); background refreshes started, and those that stored nothing.",
      "ops",
      q("sum(rate(tierd_coalesced_waiters_total{SEL}" + RATE + "))", "coalesced waiters"),
      q("sum by (result) (rate(tierd_coalesce_timeouts_total{SEL}" + RATE + "))",
        "waits given up: {{result}}"),
      q("sum(rate(tierd_background_refreshes_total{SEL}" + RATE + "))", "background refreshes"),
      q("sum(rate(tierd_background_refresh_failures_total{SEL}" + RATE + "))",
        "background refreshes failed"), w=8),
    P("Not stored by reason", "Origin responses tierd did not store, and why.", "ops",
      q("sum by (reason) (rate(tierd_not_stored_total{SEL}" + RATE + "))", "{{reason}}"), w=8),
    ROW("Purges"),
    P("Purges by kind and source", "Purges applied: tag, url, prefix; from admin, rule, method or "
      "another node.", "ops",
      q("sum by (kind, source) (rate(tierd_purges_total{SEL}" + RATE + "))", "{{kind}} {{source}}")),
    P("Entries purged by tier", "Entries removed by purges.", "ops",
      q("sum by (tier) (rate(tierd_purged_entries_total{SEL}" + RATE + "))", "{{tier}}")),
    P("Purge propagation lag", "From a purge on one node to its L1 removal on another (Redis "
      "pub/sub).", "s",
      q("histogram_quantile(0.5, sum by (le) (rate(tierd_invalidation_lag_seconds_bucket{SEL}"
        + RATE + ")))", "p50"),
      q("histogram_quantile(0.99, sum by (le) (rate(tierd_invalidation_lag_seconds_bucket{SEL}"
        + RATE + ")))", "p99"), thresholds=[(None, "green"), (0.1, "red")]),
    P("Invalidation messages", "Pub/sub messages published, received and rejected.", "ops",
      q("sum by (direction) (rate(tierd_invalidation_messages_total{SEL}" + RATE + "))",
        "{{direction}}")),
    P("Unsafe-method invalidations", "URIs invalidated by POST, PUT, PATCH, DELETE (RFC 9111 "
      "section 4.4).", "ops",
      q("sum(rate(tierd_invalidations_total{SEL}" + RATE + "))", "invalidations/s")),
    ROW("Configuration"),
    P("Config loads", "Whether each node's last config load was applied (1) or its last reload "
      "rejected (0); reloads applied and rejected in the last hour; the rules in force.", "short",
      q("min by (instance) (tierd_config_last_reload_successful{SEL})", "{{instance}} last load ok"),
      q("sum by (result) (increase(tierd_rule_reloads_total{SEL}[1h]))", "{{result}} (1h)"),
      q("max(tierd_rules{SEL})", "rules in force"), lo=0),
    P("Config age", "Time since each node last loaded its config successfully (at start or a "
      "reload).", "s",
      q("time() - max by (instance) (tierd_config_last_reload_success_timestamp_seconds{SEL})",
        "{{instance}}"), lo=0),
]

DASHBOARDS = [
    ("tierd-overview", "tierd / Overview",
     "Requests, cache effectiveness, saturation, rate limiting and warming of the tierd gateways.",
     OVERVIEW, True),
    ("tierd-tiers", "tierd / Tiers",
     "L1 (memory), L2 (Redis) and L3 (DuckDB): lookups, health, size against capacity, write "
     "queues, Redis connections and the access journal.", TIERS, False),
    ("tierd-origin", "tierd / Origin and invalidation",
     "What reaches the origin, how it answers, stale serving and coalescing, how purges "
     "propagate, and config reloads.", ORIGIN, False),
]


def variable(name, label, query, multi=True):
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "options": [],
    }


def templating(per_route):
    out = [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "options": [],
            "refresh": 1,
        },
        variable("job", "Job", "label_values(tierd_build_info, job)"),
        variable("instance", "Instance", 'label_values(tierd_build_info{job=~"$job"}, instance)'),
    ]
    if per_route:
        out.append(variable("route", "Route",
                            'label_values(tierd_requests_total{job=~"$job",instance=~"$instance"}, route)'))
    return out


ANNOTATIONS = [
    {
        "name": "Restarts",
        "datasource": DS,
        "enable": True,
        "iconColor": "red",
        "expr": "changes(process_start_time_seconds{" + SEL + "}[2m]) > 0",
        "step": "1m",
        "titleFormat": "tierd started",
        "textFormat": "{{instance}}",
    },
    {
        "name": "Config reloads",
        "datasource": DS,
        "enable": True,
        "iconColor": "blue",
        "expr": "changes(tierd_config_last_reload_success_timestamp_seconds{" + SEL + "}[2m]) > 0",
        "step": "1m",
        "titleFormat": "config loaded",
        "textFormat": "{{instance}}",
    },
    {
        "name": "Rejected reloads",
        "datasource": DS,
        "enable": True,
        "iconColor": "orange",
        "expr": "increase(tierd_rule_reloads_total{" + SEL + ',result="rejected"}[2m]) > 0',
        "step": "1m",
        "titleFormat": "config reload rejected",
        "textFormat": "{{instance}}",
    },
]


def panel(p, pid, x, y):
    defaults = {"unit": p["unit"]}
    if p["lo"] is not None:
        defaults["min"] = p["lo"]
    if p["hi"] is not None:
        defaults["max"] = p["hi"]
    if p["thresholds"]:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"value": v, "color": c} for v, c in p["thresholds"]],
        }
    kind = p["kind"]
    if kind == "timeseries":
        custom = {}
        if p["thresholds"]:
            custom["thresholdsStyle"] = {"mode": "line"}
        if p["stack"]:
            custom["stacking"] = {"mode": "normal", "group": "A"}
            custom["fillOpacity"] = 25
        if custom:
            defaults["custom"] = custom
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    elif kind == "heatmap":
        options = {
            "calculate": False,
            "yAxis": {"unit": p["unit"]},
            "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5},
            "cellGap": 1,
            "tooltip": {"mode": "single", "yHistogram": True},
        }
    elif kind == "table":
        options = {"showHeader": True}
    else:
        raise SystemExit(f"unknown panel kind {kind}")
    targets = []
    for i, t in enumerate(p["targets"]):
        target = {"refId": chr(ord("A") + i), "datasource": DS}
        target.update({"range": True, "instant": False})
        target.update(t)
        targets.append(target)
    out = {
        "id": pid,
        "type": kind,
        "title": p["title"],
        "description": p["desc"],
        "datasource": DS,
        "gridPos": {"h": p["h"], "w": p["w"], "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }
    if kind == "table":
        out["transformations"] = [{
            "id": "organize",
            "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}},
        }]
    return out


def layout(items):
    """Rows, each followed by its panels placed left to right on a 24-wide grid."""
    panels, pid, x, y, row_h = [], 1, 0, 0, 0
    for item in items:
        if "row" in item:
            if x:
                y, x = y + row_h, 0
            panels.append({"id": pid, "type": "row", "title": item["row"], "collapsed": False,
                           "panels": [], "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
            pid, y, row_h = pid + 1, y + 1, 0
            continue
        if x + item["w"] > 24:
            y, x, row_h = y + row_h, 0, 0
        panels.append(panel(item, pid, x, y))
        pid, x, row_h = pid + 1, x + item["w"], max(row_h, item["h"])
    return panels


def dashboard(uid, title, description, items, per_route):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tierd"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "links": [{
            "title": "tierd dashboards",
            "type": "dashboards",
            "icon": "external link",
            "tooltip": "",
            "tags": ["tierd"],
            "asDropdown": True,
            "targetBlank": False,
            "includeVars": True,
            "keepTime": True,
        }],
        "annotations": {"list": ANNOTATIONS},
        "templating": {"list": templating(per_route)},
        "panels": layout(items),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true",
                    help="fail if a committed dashboard differs from the generated one")
    args = ap.parse_args()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dashboards")
    stale = []
    for uid, title, desc, items, per_route in DASHBOARDS:
        text = json.dumps(dashboard(uid, title, desc, items, per_route), indent=2,
                          ensure_ascii=False) + "\n"
        path = os.path.join(root, uid + ".json")
        if args.check:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    stale.append(path)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        sys.exit("dashboards differ from scripts/dashboards.py (run it): " + ", ".join(stale))


if __name__ == "__main__":
    main()
