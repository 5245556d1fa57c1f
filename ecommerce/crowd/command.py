"""`flask crowd`: a 12.12 crowd for one hot item, with the waiting room and
without it, straight to gunicorn and through HAProxy; prints the table and
writes a JSON report and a chart under instance/crowd/."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import replace
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from ecommerce.crowd.report import table, write_chart
from ecommerce.crowd.run import CrowdConfig, run_crowd_sale
from ecommerce.flashsale.command import machine_facts, simulator_database


def suite_configs(base: CrowdConfig) -> list[CrowdConfig]:
    """make bench's crowd rows: the room on and off, straight and through HAProxy."""
    return [
        replace(base, room=room, via=via) for via in ("direct", "haproxy") for room in (True, False)
    ]


def _haproxy_missing() -> bool:
    return not (shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists())


@click.command("crowd", help="A 12.12 crowd for one hot item, with and without the waiting room.")
@click.option("--buyers", default=8000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--stock", default=500, show_default=True, type=click.IntRange(1, 10**7))
@click.option(
    "--arrival",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Buyers arrive evenly within this many seconds.",
)
@click.option("--room/--no-room", default=True, show_default=True, help="Open the waiting room.")
@click.option(
    "--via",
    type=click.Choice(["direct", "haproxy"]),
    default="direct",
    show_default=True,
    help="direct: straight to one gunicorn; haproxy: three instances behind "
    "deploy/haproxy/haproxy.cfg.",
)
@click.option("--mode", type=click.Choice(["fifo", "random"]), default="fifo", show_default=True)
@click.option(
    "--max-admitted",
    default=None,
    type=click.IntRange(1),
    help="The room's cap on buyers admitted and not done (default QUEUE_MAX_ADMITTED).",
)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--suite",
    is_flag=True,
    help="make bench's crowd rows: room on and off, straight and through HAProxy.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A setting of the shop started (docs/CONFIGURATION.md); repeatable.",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the JSON and PNG (default: instance/crowd).",
)
@with_appcontext
def crowd(
    buyers: int,
    stock: int,
    arrival: float,
    room: bool,
    via: str,
    mode: str,
    max_admitted: int | None,
    workers: int,
    suite: bool,
    settings: tuple[str, ...],
    out_dir: Path | None,
) -> None:
    env = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{setting!r} is not NAME=VALUE", param_hint="--set")
        env[name] = value
    base = CrowdConfig(
        buyers=buyers,
        stock=stock,
        arrival_s=arrival,
        room=room,
        via=via,
        workers=workers,
        mode=mode,
        max_admitted=max_admitted,
        server_env=env,
    )
    configs = suite_configs(base) if suite else [base]
    if _haproxy_missing():
        skipped = [c for c in configs if c.via == "haproxy"]
        for config in skipped:
            click.echo(f"{config.label}: skipped, HAProxy is not installed", err=True)
        configs = [c for c in configs if c.via != "haproxy"]
    database_url = simulator_database(current_app.extensions["shop"].db.url)
    results = []
    for config in configs:
        click.echo(f"{config.label}: {config.stock} units ...", err=True)
        results.append(run_crowd_sale(database_url, config).as_json())
    if not results:
        raise click.ClickException("nothing to run")
    out_dir = out_dir or Path(current_app.instance_path) / "crowd"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path, png_path = out_dir / f"crowd-{stamp}.json", out_dir / f"crowd-{stamp}.png"
    json_path.write_text(
        json.dumps({"machine": machine_facts(database_url), "runs": results}, indent=2)
    )
    write_chart(results, png_path)
    click.echo(table(results))
    click.echo(f"\nreport: {json_path}\nchart:  {png_path}")
    if not all(r["correct"] for r in results):
        raise click.exceptions.Exit(1)
