"""The design note's own service, in Go, sold through in the same sitting.

``make bench`` builds it from its source (``--go-seed DIR``: gorilla/mux, a pgx
pool, ``SELECT ... FOR UPDATE`` on the stock) with Debian's Go and Go libraries,
gives it a database of its own next to the simulator's, and drives it with the
same load generator as the shop: the same hot item, the same connections, the
same buyers (add, checkout, pay; or pay only, carts prepared). Its pool is 4,
its best on 2 cores for one hot item. Its books are checked as the shop's are:
nothing oversold, every unit sold is in an order, no buyer paid twice.

Without Go, or without the source, the row is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text

from ecommerce.database.embedded import ensure_database
from ecommerce.flashsale.cpu import CpuMeter, postmaster_pid
from ecommerce.flashsale.hop import Hop, around, probing
from ecommerce.flashsale.run import (
    SALE_PRICE,
    SaleConfig,
    SaleResult,
    prepare_carts,
    record_hop,
    storm,
)
from ecommerce.flashsale.server import build_failure, free_port, stop_group, wait_until_serving

GO_PACKAGES = "golang-go golang-github-gorilla-mux-dev golang-github-jackc-pgx-v4-dev"
POOL_SIZE = 4
TABLES = "order_lines, orders, carts, items"


def build(source: Path, out_dir: Path) -> Path | str:
    """The server binary built from ``source`` into ``out_dir``, or why it could not be."""
    go = shutil.which("go")
    if go is None:
        return f"Go is not installed (apt-get install {GO_PACKAGES})"
    if not (source / "cmd" / "server" / "main.go").is_file():
        return f"no Go design at {source} (cmd/server/main.go)"
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "go-seed-server"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "go-seed"
        shutil.copytree(source, copy)
        failed = build_failure(
            [go, "build", "-o", str(binary), "./cmd/server"],
            "the Go design",
            600,
            cwd=copy,
            env={
                **os.environ,
                # Debian's Go libraries, no module download.
                "GO111MODULE": "off",
                "GOPATH": "/usr/share/gocode",
                "GOFLAGS": "",
                "GOCACHE": str(out_dir / "go-build-cache"),
            },
        )
    return failed or binary


def database(app_url: str) -> str:
    """The Go design's own database next to the shop's (its schema is its own)."""
    url = make_url(app_url)
    own = url.set(database=f"{url.database}_goseed")
    ensure_database(own)
    return own.render_as_string(hide_password=False)


def libpq_url(sqlalchemy_url: str) -> str:
    """The same database as a libpq URL, which pgx reads (a socket directory
    stays a ``host`` query parameter)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


class GoSeedProcess:
    """The Go design serving on a free loopback port."""

    def __init__(self, binary: Path, database_url: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": libpq_url(database_url),
            "PORT": str(self.port),
            "POOL_SIZE": str(POOL_SIZE),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def migrate(self) -> None:
        subprocess.run(
            [str(self.binary), "migrate"], env=self.env, check=True, capture_output=True, timeout=60
        )

    def __enter__(self) -> GoSeedProcess:
        self.process = subprocess.Popen(
            [str(self.binary)], env=self.env, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_until_serving(self.process, f"http://127.0.0.1:{self.port}/items", 30)
        except BaseException:  # not serving, or interrupted: not left running
            stop_group(self.process, 15)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_group(self.process, 15)


def run_sale(config: SaleConfig, database_url: str) -> SaleResult:
    """One sale on the Go design: ``config`` as for the shop (mode, stock, buyers,
    connections, duration, the database's hop); the books checked from a separate
    connection."""
    assert config.go_binary is not None
    engine = create_engine(database_url, pool_pre_ping=True)
    try:
        with around(config.hop_binary, database_url, config.db_hop_us) as hopped:
            server = GoSeedProcess(Path(config.go_binary), hopped.url if hopped else database_url)
            result = _run(config, engine, server, hopped)
        record_hop(result, hopped)  # after the relay stopped: its count
        return result
    finally:
        engine.dispose()


def _run(
    config: SaleConfig, engine: Engine, server: GoSeedProcess, hopped: Hop | None
) -> SaleResult:
    server.migrate()
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        item_id = conn.execute(
            text(
                "INSERT INTO items (name, price, stock) VALUES ('Flash sale', :p, :s) RETURNING id"
            ),
            {"p": SALE_PRICE, "s": config.stock},
        ).scalar_one()
    prefix = f"go-{int(time.time() * 1000) % 10**9}-"
    if config.mode == "pay":
        prepare_carts(engine, [item_id], prefix, config.buyers)
    with server:
        assert server.process is not None
        relay = hopped.pid if hopped else None
        meter = CpuMeter([server.process.pid], postmaster_pid(engine), relay)
        with probing(hopped):
            result = storm(engine, config, [item_id], prefix, "127.0.0.1", server.port, meter)
    with engine.connect() as conn:
        stock, in_orders, twice = conn.execute(
            text(
                "SELECT (SELECT stock FROM items WHERE id = :id),"
                " (SELECT coalesce(sum(quantity), 0) FROM order_lines WHERE item_id = :id),"
                " (SELECT count(*) FROM (SELECT user_id FROM orders WHERE user_id LIKE :p"
                "  GROUP BY user_id HAVING count(*) > 1) t)"
            ),
            {"id": item_id, "p": prefix + "%"},
        ).one()
    result.stock_sold = int(config.stock - stock)
    result.units_in_orders = int(in_orders)
    result.oversold_units = max(0, int(in_orders) - config.stock)
    result.unaccounted_units = abs(result.stock_sold - result.units_in_orders)
    result.charged_twice = int(twice)
    return result
