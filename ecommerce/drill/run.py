"""One drill: the topology up, then for each fault a storm, the fault injected
while it runs, recovery awaited, the storm stopped, and the books checked on
the final primary. Every wait is for something observable (a state on the
monitor, a sale), each with a deadline."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg2

from ecommerce.database import migrations
from ecommerce.drill.books import PhaseItems, check, first_sale_after
from ecommerce.drill.cluster import Cluster
from ecommerce.drill.front import INSTANCE_ENV, Balancer, Instances
from ecommerce.drill.procs import free_port, wait_for
from ecommerce.drill.room import HOT_MAX_ADMITTED, SCARCE_MAX_ADMITTED, Rooms
from ecommerce.drill.storm import Storm
from ecommerce.flashsale.server import GunicornProcess

FAULTS = (
    "primary-killed",
    "primary-frozen",
    "standby-killed",
    "instance-killed",
    "instance-drained",
    "haproxy-restarted",
    "pgbouncer-restarted",
    "primary-frozen-unpooled",
    "room-primary-killed",
)
SHORT = ("primary-killed", "instance-killed", "room-primary-killed")
#: Faults whose storm goes through a waiting room on both of the phase's items
#: (every buyer joins the line, waits for its turn, then adds and pays with its
#: admission), and the fault each injects.
ROOMED = {"room-primary-killed": "primary-killed"}
#: Faults run against instances of their own that connect straight to the
#: PostgreSQL nodes (no PgBouncer in front of them), behind an HAProxy of their own.
UNPOOLED = ("primary-frozen-unpooled",)
#: Their pool each: with no PgBouncer to cap them, the instances' connections
#: together must stay below the node's max_connections (100) with room for the
#: keeper and the monitor's checks; the shop's role is a superuser here, so
#: past it even the slots reserved for them go, and the new primary's keeper
#: cannot finish its promotion (found by this phase with two workers each).
UNPOOLED_POOL_SIZE = 24
PRICE = "1.00"
STOCK = 10_000_000  # the hot item: it sells through every phase
# A second item per phase, bought by every tenth buyer: it sells out around
# the fault (SALES_BEFORE sales come first), so overselling would show.
SCARCE_STOCK = 30
#: Sales that must be seen before a fault (the storm is flowing) and after the
#: recovery (it flows again) before the phase ends.
SALES_BEFORE, SALES_AFTER = 200, 200


@dataclass
class FaultResult:
    fault: str
    acknowledged: int = 0
    lost: int = 0  # acknowledged orders (and adds) missing on the final primary
    oversold: int = 0  # units sold beyond the stock
    doubled: int = 0  # buyers (one key each) with two orders
    five_xx: int = 0  # 5xx answers other than 503
    violations: list[str] = field(default_factory=list)
    scarce_sold_out: bool = False  # the second item sold out in the phase (as meant)
    back_after_s: float = 0.0  # from the fault to the end of the longest stretch without a sale
    longest_without_sale_s: float = 0.0  # within the phase
    promoted_after_s: float | None = None  # from the fault to a new primary
    answers: dict[str, int] = field(default_factory=dict)
    # Through a waiting room: what the room answered the storm's buyers
    # (storm.StormLog.room), and orders whose buyer was never admitted.
    room: dict[str, int] = field(default_factory=dict)
    unadmitted: int = 0
    t0: float = 0.0
    fault_at: float = 0.0
    recovered_at: float = 0.0
    timeline: list[dict] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return not (
            self.lost
            or self.oversold
            or self.doubled
            or self.five_xx
            or self.violations
            or self.unadmitted
            or self.room_refusals
        )

    @property
    def room_refusals(self) -> int:
        """Answers a well-behaved buyer in the room must never get: an add or a
        pay refused ``queue_required``, a join or a poll refused, a place that
        stopped moving."""
        return sum(
            n
            for name, n in self.room.items()
            if name in ("queue_required", "gave up") or "refused" in name
        )


class Drill:
    def __init__(self, root: Path, connections: int) -> None:
        self.root = root
        self.connections = connections
        self.cluster = Cluster(root / "cluster")
        self.instances: Instances | None = None
        self.balancer: Balancer | None = None
        self.item_id = 0
        # The instances' SECRET_KEY: the drill signs its admin token with it.
        self.secret_key = secrets.token_urlsafe(32)

    def up(self) -> None:
        self.cluster.start()
        migrations.upgrade(self.cluster.shop_url(through_bouncers=False))
        self.item_id = self._create_item()
        stats_port = free_port()  # the console shows the instances as HAProxy sees them
        self.instances = Instances(
            self.root,
            self.cluster.shop_url(through_bouncers=True),
            stats_url=f"http://127.0.0.1:{stats_port}/stats;csv",
            env={"SECRET_KEY": self.secret_key},
        )
        self.instances.start()
        self.balancer = Balancer(self.root, self.instances.ports, stats_port)
        self.balancer.start()
        wait_for("every instance ready behind HAProxy", self._all_ready, 60)

    def describe(self) -> str:
        assert self.balancer is not None and self.instances is not None
        states = ", ".join(f"{n} {r}" for n, (r, _) in sorted(self.cluster.states().items()))
        instances = ", ".join(f":{p}" for p in self.instances.ports)
        return (
            f"{states}; HAProxy :{self.balancer.port} in front of instances {instances}; "
            f"shop URL {self.cluster.shop_url()}"
        )

    def down(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        if self.instances is not None:
            self.instances.stop()
        self.cluster.stop()

    def _create_item(self) -> int:
        return _create_item(self.cluster.shop_url(through_bouncers=False))

    def _all_ready(self) -> bool:
        assert self.instances is not None
        return _ready(self.instances.ports)

    # --- what the topology costs -----------------------------------------------------

    def measure(self, seconds: float, single_url: str) -> dict[str, float]:
        """Sales/s of the drill's storm (add, then pay, keyed) for ``seconds``
        with no fault: through the topology (HAProxy, three instances, PgBouncer,
        synchronous replication), then against one instance of the default
        model on a single PostgreSQL (``single_url``), in the same sitting."""
        assert self.balancer is not None
        through = self._rate(self.balancer.port, self.item_id, seconds, "measure-ha-")
        migrations.upgrade(single_url)
        item = _create_item(single_url)
        # The default model: one worker per core.
        env = {k: v for k, v in INSTANCE_ENV.items() if k != "WEB_CONCURRENCY"}
        with GunicornProcess({**env, "DATABASE_URL": single_url}) as one:
            alone = self._rate(one.port, item, seconds, "measure-single-")
        return {"topology_sales_per_s": through, "single_server_sales_per_s": alone}

    def _rate(self, port: int, item_id: int, seconds: float, prefix: str) -> float:
        storm = Storm("127.0.0.1", port, item_id, PRICE, self.connections, prefix).start()
        try:
            wait_for("sales flowing", lambda: len(storm.log.acknowledged) >= SALES_BEFORE, 60)
            start, sold = time.monotonic(), len(storm.log.acknowledged)
            time.sleep(seconds)  # a rate over a window of time
            return (len(storm.log.acknowledged) - sold) / (time.monotonic() - start)
        finally:
            storm.stop()

    # --- one fault ----------------------------------------------------------------

    def run(self, fault: str) -> FaultResult:
        assert self.balancer is not None
        if fault not in UNPOOLED:
            return self._run(fault, self.balancer.port)
        # The same shop, its URL listing the PostgreSQL nodes themselves.
        root = self.root / "unpooled"
        root.mkdir(exist_ok=True)
        root.chmod(0o755)
        instances = Instances(root, self.cluster.shop_url(through_bouncers=False))
        for process in instances.processes:
            process.env["DB_POOL_SIZE"] = str(UNPOOLED_POOL_SIZE)
        balancer: Balancer | None = None
        try:
            instances.start()
            balancer = Balancer(root, instances.ports)
            balancer.start()
            wait_for("the unpooled instances ready", lambda: _ready(instances.ports), 60)
            return self._run(fault, balancer.port)
        finally:
            if balancer is not None:
                balancer.stop()
            instances.stop()

    def _run(self, fault: str, port: int) -> FaultResult:
        result = FaultResult(fault)
        url = self.cluster.shop_url(through_bouncers=False)
        roomed = fault in ROOMED
        # A phase through the room buys a hot item of its own (its room closed
        # after the phase); the others share the drill's.
        items = PhaseItems(
            hot=_create_item(url) if roomed else self.item_id,
            hot_stock=STOCK,
            scarce=_create_item(url, SCARCE_STOCK),
            scarce_stock=SCARCE_STOCK,
            roomed=roomed,
        )
        rooms: Rooms | None = None
        if roomed:
            assert self.instances is not None
            rooms = Rooms(self.secret_key, port, self.instances.ports)
            rooms.open({items.hot: HOT_MAX_ADMITTED, items.scarce: SCARCE_MAX_ADMITTED})
        storm = Storm(
            "127.0.0.1",
            port,
            items.hot,
            PRICE,
            self.connections,
            f"{fault}-",
            scarce_item_id=items.scarce,
            room=roomed,
        ).start()
        result.t0 = time.time()
        try:
            wait_for(
                "sales before the fault", lambda: len(storm.log.acknowledged) >= SALES_BEFORE, 60
            )
            result.fault_at = time.time()
            recover = self._inject(ROOMED.get(fault, fault), result)
            wait_for(
                "a sale after the fault",
                lambda: first_sale_after(storm.log, result.fault_at) is not None,
                120,
            )
            recover()
            result.recovered_at = time.time()
            sold = len(storm.log.acknowledged)
            wait_for(
                "sales after the recovery",
                lambda: len(storm.log.acknowledged) >= sold + SALES_AFTER,
                120,
            )
        finally:
            log = storm.stop()
        check(result, log, url, items)
        if rooms is not None:
            rooms.close([items.hot, items.scarce])
        return result

    def _inject(self, fault: str, result: FaultResult):
        """Inject ``fault``; returns what brings the topology back to full health."""
        cluster = self.cluster
        primary = cluster.primary()
        assert primary is not None, "no primary before the fault"
        standby = cluster.standby_of(primary)

        def promoted() -> bool:
            if cluster.primary() is standby:
                result.promoted_after_s = time.time() - result.fault_at
                return True
            return False

        if fault == "primary-killed":
            cluster.kill_host(primary)
            wait_for("the standby promoted", promoted, 120, poll_s=0.05)
            return lambda: self._rejoin(lambda: cluster.restart_host(primary))
        if fault in ("primary-frozen", "primary-frozen-unpooled"):
            cluster.freeze_host(primary)
            wait_for("the standby promoted", promoted, 120, poll_s=0.05)
            return lambda: self._rejoin(lambda: cluster.thaw_host(primary))
        if fault == "standby-killed":
            cluster.kill_host(standby)
            return lambda: self._rejoin(lambda: cluster.restart_host(standby))
        assert self.instances is not None and self.balancer is not None
        if fault == "instance-killed":
            self.instances.kill(0)
            return lambda: self._restart_instance(0)
        if fault == "instance-drained":  # a deploy: SIGTERM, requests in flight finish
            self.instances.drain(1)
            return lambda: self._restart_instance(1)
        if fault == "haproxy-restarted":
            self.balancer.restart()
            return lambda: None
        if fault == "pgbouncer-restarted":
            cluster.restart_bouncer(primary)
            return lambda: None
        raise ValueError(f"unknown fault {fault!r}")

    def _rejoin(self, bring_back) -> None:
        """The lost node back; returns once a primary has a synchronous standby
        again (the old primary rejoined as a standby, never a second primary)."""
        bring_back()
        wait_for("a synchronous standby again", self.cluster.synchronous, 180, poll_s=0.2)

    def _restart_instance(self, index: int) -> None:
        assert self.instances is not None
        self.instances.restart(index)
        wait_for("the instance back behind HAProxy", self._all_ready, 60)


def _ready(ports: list[int]) -> bool:
    """Every instance on these ports answers /readyz 200."""
    import urllib.request

    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            if r.status != 200:
                return False
    return True


def _create_item(url: str, stock: int = STOCK) -> int:
    """An item on sale, with its initial stock in the ledger."""
    libpq_url = url.replace("postgresql+psycopg2://", "postgresql://", 1)
    with psycopg2.connect(libpq_url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO items (name, price, stock) VALUES ('Drill item', %s, %s) RETURNING id",
            (PRICE, stock),
        )
        (item_id,) = cur.fetchone()
        cur.execute(
            "INSERT INTO stock_movements (item_id, quantity, reason) VALUES (%s, %s, 'initial')",
            (item_id, stock),
        )
    conn.close()
    return item_id


def as_dict(result: FaultResult) -> dict:
    return {**asdict(result), "correct": result.correct}
