"""What one hot row takes, straight from PostgreSQL: `flask flashsale --capacity`.

pgbench runs a model of the shop's pay on scratch tables of their own (created
for the measurement and dropped after; the shop's tables are not touched):
lock the hot row FOR NO KEY UPDATE, write K orders, take K units, COMMIT — one
transaction for K buyers, as a combined pay does. With K = 1 and one client it
measures the commit latency the row is held for; the K sweep shows how many
buyers per second the row takes when K buyers share a commit. These are the
database's numbers alone (no HTTP, no Python): the ceiling the shop works
under, see docs/CAPACITY.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine, text

from ecommerce.flashsale.ceiling import run_pgbench

SCRATCH_ORDERS = "capacity_probe_orders"
SCRATCH_STOCK = "capacity_probe_stock"


def batch_script(buyers: int) -> str:
    return "\n".join(
        [
            "BEGIN;",
            f"SELECT stock FROM {SCRATCH_STOCK} WHERE id = 1 FOR NO KEY UPDATE;",
            f"INSERT INTO {SCRATCH_ORDERS} (user_id, total)"
            f" SELECT 'buyer-' || g, 9.99 FROM generate_series(1, {buyers}) AS g;",
            f"UPDATE {SCRATCH_STOCK} SET stock = stock - {buyers} WHERE id = 1;",
            "COMMIT;",
            "",
        ]
    )


@dataclass(frozen=True)
class CapacityPoint:
    buyers_per_commit: int
    clients: int
    commits_per_s: float

    @property
    def buyers_per_s(self) -> float:
        return self.commits_per_s * self.buyers_per_commit

    @property
    def commit_ms(self) -> float:
        """Time the row is held per commit, as the clients see it."""
        return 1000 * self.clients / self.commits_per_s if self.clients == 1 else float("nan")


def measure(
    database_url: str,
    batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64),
    clients: int = 4,
    seconds: float = 4,
) -> tuple[CapacityPoint, list[CapacityPoint]]:
    """(one client, one buyer per commit: the commit latency), then the sweep."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {SCRATCH_ORDERS}, {SCRATCH_STOCK}"))
        conn.execute(
            text(
                f"CREATE TABLE {SCRATCH_ORDERS} (id serial PRIMARY KEY, user_id text NOT NULL,"
                " total numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        conn.execute(text(f"CREATE TABLE {SCRATCH_STOCK} (id int PRIMARY KEY, stock numeric)"))
        conn.execute(text(f"INSERT INTO {SCRATCH_STOCK} VALUES (1, 1e12)"))
    try:
        single = run_pgbench(database_url, batch_script(1), 1, seconds)
        latency = CapacityPoint(1, 1, single.tps)
        sweep = [
            CapacityPoint(
                k, clients, run_pgbench(database_url, batch_script(k), clients, seconds).tps
            )
            for k in batch_sizes
        ]
        return latency, sweep
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {SCRATCH_ORDERS}, {SCRATCH_STOCK}"))
        engine.dispose()


def report(latency: CapacityPoint, sweep: list[CapacityPoint]) -> str:
    rows = [
        f"one client, one buyer per commit: {latency.commits_per_s:.0f} commits/s "
        f"= {latency.commit_ms:.2f} ms per commit (the hot row's floor)",
        "",
        f"{'buyers/commit':>14}{'clients':>9}{'commits/s':>11}{'buyers/s':>10}",
    ]
    for p in sweep:
        rows.append(
            f"{p.buyers_per_commit:>14}{p.clients:>9}{p.commits_per_s:>11.0f}{p.buyers_per_s:>10.0f}"
        )
    return "\n".join(rows)
