"""Prometheus metrics of the shop, correct across gunicorn workers.

Under gunicorn each worker writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode; the directory
is created, emptied and removed by ecommerce/gunicorn_conf.py, which also marks
exited workers dead), and ``GET /metrics`` adds up every worker's files. Without
that variable (the CLI, the tests, ``flask run``) the process's own registry is
served.

METRICS=false turns the recording off (the benchmark compares both).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    write_to_textfile,
)

enabled = True
#: prometheus-client's multiprocess directory (settings.metrics_dir: the
#: gunicorn master's, which its workers inherit); None: this process's own.
multiprocess_dir: str | None = None


def configure(*, on: bool, directory: str | None) -> None:
    """Set from the app's settings (create_app): whether metrics are recorded,
    and prometheus-client's multiprocess directory."""
    global enabled, multiprocess_dir
    enabled, multiprocess_dir = on, directory


HTTP_REQUESTS = Counter(
    "shop_http_requests_total",
    "HTTP requests answered, by method, endpoint (the route template) and status.",
    ["method", "endpoint", "status"],
)
HTTP_LATENCY = Histogram(
    "shop_http_request_duration_seconds",
    "Time from the request reaching the app to its answer, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PAYS = Counter(
    "shop_pays_total",
    "Pays by outcome: paid, pending (provider's answer outstanding), sold_out "
    "(insufficient_stock), refused (by code), busy (503).",
    ["outcome", "code"],
)
PAY_BATCH_SIZE = Histogram(
    "shop_pay_batch_size",
    "Buyers per pay transaction (a batch; 1 with PAY_COMBINING off).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CART_BATCH_SIZE = Histogram(
    "shop_cart_batch_size",
    "Requests per cart transaction (a batch; 1 with CART_COMBINING off), by kind: add, read.",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
DB_POOL_IN_USE = Gauge(
    "shop_db_pool_connections_in_use",
    "Database connections checked out of the pools, summed over live workers.",
    multiprocess_mode="livesum",
)
DB_RETRIES = Counter(
    "shop_db_transaction_retries_total",
    "Transactions run again: deadlock, serialization failure, lost connection.",
    ["reason"],
)
DB_TIMEOUTS = Counter(
    "shop_db_timeouts_total",
    "Bounded waits that ran out (answered 503): lock, statement, pool.",
    ["kind"],
)

DB_SYNCHRONOUS_STANDBYS = Gauge(
    "shop_db_synchronous_standbys",
    "Standbys confirming the primary's commits, read from the database at each scrape "
    "(absent unless the shop's role may see pg_stat_replication in full: pg_monitor).",
    multiprocess_mode="mostrecent",
)


QUEUE_LINE_LENGTH = Gauge(
    "shop_queue_line_length",
    "Places waiting in an item's waiting room (not admitted yet), by item.",
    ["item"],
    multiprocess_mode="mostrecent",
)
QUEUE_ADMITTED = Gauge(
    "shop_queue_admitted",
    "Buyers admitted by an item's waiting room and not done yet (in flight), by item.",
    ["item"],
    multiprocess_mode="mostrecent",
)
QUEUE_ADMISSION_RATE = Gauge(
    "shop_queue_admission_rate",
    "Places an item's waiting room admits per second: its fixed rate, else the last "
    "minute's admissions (0 when not measured yet), by item.",
    ["item"],
    multiprocess_mode="mostrecent",
)
QUEUE_ESTIMATED_WAIT = Gauge(
    "shop_queue_estimated_wait_seconds",
    "The wait told to the last place in an item's line (0 when not known), by item.",
    ["item"],
    multiprocess_mode="mostrecent",
)
_QUEUE_GAUGES = (QUEUE_LINE_LENGTH, QUEUE_ADMITTED, QUEUE_ADMISSION_RATE, QUEUE_ESTIMATED_WAIT)
_rooms_seen: set[int] = set()


def observe_room(
    item_id: int, *, line: int, admitted: int, rate: float | None, wait: int | None
) -> None:
    """An open room's figures, as this worker's last refresh read them."""
    if enabled:
        label = str(item_id)
        QUEUE_LINE_LENGTH.labels(label).set(line)
        QUEUE_ADMITTED.labels(label).set(admitted)
        QUEUE_ADMISSION_RATE.labels(label).set(rate or 0)
        QUEUE_ESTIMATED_WAIT.labels(label).set(wait or 0)
        _rooms_seen.add(item_id)


def forget_rooms_but(open_items: Iterable[int]) -> None:
    """Rooms closed since: their series go (a closed room has no line)."""
    if enabled:
        for item_id in _rooms_seen - set(open_items):
            for gauge in _QUEUE_GAUGES:
                with contextlib.suppress(KeyError):
                    gauge.remove(str(item_id))
            _rooms_seen.discard(item_id)


def observe_synchronous_standbys(count: int) -> None:
    if enabled:
        DB_SYNCHRONOUS_STANDBYS.set(count)


def write_job_metrics(directory: str, job: str, failures: int) -> None:
    """A scheduled command's run, for node_exporter's textfile collector:
    ``<directory>/shop_<job>.prom`` with when it last ran and how many orders it
    left for the next run (written whole, then renamed into place). The
    command is a process of its own: its figures cannot reach the shop's
    /metrics."""
    registry = CollectorRegistry()
    Gauge(
        "shop_job_last_run_timestamp_seconds",
        "When the scheduled command last finished a run (Unix time).",
        ["job"],
        registry=registry,
    ).labels(job).set_to_current_time()
    Gauge(
        "shop_job_last_run_failures",
        "Orders the command's last run could not settle (left for its next run).",
        ["job"],
        registry=registry,
    ).labels(job).set(failures)
    write_to_textfile(os.path.join(directory, f"shop_{job}.prom"), registry)


def count_request(method: str, endpoint: str, status: int, seconds: float) -> None:
    if enabled:
        key = (method, endpoint, status)
        children = _request_children.get(key)
        if children is None:  # labels() takes a lock and builds a key: once per series
            children = (
                HTTP_REQUESTS.labels(method, endpoint, str(status)),
                HTTP_LATENCY.labels(endpoint),
            )
            _request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)


