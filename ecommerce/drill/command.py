"""`flask drill`: the sale-night fault drill (see ecommerce/drill/__init__.py)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from ecommerce.drill.run import FAULTS, SHORT, Drill, FaultResult, as_dict


@click.command("drill")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    type=click.Choice(FAULTS),
    help="A fault to inject (repeatable); default: every fault. room-<fault>: the "
    "storm goes through a waiting room on the phase's items (join, wait for the turn, "
    "add and pay with the admission).",
)
@click.option("--short", is_flag=True, help=f"Only {', '.join(SHORT)} (what CI runs).")
@click.option(
    "--connections",
    type=click.IntRange(1, 1000),
    default=64,
    show_default=True,
    help="Clients in the storm.",
)
@click.option(
    "--measure",
    type=click.FloatRange(1, 600),
    default=None,
    help="Also measure sales/s for this many seconds with no fault, through the "
    "topology and against one instance on a single PostgreSQL, in the same sitting.",
)
@click.option("--keep", is_flag=True, help="Leave the topology's directory (logs, data) behind.")
@with_appcontext
def drill(
    faults: tuple[str, ...], short: bool, connections: int, measure: float | None, keep: bool
) -> None:
    """Bring the production topology up on this machine (pg_auto_failover: a
    monitor, a primary and its synchronous standby, PgBouncer beside each; three
    shop instances behind HAProxy), run a hot-item storm of well-behaved clients
    (an Idempotency-Key on every request, a 503 retried with it), inject each
    fault while it runs, and check the books on the final primary: acknowledged
    orders lost, units oversold, keys with two effects, 5xx other than 503 (all
    must be 0), and the time without a sale; through a waiting room (room-*),
    also paid buyers never admitted and buyers refused queue_required (0).
    Writes a JSON report and a chart under instance/drill/; exits 1 if any
    fault broke a promise."""
    chosen = list(faults) or list(SHORT if short else FAULTS)
    base = Path(current_app.instance_path) / "drill"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = base / stamp
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    base.chmod(0o755)
    session = Drill(root, connections)
    results: list[FaultResult] = []
    rates: dict[str, float] = {}
    click.echo(f"bringing the topology up under {root} ...")
    try:
        started = time.monotonic()
        session.up()
        click.echo(f"  up in {time.monotonic() - started:.1f} s: {session.describe()}")
        if measure:
            click.echo(f"measuring sales/s for {measure:g} s, no fault ...")
            rates = session.measure(measure, _single_server_url())
            click.echo(
                f"  through the topology {rates['topology_sales_per_s']:.0f}/s, one instance on"
                f" a single PostgreSQL {rates['single_server_sales_per_s']:.0f}/s"
            )
        for fault in chosen:
            click.echo(f"{fault}: storm of {connections} clients, fault injected ...")
            phase_started = time.monotonic()
            result = session.run(fault)
            results.append(result)
            click.echo(
                f"  {_line(result)}; the phase took {time.monotonic() - phase_started:.0f} s"
            )
    finally:
        session.down()
    report = base / f"drill-{stamp}.json"
    report.write_text(
        json.dumps(
            {"faults": [as_dict(r) for r in results], "measure": rates, "connections": connections},
            indent=1,
            default=str,
        )
    )
    click.echo("")
    click.echo(table(results))
    click.echo(f"\nreport: {report}")
    chart = base / f"drill-{stamp}.png"
    if draw(results, chart):
        click.echo(f"chart:  {chart}")
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    if not results or not all(r.correct for r in results):
        sys.exit(1)


def _single_server_url() -> str:
    """A database of the drill's own on the shop's configured (or embedded) server."""
    from sqlalchemy import make_url

    from ecommerce.database.embedded import ensure_database

    url = make_url(current_app.extensions["shop"].db.url)
    own = url.set(database=f"{url.database}_drill")
    ensure_database(own)
    return own.render_as_string(hide_password=False)


def _line(r: FaultResult) -> str:
    return (
        f"acknowledged {r.acknowledged}, lost {r.lost}, oversold {r.oversold}, "
        f"doubled {r.doubled}, other 5xx {r.five_xx}, "
        f"sales back after {_s(_back(r))}, longest without a sale "
        f"{r.longest_without_sale_s:.1f} s, "
        f"second item sold out: {'yes' if r.scarce_sold_out else 'no'}"
        + (f"; {_room(r)}" if r.room else "")
        + (f", violations: {r.violations}" if r.violations else "")
    )


def _room(r: FaultResult) -> str:
    """What the waiting room answered the phase's buyers."""
    room = r.room
    others = ", ".join(
        f"{name} {n}"
        for name, n in sorted(room.items())
        if name not in ("joined", "waited", "admitted", "sold_out", "lapsed", "queue_required")
    )
    return (
        f"room: joined {room.get('joined', 0)} (waited {room.get('waited', 0)}), "
        f"admitted {room.get('admitted', 0)}, "
        f"sold out {room.get('sold_out', 0)}, lapsed {room.get('lapsed', 0)}, "
        f"queue_required {room.get('queue_required', 0)}, paid unadmitted {r.unadmitted}"
        + (f", {others}" if others else "")
    )


def _back(r: FaultResult) -> float | None:
    """When sales came back, if the fault stopped them for a second or more."""
    return r.back_after_s if r.longest_without_sale_s >= 1.0 else None


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def table(results: list[FaultResult]) -> str:
    header = (
        f"{'fault':<22}{'acked':>7}{'lost':>6}{'oversold':>9}{'doubled':>8}{'5xx':>5}"
        f"{'promoted':>10}{'back':>8}{'no sale':>9}  verdict"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(
            f"{r.fault:<22}{r.acknowledged:>7}{r.lost:>6}{r.oversold:>9}{r.doubled:>8}"
            f"{r.five_xx:>5}{_s(r.promoted_after_s):>10}{_s(_back(r)):>8}"
            f"{r.longest_without_sale_s:>8.1f}s  {'ok' if r.correct else 'BROKEN'}"
        )
    rows += [f"{r.fault}: {_room(r)}" for r in results if r.room]
    rows.append(
        "promoted: from the fault to a new primary; back: from the fault to the end of the"
        " phase's longest stretch without a sale (when 1 s or more); no sale: that stretch"
    )
    return "\n".join(rows)


def draw(results: list[FaultResult], path: Path) -> bool:
    """Sales/s and 503/s of each phase, the fault and the promotion marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not results:
        return False
    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.6 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        t = [p["t"] for p in r.timeline]
        ax.plot(t, [p["sales_per_s"] for p in r.timeline], label="sales/s", color="#1f77b4")
        ax.plot(
            t, [p["busy_per_s"] for p in r.timeline], label="503 or no answer /s", color="#ff7f0e"
        )
        ax.axvline(r.fault_at - r.t0, color="#d62728", linestyle="--", label="fault")
        if r.promoted_after_s is not None:
            ax.axvline(
                r.fault_at - r.t0 + r.promoted_after_s,
                color="#2ca02c",
                linestyle=":",
                label="promoted",
            )
        ax.set_title(f"{r.fault}: lost {r.lost}, oversold {r.oversold}, doubled {r.doubled}")
        ax.set_xlabel("s")
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
