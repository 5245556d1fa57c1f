"""One crowd, start to finish: a hot item, the shop started (straight, or three
instances behind HAProxy with deploy/haproxy/haproxy.cfg), the waiting room
opened or not, the crowd let loose, the books checked, the figures summed up.

The figures are the ones a crowd lives by: the share of the first S arrivals
who got one of the S units (fairness), the time from arrival to a first answer
(a place in the line, or sold out) and to a final one (paid or sold out), how
long after the last unit sold the buyers beyond the stock were told, what went
wrong for whom, and what it cost: the shop's and the database's CPU and
transactions per buyer (from /proc and pg_stat_database).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from ecommerce.crowd.client import PAID, SOLD_OUT, Buyer, CrowdPlan, run_crowd_in_process
from ecommerce.drill.front import Balancer
from ecommerce.drill.procs import wait_for
from ecommerce.flashsale.cpu import postmaster_pid, tree_cpu_s
from ecommerce.flashsale.run import SALE_PRICE, charged_twice, checking_shop, percentile
from ecommerce.flashsale.server import GunicornProcess, warm_up
from ecommerce.models import table_names
from ecommerce.services import invariants, inventory, rooms

#: Through HAProxy: the three instances deploy/haproxy/haproxy.cfg names, one worker each.
BALANCED_INSTANCES = 3


@dataclass
class CrowdConfig:
    buyers: int = 8000
    stock: int = 500
    arrival_s: float = 2.0
    room: bool = True
    via: str = "direct"  # "direct": straight to gunicorn; "haproxy"
    workers: int = 2  # gunicorn workers straight; behind HAProxy, one per instance
    mode: str = "fifo"  # the room's order
    max_admitted: int | None = None  # the room's cap (None: QUEUE_MAX_ADMITTED)
    server_env: dict[str, str] = field(default_factory=dict)  # extra settings for the shop

    @property
    def label(self) -> str:
        room = f"room {self.mode}" if self.room else "no room"
        via = "via HAProxy" if self.via == "haproxy" else "straight"
        return f"crowd {self.buyers} {room} {via}"


@dataclass
class CrowdSummary:
    config: dict[str, Any]
    label: str
    outcomes: dict[str, int] = field(default_factory=dict)
    # Of the first S arrivals (S = the stock), the share who paid.
    first_arrivals_served: float = 0.0
    first_answer_ms: dict[str, float] = field(default_factory=dict)
    final_answer_ms: dict[str, float] = field(default_factory=dict)
    # Buyers told sold out after the last unit sold: how long after it.
    sold_out_told_after_last_sale_ms: dict[str, float] = field(default_factory=dict)
    buyers_with_connection_errors: int = 0
    buyers_with_server_errors: int = 0  # a 5xx other than 503
    buyers_told_busy: int = 0  # at least one 503 (retried)
    queue_required: int = 0
    requests_per_buyer: float = 0.0
    polls_per_buyer: float = 0.0
    # What it cost, per buyer: CPU (ms) of the shop's processes, of PostgreSQL,
    # of the crowd itself; database transactions.
    server_cpu_ms_per_buyer: float | None = None
    balancer_cpu_ms_per_buyer: float | None = None  # HAProxy's, through it
    database_cpu_ms_per_buyer: float | None = None
    crowd_cpu_ms_per_buyer: float = 0.0
    transactions_per_buyer: float | None = None
    paid: int = 0
    oversold_units: int = 0
    unaccounted_units: int = 0
    charged_twice: int = 0
    invariant_violations: list[str] = field(default_factory=list)
    timeline: list[dict[str, float | None]] = field(default_factory=list)
    # The first answers' times, arrival order (for the chart), in ms.
    first_answers: list[float] = field(default_factory=list)
    # Each step's answer times (ms, from sending the request): p50, p99, max, n.
    request_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    # The 20 slowest requests: (buyer, step, sent s from the start, ms, status).
    slowest_requests: list[tuple] = field(default_factory=list)
    # Every buyer's story, arrival order: arrived, first answer, admitted and
    # final answer (s from the crowd's start; None: never), outcome, requests,
    # polls, connection errors, 503s, other 5xx.
    stories: list[tuple] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return (
            self.oversold_units == 0
            and self.unaccounted_units == 0
            and self.charged_twice == 0
            and not self.invariant_violations
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"correct": self.correct}


class _LineSampler(threading.Thread):
    """The item's stock and, with a room, its line, every 100 ms from the database."""

    def __init__(self, engine: Engine, item_id: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.item_id = engine, item_id
        self.samples: list[tuple[float, int, int | None, int | None, int | None]] = []
        self.sessions: set[int] = set()  # its own
        self.stop = threading.Event()

    def run(self) -> None:
        with self.engine.connect() as conn:
            self.sessions.add(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            conn.commit()
            while not self.stop.is_set():
                row = conn.execute(
                    text(
                        "SELECT i.stock, r.line_length, r.in_flight, r.sold_out_after"
                        " FROM items i LEFT JOIN rooms r ON r.item_id = i.id AND r.is_open"
                        " WHERE i.id = :id"
                    ),
                    {"id": self.item_id},
                ).one()
                conn.commit()
                self.samples.append((time.monotonic(), int(row[0]), row[1], row[2], row[3]))
                self.stop.wait(0.1)


def _transactions(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        ).scalar_one()


def _sessions(engine: Engine) -> set[int]:
    """The database's client sessions (their backends' pids), ours but this one included."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ).scalars()
        )


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(percentile(ordered, 50), 1),
        "p99": round(percentile(ordered, 99), 1),
        "max": round(ordered[-1], 1) if ordered else 0.0,
        "n": len(ordered),
    }


def run_crowd_sale(
    database_url: str, config: CrowdConfig, workdir: Path | None = None
) -> CrowdSummary:
    """Run one crowd on a database of its own (its tables are emptied first);
    the instances' and HAProxy's logs go to ``workdir`` (default: TMPDIR)."""
    engine = create_engine(database_url, pool_pre_ping=True)
    shop = checking_shop(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(table_names())} RESTART IDENTITY CASCADE"))
        item_id = inventory.add_item(
            shop, "Crowd's hot item", Decimal(SALE_PRICE), Decimal(config.stock)
        ).id
        if config.room:  # before the shop starts: its workers see the room at once
            rooms.configure_room(
                shop,
                item_id,
                rooms.RoomOptions(open=True, mode=config.mode, max_admitted=config.max_admitted),
            )
        prefix = f"crowd-{int(time.time() * 1000) % 10**9}-"
        plan = CrowdPlan(
            host="127.0.0.1",
            port=0,
            item_id=item_id,
            price=SALE_PRICE,
            buyers=config.buyers,
            arrival_s=config.arrival_s,
            user_prefix=prefix,
            room=config.room,
        )
        root = workdir or Path(tempfile.gettempdir())
        summary = _run(engine, database_url, config, plan, root)
        _check(shop, engine, item_id, prefix, summary)
        return summary
    finally:
        engine.dispose()
        shop.close()


def _servers(database_url: str, config: CrowdConfig, root: Path) -> list[GunicornProcess]:
    env = {
        "DATABASE_URL": database_url,
        "APP_ENV": "development",
        "AUTH_REQUIRED": "false",
        **config.server_env,
    }
    if config.via == "haproxy":
        # Three pools of the default size would pass PostgreSQL's 100
        # connections (docs/CAPACITY.md): each instance gets a share.
        balanced = {"WEB_CONCURRENCY": "1", "DB_POOL_SIZE": "24", **config.server_env}
        return [
            GunicornProcess({**env, **balanced}, log_path=root / f"crowd{n + 1}.log")
            for n in range(BALANCED_INSTANCES)
        ]
    return [GunicornProcess({**env, "WEB_CONCURRENCY": str(config.workers)})]


def _run(
    engine: Engine, database_url: str, config: CrowdConfig, plan: CrowdPlan, root: Path
) -> CrowdSummary:
    servers = _servers(database_url, config, root)
    balancer: Balancer | None = None
    sessions_before = _sessions(engine)  # the simulator's own
    try:
        for server in servers:
            server.start(ready_timeout=60)
        for server in servers:  # every worker opens its connections before the crowd
            warm_up("127.0.0.1", server.port, 32 * max(1, config.workers))
        port = servers[0].port
        if config.via == "haproxy":
            balancer = Balancer(root, [s.port for s in servers])
            balancer.start()
            port = balancer.port
        postmaster = postmaster_pid(engine)
        server_pids = [s.process.pid for s in servers if s.process is not None]
        cpu_before = sum(tree_cpu_s(pid) for pid in server_pids)
        haproxy = balancer.process.pid if balancer and balancer.process else None
        haproxy_before = tree_cpu_s(haproxy) if haproxy else 0.0
        db_before = tree_cpu_s(postmaster) if postmaster else 0.0
        xacts_before = _transactions(engine)
        sampler = _LineSampler(engine, plan.item_id)
        sampler.start()
        crowd = run_crowd_in_process(
            CrowdPlan(**{**asdict(plan), "port": port})  # type: ignore[arg-type]
        )
        sampler.stop.set()
        sampler.join()
        server_cpu = sum(tree_cpu_s(pid) for pid in server_pids) - cpu_before
        haproxy_cpu = tree_cpu_s(haproxy) - haproxy_before if haproxy else None
    finally:
        if balancer is not None:
            balancer.stop()
        for server in servers:
            server.stop()
    # The database's share once the shop's sessions have ended: a backend
    # reports its transactions when it exits (an idle one may hold them for
    # seconds), and its CPU then counts as the postmaster's reaped children.
    wait_for(
        "the shop's database sessions to end",
        lambda: not (_sessions(engine) - sessions_before - sampler.sessions),
        30,
    )
    db_cpu = tree_cpu_s(postmaster) - db_before if postmaster else None
    # less the sampler's own (one transaction a sample, and its first)
    xacts = _transactions(engine) - xacts_before - len(sampler.samples) - 1
    n = max(1, config.buyers)
    summary = _sum_up(config, crowd.buyers, config.stock)
    summary.server_cpu_ms_per_buyer = round(server_cpu * 1000 / n, 3)
    if haproxy_cpu is not None:
        summary.balancer_cpu_ms_per_buyer = round(haproxy_cpu * 1000 / n, 3)
    summary.database_cpu_ms_per_buyer = round(db_cpu * 1000 / n, 3) if db_cpu is not None else None
    summary.crowd_cpu_ms_per_buyer = round(crowd.cpu_s * 1000 / n, 3)
    summary.transactions_per_buyer = round(xacts / n, 2)
    summary.timeline = _timeline(crowd.buyers, sampler.samples, crowd.started, crowd.finished)
    steps: dict[str, list[float]] = {}
    for _, step, sent, answered, _ in crowd.requests:
        steps.setdefault(step, []).append((answered - sent) * 1000)
    summary.request_ms = {step: _summary(times) for step, times in steps.items()}
    slowest = sorted(crowd.requests, key=lambda r: r[2] - r[3])[:20]
    summary.slowest_requests = [
        (n, step, round(sent - crowd.started, 3), round((answered - sent) * 1000, 1), status)
        for n, step, sent, answered, status in slowest
    ]
    return summary


def _sum_up(config: CrowdConfig, buyers: list[Buyer], stock: int) -> CrowdSummary:
    summary = CrowdSummary(config=asdict(config), label=config.label)
    summary.outcomes = dict(Counter(b.outcome for b in buyers))
    summary.paid = summary.outcomes.get(PAID, 0)
    first = buyers[:stock]
    summary.first_arrivals_served = round(
        sum(1 for b in first if b.outcome == PAID) / max(1, len(first)), 4
    )
    firsts = [(b.first_at - b.arrived) * 1000 for b in buyers if b.first_at is not None]
    summary.first_answer_ms = _summary(firsts)
    summary.first_answers = [
        round((b.first_at - b.arrived) * 1000, 1) if b.first_at is not None else -1.0
        for b in buyers
    ]
    summary.final_answer_ms = _summary(
        [(b.final_at - b.arrived) * 1000 for b in buyers if b.final_at is not None]
    )
    last_sale = max((b.final_at for b in buyers if b.outcome == PAID and b.final_at), default=None)
    if last_sale is not None:
        summary.sold_out_told_after_last_sale_ms = _summary(
            [
                max(0.0, (b.final_at - last_sale) * 1000)
                for b in buyers
                if b.outcome == SOLD_OUT and b.final_at is not None
            ]
        )
    summary.buyers_with_connection_errors = sum(1 for b in buyers if b.connection_errors)
    summary.buyers_with_server_errors = sum(1 for b in buyers if b.server_errors)
    summary.buyers_told_busy = sum(1 for b in buyers if b.busy)
    summary.queue_required = sum(b.queue_required for b in buyers)
    start = min((b.arrived for b in buyers), default=0.0)

    def at(moment: float | None) -> float | None:
        return None if moment is None else round(moment - start, 4)

    summary.stories = [
        (
            at(b.arrived),
            at(b.first_at),
            at(b.admitted_at),
            at(b.final_at),
            b.outcome,
            b.requests,
            b.polls,
            b.connection_errors,
            b.busy,
            b.server_errors,
        )
        for b in buyers
    ]
    summary.requests_per_buyer = round(sum(b.requests for b in buyers) / max(1, len(buyers)), 2)
    summary.polls_per_buyer = round(sum(b.polls for b in buyers) / max(1, len(buyers)), 2)
    return summary


def _timeline(
    buyers: list[Buyer], samples: list[tuple], start: float, end: float, bucket_s: float = 0.25
) -> list[dict[str, float | None]]:
    """Per bucket: arrivals, first answers, sales and sold-out answers per
    second, and the stock and the line (the last sample in the bucket)."""
    count = int((end - start) / bucket_s) + 1
    rows: list[dict[str, float | None]] = [
        {
            "t": round(b * bucket_s, 3),
            "arrivals_per_s": 0.0,
            "first_answers_per_s": 0.0,
            "paid_per_s": 0.0,
            "sold_out_per_s": 0.0,
            "stock": None,
            "line": None,
            "admitted": None,
            "sold_out_after": None,
        }
        for b in range(count)
    ]

    def bump(at: float | None, key: str) -> None:
        if at is not None:
            row = rows[min(count - 1, max(0, int((at - start) / bucket_s)))]
            row[key] = (row[key] or 0.0) + 1 / bucket_s

    for b in buyers:
        bump(b.arrived, "arrivals_per_s")
        bump(b.first_at, "first_answers_per_s")
        bump(b.final_at if b.outcome == PAID else None, "paid_per_s")
        bump(b.final_at if b.outcome == SOLD_OUT else None, "sold_out_per_s")
    for at, stock, line, admitted, cut_off in samples:
        index = int((at - start) / bucket_s)
        if 0 <= index < count:
            rows[index].update(stock=stock, line=line, admitted=admitted, sold_out_after=cut_off)
    return rows


def _check(shop, engine: Engine, item_id: int, prefix: str, summary: CrowdSummary) -> None:
    """The item's books and every invariant of the shop (the database is the simulator's own)."""
    books = invariants.books(shop, [item_id])
    summary.oversold_units = int(sum(b.oversold for b in books))
    summary.unaccounted_units = int(sum(abs(b.unexplained) for b in books))
    summary.charged_twice = charged_twice(engine, prefix)
    summary.invariant_violations = [str(v) for v in invariants.check(shop)][:20]