# (method, endpoint template, status) -> its two children; bounded by the routes.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def count_pay(outcome: str, code: str = "") -> None:
    if enabled:
        child = _pay_children.get((outcome, code))
        if child is None:
            child = _pay_children[(outcome, code)] = PAYS.labels(outcome, code)
        child.inc()


# (outcome, error code) -> its child; bounded by the outcomes and codes there are.
_pay_children: dict[tuple[str, str], Any] = {}


def observe_batch(size: int) -> None:
    if enabled:
        PAY_BATCH_SIZE.observe(size)


def observe_cart_batch(kind: str, size: int) -> None:
    if enabled:
        CART_BATCH_SIZE.labels(kind).observe(size)


def pool_checked_out(delta: int) -> None:
    if enabled:
        DB_POOL_IN_USE.inc(delta)


def count_retry(reason: str) -> None:
    if enabled:
        DB_RETRIES.labels(reason).inc()


def count_timeout(kind: str) -> None:
    if enabled:
        DB_TIMEOUTS.labels(kind).inc()


def _registry() -> CollectorRegistry:
    """Every worker's samples (multiprocess mode), or this process's own."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The text format for a scrape, and its content type."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class PayFigures:
    """The pay metrics summed over the workers, cumulative since they started."""

    outcomes: dict[tuple[str, str], float]  # (outcome, code) -> pays
    latency_buckets: list[tuple[float, float]]  # (upper bound s, cumulative count) of pays
    batch_sum: float
    batch_count: float


PAY_ENDPOINT = "/cart/<user_id>/pay"


def pay_figures() -> PayFigures:
    """Read back what the workers recorded (the console's source of truth for
    refusals, latency and batch sizes: no second bookkeeping)."""
    outcomes: dict[tuple[str, str], float] = {}
    buckets: dict[float, float] = {}
    batch_sum = batch_count = 0.0
    for family in _registry().collect():  # the samples themselves, no text round trip
        for sample in family.samples:
            if family.name == "shop_pays":
                if sample.name.endswith("_total"):
                    key = (sample.labels["outcome"], sample.labels["code"])
                    outcomes[key] = outcomes.get(key, 0) + sample.value
            elif family.name == "shop_http_request_duration_seconds":
                if (
                    sample.name.endswith("_bucket")
                    and sample.labels.get("endpoint") == PAY_ENDPOINT
                ):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0) + sample.value
            elif family.name == "shop_pay_batch_size":
                if sample.name.endswith("_sum"):
                    batch_sum += sample.value
                elif sample.name.endswith("_count"):
                    batch_count += sample.value
    return PayFigures(outcomes, sorted(buckets.items()), batch_sum, batch_count)


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a (non-cumulative-differenced) histogram given as
    cumulative (upper bound, count) pairs, interpolated inside its bucket."""
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
