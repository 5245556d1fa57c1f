"""The sale night in one picture: a JSON file of the run, a PNG chart, a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLORS = {"for_update": "#1f77b4", "naive": "#d62728", "go_seed": "#2ca02c"}


def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'run':<26}{'paid':>7}{'paid/s':>9}{'ceiling':>9}{'ratio':>7}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'sold out':>9}{'busy':>6}{'error':>6}"
        f"{'oversold':>9}{'5xx':>5}{'gen CPU':>9}{'batch':>7}  verdict"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        ceiling = f"{r['ceiling_tps']:.0f}" if r["ceiling_tps"] else "-"
        ratio = f"{r['ratio_to_ceiling']:.2f}" if r["ratio_to_ceiling"] else "-"
        lat = r["pay_latency_ms"]
        out = r["outcomes"]
        verdict = "ok" if r["correct"] else "OVERSOLD / BROKEN"
        batch = f"{r['mean_batch_size']:.1f}" if r.get("mean_batch_size") else "-"
        rows.append(
            f"{r['label']:<26}{r['paid']:>7}{r['paid_per_s']:>9.0f}{ceiling:>9}"
            f"{ratio:>7}{lat['p50']:>8.1f}{lat['p95']:>8.1f}{lat['p99']:>8.1f}"
            f"{out['sold_out']:>9}{out['busy']:>6}{out['error']:>6}"
            f"{r['oversold_units']:>9}{r['five_xx']:>5}{r['loadgen_cpu_share']:>9.0%}"
            f"{batch:>7}  {verdict}"
        )
    for r in results:
        if r["config"].get("gateway_latency_ms") is not None:
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["order_statuses"].items()))
            rows.append(f"{r['label']}: orders by status: {statuses or 'none'}")
    for r in results:
        cart = r.get("mean_cart_batch_sizes") or {}
        if cart:
            sizes = ", ".join(f"{kind}s {cart[kind]:.1f}" for kind in sorted(cart))
            rows.append(f"{r['label']}: mean cart batch: {sizes}")
    for r in results:
        after = r.get("after_sold_out") or {}
        if after.get("n"):
            storm = r["storm_latency_ms"]
            rows.append(
                f"{r['label']}: after the last unit, {after['n']} more requests refused in "
                f"p50 {after['p50']:.1f} ms / p99 {after['p99']:.1f} ms; the whole storm "
                f"({storm['n']} requests) p50 {storm['p50']:.1f} ms / p99 {storm['p99']:.1f} ms"
            )
    return "\n".join(rows)


def cpu_table(results: list[dict[str, Any]]) -> str:
    """CPU per buyer paid (µs): the server, PostgreSQL, the load generator (and,
    with the database a hop away, the relay's, and the round trip it added
    under the storm); and,
    when the Go design ran in the same sitting, each shop row beside its Go row."""

    def us(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    hop = any("relay" in (r.get("cpu_us_per_paid") or {}) for r in results)
    header = (
        f"{'run':<26}{'paid/s':>9}{'server us':>11}{'db us':>9}{'gen us':>9}"
        + (f"{'relay us':>10}{'hop us':>8}" if hop else "")
        + f"{'p99 ms':>8}{'x Go paid/s':>13}{'x Go server CPU':>17}"
    )
    rows = ["CPU per buyer paid (a whole buyer in the flow, a pay in pay-only)", header]
    rows.append("-" * len(header))

    def key(r: dict[str, Any]) -> tuple[str, int]:
        return r["config"]["mode"], r["config"].get("db_hop_us", 0)

    go = {key(r): r for r in results if r["config"]["strategy"] == "go_seed"}
    for r in results:
        cpu = r.get("cpu_us_per_paid") or {}
        peer = go.get(key(r)) if r["config"]["strategy"] == "for_update" else None
        ratio = cpu_ratio = "-"
        if peer and peer["paid_per_s"] and not r["sold_out"] and not peer["sold_out"]:
            ratio = f"{r['paid_per_s'] / peer['paid_per_s']:.2f}"
            mine, theirs = cpu.get("server"), peer["cpu_us_per_paid"].get("server")
            if mine and theirs:
                cpu_ratio = f"{mine / theirs:.2f}"
        if r["sold_out"] or not r["paid"]:  # per buyer paid: nothing to divide by
            cpu = {}
        rows.append(
            f"{r['label']:<26}{r['paid_per_s']:>9.0f}{us(cpu.get('server')):>11}"
            f"{us(cpu.get('database')):>9}{us(cpu.get('loadgen')):>9}"
            + (
                f"{us(cpu.get('relay')):>10}{us(r.get('db_hop_added_under_load_us')):>8}"
                if hop
                else ""
            )
            + f"{r['pay_latency_ms']['p99']:>8.1f}{ratio:>13}{cpu_ratio:>17}"
        )
    return "\n".join(rows)


def write_json(results: list[dict[str, Any]], machine: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps({"machine": machine, "runs": results}, indent=2, default=str))


def write_chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (ax_rate, ax_lat), (ax_stock, ax_bar) = axes
    for r in results:
        name = r["label"]
        color = COLORS.get(r["config"]["strategy"])
        line = r["timeline"]
        t = [p["t"] for p in line]
        ax_rate.plot(t, [p["paid_per_s"] for p in line], color=color, label=name)
        lat_t = [p["t"] for p in line if p["p99_ms"] is not None]
        ax_lat.plot(
            lat_t,
            [p["p50_ms"] for p in line if p["p99_ms"] is not None],
            color=color,
            linestyle="--",
            label=f"{name} p50",
        )
        ax_lat.plot(
            lat_t,
            [p["p99_ms"] for p in line if p["p99_ms"] is not None],
            color=color,
            label=f"{name} p99",
        )
        stock_t = [p["t"] for p in line if p["stock"] is not None]
        label = name
        if r["oversold_units"] or r["unaccounted_units"]:
            label = (
                f"{name}: OVERSOLD {r['oversold_units']} units, "
                f"{r['unaccounted_units']} unaccounted"
            )
        ax_stock.plot(
            stock_t,
            [p["stock"] for p in line if p["stock"] is not None],
            color=color,
            label=label,
            linewidth=2.5 if r["config"]["strategy"] == "naive" else 1.5,
        )
    ax_rate.set(title="Successful pays per second", xlabel="seconds", ylabel="pays/s")
    ax_lat.set(title="Pay latency", xlabel="seconds", ylabel="ms", yscale="log")
    ax_stock.set(
        title="Stock of the sale item(s) (from the database)", xlabel="seconds", ylabel="units"
    )
    for ax in (ax_rate, ax_lat, ax_stock):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    names = [r["label"] for r in results]
    app = [r["paid_per_s"] for r in results]
    ceiling = [r["ceiling_tps"] or 0 for r in results]
    x = range(len(results))
    ax_bar.bar(
        [i - 0.2 for i in x],
        app,
        width=0.4,
        label="shop over HTTP",
        color=[COLORS.get(r["config"]["strategy"], "gray") for r in results],
    )
    ax_bar.bar([i + 0.2 for i in x], ceiling, width=0.4, label="pgbench ceiling", color="#bbbbbb")
    for i, r in enumerate(results):
        text = f"{r['ratio_to_ceiling']:.2f}x" if r["ratio_to_ceiling"] else ""
        if not r["correct"]:
            text = "OVERSOLD"
        ax_bar.annotate(
            text,
            (i - 0.2, app[i]),
            ha="center",
            va="bottom",
            color="#d62728" if not r["correct"] else "black",
            fontweight="bold",
        )
    ax_bar.set_xticks(list(x), names, rotation=20, fontsize=8)
    ax_bar.set(title="Pays/s: the shop vs the database's own ceiling", ylabel="pays/s")
    ax_bar.legend(fontsize=8)
    first = results[0]["config"]
    fig.suptitle(
        f"12.12 flash sale: {first['stock']} units, {first['buyers']} buyers, "
        f"{first['connections']} connections, {first['items']} SKU(s), "
        f"gunicorn {first['workers']}x{first['threads']} {first['worker_class']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
