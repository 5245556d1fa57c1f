"""`flask flashsale`: run the sale, check it, measure it, draw it.

Registered as a ``flask.commands`` entry point (setup.cfg), so the shop itself
never imports the simulator.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import replace
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import create_engine, make_url, text

from ecommerce.database import migrations
from ecommerce.database.embedded import ensure_database
from ecommerce.flashsale import goseed, hop
from ecommerce.flashsale.report import cpu_table, table, write_chart, write_json
from ecommerce.flashsale.run import (
    PROFILE_FORMATS,
    STRATEGIES,
    SaleConfig,
    control_proves_the_checks,
    run_sale,
)

COMPARE_ORDER = STRATEGIES
GO_SEED = "go_seed"  # the design note's Go service (ecommerce/flashsale/goseed.py)


def simulator_database(app_url: str) -> str:
    """The simulator's own database, next to the shop's on the same server."""
    url = make_url(app_url)
    own = url.set(database=f"{url.database}_flashsale")
    ensure_database(own)
    rendered = own.render_as_string(hide_password=False)
    migrations.upgrade(rendered)
    return rendered


def machine_facts(database_url: str) -> dict[str, object]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one()
        sync = conn.execute(text("SHOW synchronous_commit")).scalar_one()
    engine.dispose()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": version,
        "synchronous_commit": sync,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@click.command("flashsale", help="Simulate a 12.12 flash sale over HTTP and report.")
@click.option(
    "--strategy",
    type=click.Choice(sorted((*STRATEGIES, GO_SEED))),
    default="for_update",
    show_default=True,
    help="for_update: the shop; naive: the negative control, the shop with the 12.12 "
    "bug put back (ecommerce/flashsale/naive.py); go_seed: the design note's Go service "
    "(needs --go-seed). With --url, the one the target runs (it labels the run).",
)
@click.option(
    "--go-seed",
    "go_seed",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="The design note's Go service's source: built with Debian's Go, it is sold "
    "through in the same sitting (--suite: pay only and the whole flow) and the shop's "
    "rows are given as ratios to it. Without Go the rows are skipped, saying why.",
)
@click.option(
    "--profile",
    "profile_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sample one gunicorn worker with py-spy through the storm into this file: "
    ".svg a flame graph, .txt collapsed stacks, .json speedscope (make profile).",
)
@click.option(
    "--cpu",
    "show_cpu",
    is_flag=True,
    help="Print the CPU per buyer paid of the server, PostgreSQL and the load generator "
    "(always in the JSON report; --suite prints it too).",
)
@click.option("--compare", is_flag=True, help="Run the shop and the naive negative control.")
@click.option(
    "--suite",
    is_flag=True,
    help="The sale-night suite (make bench): one hot item, pay-only with pays combined "
    "and alone, pay-only with an Idempotency-Key on every pay, the full buyer flow "
    "combined and alone, a sold-out storm, and naive as the negative control; one "
    "pgbench ceiling for all.",
)
@click.option(
    "--mode",
    type=click.Choice(["flow", "pay"]),
    default="flow",
    show_default=True,
    help="flow: each buyer adds, checks out and pays; pay: carts are prepared and every "
    "request pays a different buyer.",
)
@click.option("--keys", is_flag=True, help="Send an Idempotency-Key with every pay.")
@click.option(
    "--combining/--no-combining",
    default=True,
    show_default=True,
    help="PAY_COMBINING and CART_COMBINING of the server started (--no-combining: "
    "every pay, add and cart read is a transaction of its own).",
)
@click.option(
    "--gateway-latency-ms",
    default=None,
    type=click.IntRange(0, 60_000),
    help="Pay through a fake payment provider that answers after this many ms "
    "(reserve, charge with no lock held, confirm); reports orders by status.",
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    show_default=True,
    help="METRICS of the server started (the suite runs pay-only both ways).",
)
@click.option(
    "--stock",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 10**7),
    help="Units on sale (S).",
)
@click.option(
    "--buyers",
    default=4000,
    show_default=True,
    type=click.IntRange(1),
    help="Buyers (B), each wanting one unit.",
)
@click.option(
    "--connections",
    default=64,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Concurrent HTTP connections (C).",
)
@click.option(
    "--duration",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.5),
    help="Stop after this many seconds even if buyers remain.",
)
@click.option(
    "--items",
    default=1,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="SKUs the stock is spread over (1 = one hot item).",
)
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="gunicorn workers."
)
@click.option(
    "--threads",
    default=32,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn threads per worker with gthread; the pool size (threads + 1) with both.",
)
@click.option(
    "--worker-class",
    default="gevent",
    show_default=True,
    type=click.Choice(["gevent", "gthread", "sync"]),
    help="gunicorn's worker class (gevent: greenlets on one thread per worker).",
)
@click.option(
    "--db-hop-us",
    "db_hop_us",
    default=0,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="Put the database one network hop away from the server (the shop's or the Go "
    "design's): a relay on the loopback adds this round trip (us) to every exchange "
    "with PostgreSQL; its CPU is reported apart (needs a C compiler). With --suite: "
    "pay only and the flow again, shop and Go, with the hop.",
)
@click.option("--url", default=None, help="Target a running server instead of starting one.")
@click.option(
    "--database-url",
    default=None,
    help="The server's database (default: a '<db>_flashsale' database of the simulator's "
    "own). With --url, sale items, their orders and the ceiling's orders are written there.",
)
@click.option("--no-ceiling", is_flag=True, help="Skip the pgbench ceiling.")
@click.option(
    "--capacity",
    is_flag=True,
    help="Only measure the database: commit latency and buyers/s of one hot row with "
    "1-64 buyers per commit (pgbench on scratch tables; docs/CAPACITY.md).",
)
@click.option("--ceiling-seconds", default=5.0, show_default=True, type=click.FloatRange(1))
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the JSON and PNG (default: instance/flashsale).",
)
@with_appcontext
def flashsale(
    strategy: str,
    go_seed: Path | None,
    profile_path: Path | None,
    show_cpu: bool,
    compare: bool,
    suite: bool,
    mode: str,
    keys: bool,
    combining: bool,
    gateway_latency_ms: int | None,
    metrics: bool,
    stock: int,
    buyers: int,
    connections: int,
    duration: float,
    items: int,
    workers: int,
    threads: int,
    worker_class: str,
    db_hop_us: int,
    url: str | None,
    database_url: str | None,
    no_ceiling: bool,
    capacity: bool,
    ceiling_seconds: float,
    out_dir: Path | None,
) -> None:
    shop = current_app.extensions["shop"]
    if url and (compare or suite or profile_path):
        raise click.UsageError(
            "--compare, --suite and --profile start their own servers; not with --url"
        )
    if url and db_hop_us:
        raise click.UsageError("--db-hop-us puts a hop before a server it starts; not with --url")
    if profile_path and (compare or suite):
        raise click.UsageError("--profile samples one run: not with --compare or --suite")
    if profile_path and profile_path.suffix not in PROFILE_FORMATS:
        raise click.UsageError(f"--profile: a file ending {', '.join(PROFILE_FORMATS)}")
    if url:
        own_database = False
        database_url = database_url or shop.db.url
    else:
        own_database = database_url is None
        database_url = database_url or simulator_database(shop.db.url)

    if capacity and db_hop_us:
        raise click.UsageError("--capacity measures the database alone; not with --db-hop-us")
    if capacity:
        from ecommerce.flashsale import capacity as capacity_model

        click.echo(
            capacity_model.report(*capacity_model.measure(database_url, seconds=ceiling_seconds))
        )
        return

    base = SaleConfig(
        strategy=strategy,
        stock=stock,
        buyers=buyers,
        connections=connections,
        duration_s=duration,
        items=items,
        workers=workers,
        threads=threads,
        worker_class=worker_class,
        url=url,
        ceiling=not no_ceiling,
        ceiling_seconds=ceiling_seconds,
        mode=mode,
        keys=keys,
        combining=combining,
        metrics=metrics,
        gateway_latency_ms=gateway_latency_ms,
        profile_path=str(profile_path) if profile_path else None,
    )
    if suite:
        configs = suite_configs(base)
    elif compare:
        configs = [replace(base, strategy=name) for name in COMPARE_ORDER]
    else:
        configs = [base]
    out_dir = out_dir or Path(current_app.instance_path) / "flashsale"
    # The relay first (seconds), the Go design after (minutes, the first time).
    relay: Path | str | None = hop.build(out_dir) if db_hop_us else None
    hop_skipped = None
    if isinstance(relay, str) and not suite:
        raise click.ClickException(f"--db-hop-us: {relay}")
    go_skipped = None
    if go_seed is not None or strategy == GO_SEED:
        if url:
            raise click.UsageError("--go-seed starts the Go service itself; not with --url")
        built = goseed.build(go_seed, out_dir) if go_seed else "no --go-seed source given"
        if isinstance(built, str):
            go_skipped = built
            click.echo(f"the Go design's rows are skipped: {built}", err=True)
            configs = [c for c in configs if c.strategy != GO_SEED]
            if not configs:  # --strategy go_seed alone
                raise click.ClickException(f"nothing to run: {built}")
        else:
            configs += go_seed_configs(base) if suite else []
            configs = [
                replace(c, go_binary=str(built)) if c.strategy == GO_SEED else c for c in configs
            ]
    if isinstance(relay, str):
        hop_skipped = relay
        click.echo(f"the rows one hop away are skipped: {relay}", err=True)
    elif relay is not None:
        away = replace(base, db_hop_us=db_hop_us, hop_binary=str(relay))
        if suite:  # the suite's rows as they are, then the hop's beside them
            go = [c for c in configs if c.strategy == GO_SEED]
            configs += hop_configs(away, go[0].go_binary if go else None)
        else:
            configs = [replace(c, db_hop_us=db_hop_us, hop_binary=str(relay)) for c in configs]
    out_dir.mkdir(parents=True, exist_ok=True)
    if not url:
        configs = [replace(c, server_log=str(out_dir / "server.log")) for c in configs]
    results = []
    ceiling = None
    for config in configs:
        click.echo(f"{config.label}: {config.stock} units, {config.buyers} buyers ...", err=True)
        if config.strategy == GO_SEED:
            result = goseed.run_sale(config, goseed.database(shop.db.url))
            results.append(result.as_json())
            continue
        result = run_sale(database_url, config, own_database=own_database)
        if result.ceiling_tps:
            ceiling = result.ceiling_tps
        elif ceiling and config.strategy != "naive":
            result.ceiling_tps = ceiling  # measured once in this run
            result.ratio_to_ceiling = result.paid_per_s / ceiling
        results.append(result.as_json())

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"flashsale-{stamp}.json"
    png_path = out_dir / f"flashsale-{stamp}.png"
    machine = machine_facts(database_url)
    if go_skipped:
        machine["go_seed_skipped"] = go_skipped
    if hop_skipped:
        machine["db_hop_skipped"] = hop_skipped
    write_json(results, machine, json_path)
    write_chart(results, png_path)

    click.echo(table(results))
    if show_cpu or suite:
        click.echo("\n" + cpu_table(results))
    if go_skipped:
        click.echo(f"the Go design's rows: skipped ({go_skipped})")
    if hop_skipped:
        click.echo(f"the rows one hop away: skipped ({hop_skipped})")
    for r in results:
        if r["loadgen_cpu_share"] > 0.85:
            click.echo(
                f"note: the load generator used {r['loadgen_cpu_share']:.0%} of a core in the "
                f"{r['config']['strategy']} run; it may have been a bottleneck",
                err=True,
            )
    click.echo(f"\nreport: {json_path}\nchart:  {png_path}")
    for r in results:
        if r["config"]["strategy"] == "naive" and not control_proves_the_checks(r):
            click.echo(
                f"the negative control did not break the books cleanly (oversold "
                f"{r['oversold_units']}, unaccounted {r['unaccounted_units']}, "
                f"5xx {r['five_xx']}): its row proves nothing",
                err=True,
            )
            raise click.exceptions.Exit(1)
    broken = [r["config"]["strategy"] for r in results if not r["correct"]]
    if broken and not ((compare or suite) and broken == ["naive"]):
        raise click.exceptions.Exit(1)


def suite_configs(base: SaleConfig) -> list[SaleConfig]:
    """make bench: one hot item, 64 connections, each run ``base.duration_s`` long.

    The pay-only runs have stock for every buyer, so they measure the selling
    rate for the whole run; the sold-out storm sells 50 units to buyers that keep
    coming for the rest of the run.
    """
    plenty = _plenty(base)
    return [
        replace(plenty, mode="pay", combining=True, ceiling=base.ceiling),
        replace(plenty, mode="pay", combining=True, metrics=False),  # the cost of metrics
        replace(plenty, mode="pay", combining=False),
        replace(plenty, mode="pay", keys=True, combining=True),
        replace(plenty, mode="flow", combining=True),
        replace(plenty, mode="flow", combining=False),
        replace(plenty, mode="pay", stock=50, buyers=200_000, combining=True),
        # Twice the units in buyers, all served within the row's seconds: its
        # lost updates sell more units than the item received (oversold).
        replace(plenty, mode="flow", strategy="naive", stock=500, buyers=1000),
    ]


def go_seed_configs(base: SaleConfig) -> list[SaleConfig]:
    """The Go design's rows of the suite: pay only and the whole flow, as the shop's."""
    plenty = _plenty(base)
    return [
        replace(plenty, strategy=GO_SEED, mode="pay"),
        replace(plenty, strategy=GO_SEED, mode="flow"),
    ]


def hop_configs(away: SaleConfig, go_binary: str | None) -> list[SaleConfig]:
    """The suite's rows with the database one hop away (``away``: its hop):
    pay only and the whole flow, the shop's, and the Go design's when built."""
    plenty = replace(
        _plenty(away),
        strategy="for_update",
        keys=False,
        combining=True,
        metrics=True,
        gateway_latency_ms=None,
    )
    shop = [replace(plenty, mode="pay"), replace(plenty, mode="flow")]
    if go_binary is None:
        return shop
    return shop + [replace(c, strategy=GO_SEED, go_binary=go_binary) for c in shop]


def _plenty(base: SaleConfig) -> SaleConfig:
    """One hot item with stock for every buyer (a row measures the selling rate
    for its whole run), no ceiling of its own."""
    return replace(base, items=1, stock=200_000, buyers=200_000, ceiling=False)
