"""One flash sale, start to finish: set up, storm, check, measure the ceiling."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, create_engine, text

from ecommerce.config import Settings
from ecommerce.flashsale import hop
from ecommerce.flashsale.ceiling import DEFAULT_CLIENTS, measure_ceiling
from ecommerce.flashsale.cpu import CpuMeter, postmaster_pid
from ecommerce.flashsale.fake_gateway import start_in_thread
from ecommerce.flashsale.loadgen import ADD, PAY, TRANSPORT_ERROR, LoadPlan, run_load_in_process
from ecommerce.flashsale.server import GunicornProcess, mean_batch_sizes, warm_up
from ecommerce.models import table_names
from ecommerce.services import Shop, build_shop, console, invariants, inventory

SALE_PRICE = "9.99"


#: for_update: the shop as it is; naive: the negative control, the shop with the
#: 12.12 bug put back from outside (ecommerce/flashsale/naive.py).
STRATEGIES = ("for_update", "naive")


@dataclass
class SaleConfig:
    strategy: str = "for_update"
    stock: int = 2000
    buyers: int = 4000
    connections: int = 64
    duration_s: float = 30.0
    items: int = 1  # >1: the stock is spread over that many SKUs
    workers: int = 2
    threads: int = 32
    worker_class: str = "gevent"
    mode: str = "flow"  # "flow": add -> checkout -> pay; "pay": prepared carts, pay only
    keys: bool = False  # an Idempotency-Key on every pay
    combining: bool = True  # PAY_COMBINING and CART_COMBINING of the server started
    metrics: bool = True  # METRICS of the server started
    # A fake payment provider answering after this many ms (None: the instant one).
    gateway_latency_ms: int | None = None
    # strategy "go_seed": the design note's Go service, built (ecommerce/flashsale/goseed.py).
    go_binary: str | None = None
    # py-spy samples one worker through the storm into this file: .svg a flame
    # graph, .txt collapsed stacks, .json speedscope (None: no profile).
    profile_path: str | None = None
    # The database one network hop away: the round trip added between the
    # server and PostgreSQL (µs; 0: none), by the relay built at ``hop_binary``
    # (ecommerce/flashsale/hop.py).
    db_hop_us: int = 0
    hop_binary: str | None = None
    # The server's log (its JSON lines at LOG_LEVEL=info, as in production),
    # written afresh each run; None: at warning, to the simulator's stderr.
    server_log: str | None = None

    @property
    def label(self) -> str:
        label = f"{self.mode}{'+keys' if self.keys else ''}"
        label += f" {self.strategy.replace('_', '-')}" if self.strategy != "for_update" else ""
        label += "" if self.combining or self.strategy == "go_seed" else " alone"
        label += "" if self.gateway_latency_ms is None else f" gw{self.gateway_latency_ms}ms"
        label += f" hop{self.db_hop_us}us" if self.db_hop_us else ""
        return label + ("" if self.metrics else " no-metrics")

    url: str | None = None  # a running server to target instead of starting gunicorn
    ceiling: bool = True
    ceiling_clients: tuple[int, ...] = DEFAULT_CLIENTS
    ceiling_seconds: float = 5.0


@dataclass
class SaleResult:
    config: dict[str, Any]
    paid: int = 0
    paid_per_s: float = 0.0
    sale_window_s: float = 0.0
    sold_out: bool = False
    requests: int = 0
    requests_per_s: float = 0.0
    pay_latency_ms: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    units_in_orders: int = 0
    stock_sold: int = 0
    oversold_units: int = 0
    unaccounted_units: int = 0
    five_xx: int = 0
    charged_twice: int = 0
    invariant_violations: list[str] = field(default_factory=list)
    loadgen_cpu_share: float = 0.0
    # CPU per buyer paid (a whole buyer in the flow, a pay in pay-only), in µs:
    # the server's process tree, PostgreSQL's (None: not on this machine or not
    # readable) and the load generator's; from /proc (ecommerce/flashsale/cpu.py).
    cpu_us_per_paid: dict[str, float | None] = field(default_factory=dict)
    ceiling: list[dict[str, float]] = field(default_factory=list)
    ceiling_tps: float | None = None
    ratio_to_ceiling: float | None = None
    # After the last unit sold: how fast the buyers who kept coming were refused.
    after_sold_out: dict[str, float] = field(default_factory=dict)
    storm_latency_ms: dict[str, float] = field(default_factory=dict)  # every request
    # Buyers per combined-pay transaction, from the server's /metrics (None: not known).
    mean_batch_size: float | None = None
    # Adds and cart reads per combined cart transaction ({"add": .., "read": ..}).
    mean_cart_batch_sizes: dict[str, float] = field(default_factory=dict)
    # The sale's orders by status (with a payment provider: pending, payment_failed...).
    order_statuses: dict[str, int] = field(default_factory=dict)
    # With the database a hop away: the round trip the relay added (µs), idle
    # and under the storm, and the connections it relayed (the server's, and
    # one of the probe's).
    db_hop_added_us: float | None = None
    db_hop_added_under_load_us: float | None = None
    db_hop_relayed: int | None = None
    timeline: list[dict[str, float]] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return (
            self.oversold_units == 0
            and self.unaccounted_units == 0
            and self.five_xx == 0
            and self.charged_twice == 0
            and not self.invariant_violations
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"correct": self.correct, "label": self.label}

    @property
    def label(self) -> str:
        return SaleConfig(**self.config).label


def control_proves_the_checks(result: dict[str, Any]) -> bool:
    """Whether a run of the negative control shows that the checks can fail: it
    broke the books (sold more units than it had, or sold units the stock never
    gave up: the 12.12 lost update, which oversells only once more units are
    sold than the item received) and answered every request (a 5xx is a broken
    control, not the bug)."""
    broke = (
        result["oversold_units"] > 0
        or result["unaccounted_units"] != 0
        or bool(result["invariant_violations"])
    )
    return broke and result["five_xx"] == 0


def record_hop(result: SaleResult, hopped: hop.Hop | None) -> None:
    """The hop's figures in the result: the round trip it added, idle and under
    the storm, and the connections it relayed."""
    if hopped is not None:
        result.db_hop_added_us = round(hopped.added_us)
        under = hopped.added_under_load_us
        result.db_hop_added_under_load_us = round(under) if under is not None else None
        result.db_hop_relayed = hopped.relayed


def latency_summary(records: list[tuple[int, float, float, int, str]]) -> dict[str, float]:
    latencies = sorted((r[2] - r[1]) * 1000 for r in records)
    summary = {f"p{p}": round(percentile(latencies, p), 2) for p in (50, 95, 99)}
    return summary | {"max": round(latencies[-1], 2) if latencies else 0.0, "n": len(latencies)}


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def sale_server(
    database_url: str, config: SaleConfig, gateway_url: str | None = None
) -> GunicornProcess:
    provider = {}
    if gateway_url is not None:
        assert config.gateway_latency_ms is not None
        provider = {
            "PAYMENT_GATEWAY_URL": gateway_url,
            # Long enough that a slow provider still answers; a hang would 202.
            "PAYMENT_GATEWAY_TIMEOUT_MS": str(max(2000, 5 * config.gateway_latency_ms)),
        }
    return GunicornProcess(
        {
            **provider,
            "DATABASE_URL": database_url,
            "APP_ENV": "development",
            "AUTH_REQUIRED": "false",
            "WEB_CONCURRENCY": str(config.workers),
            "GUNICORN_THREADS": str(config.threads),
            "GUNICORN_WORKER_CLASS": config.worker_class,
            "PAY_COMBINING": "true" if config.combining else "false",
            "CART_COMBINING": "true" if config.combining else "false",
            "METRICS": "true" if config.metrics else "false",
            **({"LOG_LEVEL": "info"} if config.server_log else {}),
        },
        app="ecommerce.flashsale.naive_app:app" if config.strategy == "naive" else "wsgi:app",
        log_path=Path(config.server_log) if config.server_log else None,
    )


PROFILE_FORMATS = {".svg": "flamegraph", ".txt": "raw", ".json": "speedscope"}


def start_profiler(path: str, pid: int, duration_s: float) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` (a worker) for the storm's duration into ``path``,
    its format by the suffix (PROFILE_FORMATS; the command checks it first)."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--duration",
            str(math.ceil(duration_s)),
            "--format",
            PROFILE_FORMATS[Path(path).suffix],
            "--output",
            path,
        ],
        stdout=subprocess.DEVNULL,
    )


class StockPoller(threading.Thread):
    """Samples the sale items' total stock from the database while the storm runs."""

    def __init__(self, engine: Engine, item_ids: list[int], interval_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.item_ids = item_ids
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                stock = conn.execute(
                    text("SELECT coalesce(sum(stock), 0) FROM items WHERE id = ANY(:ids)"),
                    {"ids": self.item_ids},
                ).scalar_one()
                conn.commit()
                self.samples.append((time.monotonic(), float(stock)))
                self.stop.wait(self.interval_s)


def create_sale_items(shop: Shop, stock: int, count: int, label: str) -> list[int]:
    per_item = [stock // count + (1 if n < stock % count else 0) for n in range(count)]
    return [
        inventory.add_item(shop, f"{label} #{n + 1}", Decimal(SALE_PRICE), Decimal(units)).id
        for n, units in enumerate(per_item)
    ]


def prepare_carts(engine: Engine, item_ids: list[int], prefix: str, buyers: int) -> None:
    """One unit in the cart of every buyer, as the load generator will name them."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO carts (user_id, item_id, quantity)"
                " SELECT :prefix || n, (CAST(:ids AS integer[]))[1 + n % :count], 1"
                " FROM generate_series(0, :buyers - 1) AS n"
            ),
            {"prefix": prefix, "ids": item_ids, "count": len(item_ids), "buyers": buyers},
        )
        # Statistics for the new rows now, as a shop's long-lived table would have
        # them: planned on stale ones, a batch's cart lookup once became a scan.
        conn.execute(text("ANALYZE carts"))


def checking_shop(database_url: str) -> Shop:
    """The shop's own services on the sale's database: to create items and check the books."""
    return build_shop(Settings(database_url=database_url))


def run_sale(database_url: str, config: SaleConfig, *, own_database: bool) -> SaleResult:
    """Run one sale. With ``own_database`` the tables are emptied first (the
    simulator's own database); otherwise only the new sale items are looked at."""
    engine = create_engine(database_url, pool_pre_ping=True)
    shop = checking_shop(database_url)
    try:
        if own_database:
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {', '.join(table_names())} RESTART IDENTITY CASCADE"))
        tag = f"{config.strategy}-{int(time.time() * 1000) % 10**9}"
        item_ids = create_sale_items(shop, config.stock, config.items, f"Flash sale {tag}")
        prefix = f"fs-{tag}-"
        if config.mode == "pay":
            prepare_carts(engine, item_ids, prefix, config.buyers)

        if config.url:
            target = urlsplit(config.url)
            host, port = target.hostname or "127.0.0.1", target.port or 80
            result = storm(engine, config, item_ids, prefix, host, port)
        else:
            provider = None
            if config.gateway_latency_ms is not None:
                provider, _ = start_in_thread(config.gateway_latency_ms)
            gateway_url = f"http://127.0.0.1:{provider.server_address[1]}" if provider else None
            try:
                if config.server_log:
                    Path(config.server_log).unlink(missing_ok=True)  # this run's lines only
                with (
                    hop.around(config.hop_binary, database_url, config.db_hop_us) as hopped,
                    sale_server(
                        hopped.url if hopped else database_url, config, gateway_url
                    ) as server,
                ):
                    warm_up("127.0.0.1", server.port, 4 * config.workers * config.threads)
                    nonce = console.issue_link(shop, "rehearsal", int(config.duration_s) + 600)
                    print(
                        f"  watch it live: http://127.0.0.1:{server.port}/console/login?link={nonce}",
                        file=sys.stderr,
                        flush=True,
                    )
                    assert server.process is not None
                    meter = CpuMeter(
                        [server.process.pid],
                        postmaster_pid(engine),
                        hopped.pid if hopped else None,
                    )
                    profiler = None
                    if config.profile_path:
                        profiler = start_profiler(
                            config.profile_path, server.worker_pids()[0], config.duration_s
                        )
                    with hop.probing(hopped):
                        result = storm(
                            engine, config, item_ids, prefix, "127.0.0.1", server.port, meter
                        )
                    if profiler is not None:
                        profiler.wait(config.duration_s + 60)
                    sizes = mean_batch_sizes("127.0.0.1", server.port)
                    result.mean_batch_size = sizes.pop("pay", None)
                    result.mean_cart_batch_sizes = sizes
                record_hop(result, hopped)  # after the relay stopped: its count
            finally:
                if provider is not None:
                    provider.shutdown()

        _check(shop, engine, item_ids, prefix, result, own_database)
        with engine.connect() as conn:
            result.order_statuses = dict(
                conn.execute(
                    text(
                        "SELECT status, count(*) FROM orders WHERE user_id LIKE :p GROUP BY status"
                    ),
                    {"p": prefix + "%"},
                ).all()
            )
        if config.ceiling and config.strategy != "naive":
            ceiling_ids = create_sale_items(shop, 99_999_999, config.items, f"Ceiling {tag}")
            if ceiling_ids != list(range(ceiling_ids[0], ceiling_ids[-1] + 1)):
                # pgbench picks an id in [first, last]; a gap would be someone else's item.
                raise RuntimeError("the ceiling's items did not get consecutive ids; run again")
            runs = measure_ceiling(
                database_url,
                min(ceiling_ids),
                max(ceiling_ids),
                SALE_PRICE,
                config.ceiling_clients,
                config.ceiling_seconds,
            )
            result.ceiling = [asdict(run) for run in runs]
            result.ceiling_tps = max(run.tps for run in runs)
            result.ratio_to_ceiling = result.paid_per_s / result.ceiling_tps
        return result
    finally:
        engine.dispose()
        shop.close()


def storm(
    engine: Engine,
    config: SaleConfig,
    item_ids: list[int],
    prefix: str,
    host: str,
    port: int,
    meter: CpuMeter | None = None,
) -> SaleResult:
    """The load on ``host:port`` and what it did; with ``meter``, the CPU per buyer paid."""
    plan = LoadPlan(
        host=host,
        port=port,
        items=[(item_id, SALE_PRICE) for item_id in item_ids],
        buyers=config.buyers,
        connections=config.connections,
        duration_s=config.duration_s,
        user_prefix=prefix,
        mode=config.mode,
        keys=config.keys,
    )
    poller = StockPoller(engine, item_ids)
    poller.start()
    if meter is not None:
        meter.start()
    load = run_load_in_process(plan)
    if meter is not None:
        meter.stop()
    poller.stop.set()
    poller.join()

    result = SaleResult(config=asdict(config))
    records = load.records
    start = load.started
    pays = [r for r in records if r[0] == PAY]
    paid = [r for r in pays if r[3] == 201]
    result.paid = len(paid)
    last_paid = max((r[2] for r in paid), default=load.finished)
    result.sold_out = any(r[4] == "insufficient_stock" for r in records)
    result.sale_window_s = (last_paid if result.sold_out else load.finished) - start
    result.paid_per_s = result.paid / result.sale_window_s if result.sale_window_s > 0 else 0.0
    result.requests = len(records)
    result.requests_per_s = len(records) / (load.finished - start)
    # Pay latency while units were still on sale; the sold-out phase is reported apart.
    selling = [r for r in pays if not result.sold_out or r[2] <= last_paid]
    result.pay_latency_ms = latency_summary(selling)
    result.storm_latency_ms = latency_summary(records)
    if result.sold_out:
        result.after_sold_out = latency_summary([r for r in records if r[1] > last_paid])
    result.statuses = dict(Counter(str(r[3]) for r in records))
    result.five_xx = sum(1 for r in records if r[3] >= 500 or r[3] == TRANSPORT_ERROR)
    outcomes: Counter[str] = Counter()
    for kind, _, _, status, code in records:
        if kind == PAY and status == 201:
            outcomes["paid"] += 1
        elif code == "insufficient_stock" and kind in (ADD, PAY):
            outcomes["sold_out"] += 1
        elif code == "busy":
            outcomes["busy"] += 1
        elif status >= 400 or status == TRANSPORT_ERROR:
            outcomes["error"] += 1
    result.outcomes = {k: outcomes.get(k, 0) for k in ("paid", "sold_out", "busy", "error")}
    result.loadgen_cpu_share = round(load.cpu_share, 3)
    paid_n = max(1, result.paid)
    result.cpu_us_per_paid = {
        "server": round(meter.server_s * 1e6 / paid_n) if meter else None,
        "database": (
            round(meter.database_s * 1e6 / paid_n)
            if meter and meter.database_s is not None
            else None
        ),
        "loadgen": round(load.cpu_s * 1e6 / paid_n),
    }
    if meter is not None and meter.relay_s is not None:
        result.cpu_us_per_paid["relay"] = round(meter.relay_s * 1e6 / paid_n)
    result.timeline = _timeline(records, poller.samples, start, load.finished)
    return result


def _timeline(records, samples, start: float, end: float, bucket_s: float = 0.5) -> list[dict]:
    buckets = int((end - start) / bucket_s) + 1
    paid = [0] * buckets
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    for kind, began, finished, status, _ in records:
        if kind != PAY:
            continue
        b = min(buckets - 1, int((finished - start) / bucket_s))
        latencies[b].append((finished - began) * 1000)
        if status == 201:
            paid[b] += 1
    stock_at: list[float | None] = [None] * buckets
    for t, stock in samples:
        b = int((t - start) / bucket_s)
        if 0 <= b < buckets:
            stock_at[b] = stock
    timeline = []
    for b in range(buckets):
        lat = sorted(latencies[b])
        timeline.append(
            {
                "t": round(b * bucket_s, 3),
                "paid_per_s": paid[b] / bucket_s,
                "p50_ms": round(percentile(lat, 50), 2) if lat else None,
                "p99_ms": round(percentile(lat, 99), 2) if lat else None,
                "stock": stock_at[b],
            }
        )
    return timeline


def charged_twice(engine: Engine, prefix: str) -> int:
    """Buyers named ``prefix...`` with two payments: each simulated buyer wants
    one unit once, so a second paid order is a double charge."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM (SELECT o.user_id FROM orders o JOIN payments p"
                " ON p.order_id = o.id WHERE o.user_id LIKE :prefix"
                " GROUP BY o.user_id HAVING count(*) > 1) twice"
            ),
            {"prefix": prefix + "%"},
        ).scalar_one()


def _check(
    shop: Shop,
    engine: Engine,
    item_ids: list[int],
    prefix: str,
    result: SaleResult,
    own_database: bool,
) -> None:
    """The books of the sale's items, by the shop's own invariant code; with a
    database of its own, every invariant of the shop too."""
    books = invariants.books(shop, item_ids)
    result.units_in_orders = int(sum(b.in_orders for b in books))
    result.stock_sold = int(sum(b.received - b.stock for b in books))
    result.oversold_units = int(sum(b.oversold for b in books))
    result.unaccounted_units = int(sum(abs(b.unexplained) for b in books))
    result.charged_twice = charged_twice(engine, prefix)
    if own_database:
        result.invariant_violations = [str(v) for v in invariants.check(shop)][:20]
