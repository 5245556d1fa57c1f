"""Command-line tools: ``flask db ...``, ``flask seed``, ``flask embedded-db ...`` and
the shop's operations. Each command calls one use case of ecommerce.services.

`flask flashsale` is not registered here: the simulator is a tool beside the
shop, registered as a ``flask.commands`` entry point (setup.cfg), so no gunicorn
worker ever imports it.
"""

from __future__ import annotations

from decimal import Decimal

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from ecommerce import tokens
from ecommerce.config import Settings
from ecommerce.database import embedded, migrations
from ecommerce.errors import ShopError
from ecommerce.limits import MAX_ID, MAX_QUANTITY, USER_ID_PATTERN, USER_ID_RULE
from ecommerce.money import MoneyError, parse_amount
from ecommerce.observability import metrics
from ecommerce.services import (
    Shop,
    console,
    idempotency,
    invariants,
    inventory,
    orders,
    settlement,
)

# The design note's sample data: name, price, stock.
SAMPLE_ITEMS = [
    ("Apple", Decimal("0.50"), Decimal("10")),
    ("Banana", Decimal("0.30"), Decimal("10")),
    ("Orange", Decimal("0.70"), Decimal("10")),
]


def _shop() -> Shop:
    return current_app.extensions["shop"]


def _settings() -> Settings:
    return current_app.extensions["settings"]


db_group = AppGroup("db", help="Schema migrations (Alembic).")


@db_group.command("upgrade", help="Upgrade the schema (to head by default).")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    migrations.upgrade(_shop().db.url, revision)


@db_group.command("downgrade", help="Downgrade the schema (one step by default; 'base' for all).")
@click.argument("revision", default="-1")
def db_downgrade(revision: str) -> None:
    migrations.downgrade(_shop().db.url, revision)


@db_group.command("current", help="Show the schema's current revision.")
def db_current() -> None:
    migrations.current(_shop().db.url)


@click.command("seed", help="Insert the sample items (Apple, Banana, Orange) once.")
@with_appcontext
def seed() -> None:
    added = inventory.add_missing_items(_shop(), SAMPLE_ITEMS)
    click.echo(f"seeded: {', '.join(added)}" if added else "sample items already present")


embedded_group = AppGroup(
    "embedded-db", help="The embedded PostgreSQL used when DATABASE_URL is unset."
)


@embedded_group.command("start", help="Start it (if needed) and print its URL.")
def embedded_start() -> None:
    click.echo(embedded.embedded_database_url(_settings().instance_path))


@embedded_group.command("stop", help="Stop it; its data stays under instance/postgres.")
def embedded_stop() -> None:
    stopped = embedded.stop_server(_settings().instance_path)
    click.echo("stopped" if stopped else "not running")


@click.command("check-invariants", help="Verify stock, orders and payments add up.")
@with_appcontext
def check_invariants() -> None:
    violations = invariants.check(_shop())
    if not violations:
        click.echo("ok: all invariants hold")
        return
    for violation in violations:
        click.echo(str(violation), err=True)
    raise click.exceptions.Exit(1)


@click.command("prune-idempotency-keys", help="Delete expired idempotency keys.")
@with_appcontext
def prune_idempotency_keys() -> None:
    click.echo(f"deleted {idempotency.prune_expired(_shop())} expired idempotency keys")


@click.command(
    "console-link", help="Print a one-time sign-in URL of the operator's console (last word)."
)
@click.option("--admin", "admin", default="operator", show_default=True, help="Who signs in.")
@click.option(
    "--ttl", default=600, show_default=True, type=click.IntRange(1, 86400), help="Seconds."
)
@click.option(
    "--base-url",
    default=None,
    help="Where the console is served (default: http://localhost:PORT).",
)
@with_appcontext
def console_link(admin: str, ttl: int, base_url: str | None) -> None:
    nonce = console.issue_link(_shop(), admin, ttl)
    base = (base_url or f"http://localhost:{_settings().port}").rstrip("/")
    click.echo(f"{base}/console/login?link={nonce}")


@click.command(
    "release-expired",
    help="Expire pending orders past their reservation and put their stock back (cron: every "
    "minute).",
)
@with_appcontext
def release_expired() -> None:
    expiry = orders.release_expired(_shop())
    _job_ran("release_expired", expiry.failed)
    click.echo(f"released {expiry.released} expired reservations")
    if expiry.failed:
        # A non-zero exit marks the run failed (cron mails it; a systemd timer's
        # unit shows it); the orders are tried again at the next run.
        raise click.ClickException(
            f"{expiry.failed} expired reservations could not be released this run (see the log)"
        )


@click.command(
    "reconcile-payments",
    help="Ask the payment provider about every pending order and settle it; resend recent refunds.",
)
@with_appcontext
def reconcile_payments() -> None:
    shop = _shop()
    if shop.gateway is None:
        raise click.UsageError("PAYMENT_GATEWAY_URL is not set: every pay is settled at once")
    counts = settlement.reconcile_payments(shop)
    _job_ran("reconcile_payments", counts["unknown"])
    click.echo(", ".join(f"{name} {count}" for name, count in counts.items()))


def _job_ran(job: str, failures: int) -> None:
    """The run's figures for node_exporter's textfile collector (JOB_METRICS_DIR)."""
    directory = _settings().job_metrics_dir
    if directory:
        metrics.write_job_metrics(directory, job, failures)


@click.command(
    "issue-token", help="Print a bearer token for USER_ID (with --admin: an admin token for NAME)."
)
@click.argument("user_id")
@click.option("--admin", is_flag=True, help="An admin token (the admin API), not a buyer's.")
@click.option(
    "--ttl",
    default=tokens.DEFAULT_TTL_S,
    show_default=True,
    type=click.IntRange(1),
    help="Lifetime in seconds.",
)
@with_appcontext
def issue_token(user_id: str, admin: bool, ttl: int) -> None:
    if not USER_ID_PATTERN.match(user_id):
        raise click.BadParameter(USER_ID_RULE, param_hint="USER_ID")
    now = _shop().clock().timestamp()
    click.echo(tokens.issue_token(_settings().secret_key, user_id, ttl, admin=admin, now=now))


@click.command("add-item", help="Add an item with its opening stock; prints its id.")
@click.argument("name")
@click.argument("price")
@click.argument("stock", type=click.IntRange(0, MAX_QUANTITY))
@with_appcontext
def add_item(name: str, price: str, stock: int) -> None:
    try:
        item = inventory.add_item(_shop(), name, parse_amount(price), Decimal(stock))
    except (ShopError, MoneyError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(item.id)


@click.command("restock", help="Add QUANTITY units to an item's stock.")
@click.argument("item_id", type=click.IntRange(1, MAX_ID))
@click.argument("quantity", type=click.IntRange(1, MAX_QUANTITY))
@with_appcontext
def restock(item_id: int, quantity: int) -> None:
    try:
        item = inventory.restock(_shop(), item_id, Decimal(quantity))
    except ShopError as exc:
        raise click.UsageError(exc.message) from exc
    click.echo(f"item {item_id} stock is now {item.stock:.2f}")


def init_app(app: Flask) -> None:
    for command in (
        db_group,
        seed,
        embedded_group,
        check_invariants,
        prune_idempotency_keys,
        release_expired,
        reconcile_payments,
        console_link,
        issue_token,
        add_item,
        restock,
    ):
        app.cli.add_command(command)
