"""Prometheus metrics of the service (the HTTP middleware that counts requests is ``http/middleware/metrics.py``).

Labels use the route template (``/{package}/{revision}/{filename}``), never the concrete path, to keep
cardinality bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from updown_app import __version__

REQUESTS = Counter("updown_http_requests_total", "HTTP requests", ["route", "method", "status"])
DURATION = Histogram(
    "updown_http_request_duration_seconds",
    "Time to the end of the response",
    ["route"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
)
DOWNLOADS = Counter(
    "updown_downloads_total",
    "Download responses (a file, a link, a latest redirect), by hostname (public, private, other) and status",
    ["host", "status"],
)
BYTES_IN = Counter("updown_http_received_bytes_total", "Request body bytes received", ["route"])
BYTES_OUT = Counter("updown_http_sent_bytes_total", "Response body bytes sent", ["route"])
ZEROCOPY_BYTES = Counter(
    "updown_zerocopy_sent_bytes_total",
    "Response body bytes the kernel sent from local files (sendfile; plain HTTP, local store): part of sent_bytes",
)
UPLOAD_FAILURES = Counter("updown_upload_failures_total", "Uploads refused or abandoned", ["reason"])
UPLOADED_BYTES = Counter("updown_uploaded_bytes_total", "Bytes of successful uploads")
UPLOAD_SESSIONS_CREATED = Counter("updown_upload_sessions_created_total", "Resumable upload sessions created")
UPLOAD_SESSIONS_LIVE = Gauge(
    "updown_upload_sessions_live", "Open resumable upload sessions (all units; refreshed by each purge)"
)
UPLOAD_SESSIONS_PURGED = Counter("updown_upload_sessions_purged_total", "Expired upload sessions purged")
UPLOAD_PURGED_BYTES = Counter("updown_upload_purged_bytes_total", "Bytes of parts removed by purges")
SWEPT = Counter(
    "updown_swept_total",
    "Leftovers removed by the sweeper: kind=object (no record) or partial (a crashed write)",
    ["kind"],
)
SWEPT_BYTES = Counter("updown_swept_bytes_total", "Bytes removed by the sweeper, by kind", ["kind"])
SWEEP_FAILURES = Counter("updown_sweep_failures_total", "Sweeps that stopped on an error (database or store down)")
READ_CACHE_READS = Counter(
    "updown_read_cache_reads_total",
    "Object reads served through a backend cache unit, by unit and its cache status (X-Cache: HIT or MISS)",
    ["unit", "cache"],
)
READ_CACHE_FALLBACKS = Counter(
    "updown_read_cache_fallbacks_total",
    "Object reads that went to the store directly because the chosen backend cache unit failed",
    ["unit", "reason"],
)
READ_CACHE_BREAKER_OPENS = Counter(
    "updown_read_cache_breaker_opens_total",
    "Times a backend cache unit was taken out of the read path for a while after failing (circuit breaker)",
    ["unit"],
)
STORAGE_BREAKER_OPENS = Counter(
    "updown_storage_breaker_opens_total",
    "Times the object store failed a call and was skipped for a while (circuit breaker: calls answer 503 at once)",
)
CACHE_PURGES = Counter("updown_cache_purges_total", "Paths purged from a frontend cache unit", ["endpoint"])
CACHE_PURGE_FAILURES = Counter(
    "updown_cache_purge_failures_total", "Failed purge attempts of a frontend cache unit", ["endpoint"]
)
CACHE_PURGE_PENDING = Gauge(
    "updown_cache_purge_pending", "Purges of unreachable frontend units still being retried in the background"
)
INDEX_VERSIONS = Counter("updown_index_versions_total", "Signed index metadata versions written", ["role"])
PULL_THROUGH = Counter(
    "updown_pull_through_total", "Downloads fetched from the upstream (stored, refused, failed)", ["result"]
)
BUILD_INFO = Gauge(
    "updown_build_info", "The release this process runs (always 1): a rollout in progress shows two", ["version"]
)
BUILD_INFO.labels(__version__).set(1)
READINESS_OK = Gauge(
    "updown_readiness_check_ok", "The last readiness check (/readyz) of a dependency: 1 usable, 0 failed", ["check"]
)
READINESS_FAILURES = Counter(
    "updown_readiness_check_failures_total", "Failed readiness checks, by dependency (database, storage)", ["check"]
)
for _check in ("database", "storage"):  # both known from the start: a dashboard shows 0, not "no data"
    READINESS_FAILURES.labels(_check)
