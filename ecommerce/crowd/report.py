"""A crowd's figures as a table and a chart (the line over time, the answers' times)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ms(figures: dict[str, float]) -> str:
    if not figures.get("n"):
        return "-"
    return f"{figures['p50'] / 1000:.2f} / {figures['p99'] / 1000:.2f}"


def _per_buyer(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _shop_ms(r: dict[str, Any]) -> str:
    shop, balancer = r["server_cpu_ms_per_buyer"], r.get("balancer_cpu_ms_per_buyer")
    if shop is None:
        return "-"
    return f"{shop:.2f}" if balancer is None else f"{shop:.2f}+{balancer:.2f}"


def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'run':<34}{'paid':>6}{'first S':>9}{'first answer s':>16}{'final answer s':>16}"
        f"{'told after':>11}{'conn err':>9}{'5xx':>5}{'503':>6}{'shop ms':>9}{'db ms':>7}"
        f"{'xacts':>7}  verdict"
    )
    rows = [
        "crowd: buyers arriving within the arrival time; answer times p50 / p99 from arrival;",
        "first S: share of the first S arrivals (S = stock) who paid; told after: the longest",
        "from the last sale to a sold-out answer (s; 0: all were told by then); per buyer:",
        "CPU ms of the shop (through HAProxy, + HAProxy's) and of PostgreSQL, transactions",
        header,
        "-" * len(header),
    ]
    for r in results:
        told = r["sold_out_told_after_last_sale_ms"]
        verdict = "ok" if r["correct"] else "OVERSOLD / BROKEN"
        rows.append(
            f"{r['label']:<34}{r['paid']:>6}{r['first_arrivals_served']:>9.1%}"
            f"{_ms(r['first_answer_ms']):>16}{_ms(r['final_answer_ms']):>16}"
            f"{(told['max'] / 1000 if told.get('n') else 0):>11.2f}"
            f"{r['buyers_with_connection_errors']:>9}{r['buyers_with_server_errors']:>5}"
            f"{r['buyers_told_busy']:>6}{_shop_ms(r):>9}"
            f"{_per_buyer(r['database_cpu_ms_per_buyer']):>7}"
            f"{_per_buyer(r['transactions_per_buyer']):>7}  {verdict}"
        )
    for r in results:
        others = {k: v for k, v in r["outcomes"].items() if k not in ("paid", "sold_out")}
        if others:
            rows.append(f"{r['label']}: other outcomes {others}")
    return "\n".join(rows)


def write_chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (ax_line, ax_first), (ax_flow, ax_fair) = axes
    for r in results:
        line = r["timeline"]
        t = [p["t"] for p in line]
        if r["config"]["room"]:
            waiting = [(p["t"], p["line"]) for p in line if p["line"] is not None]
            ax_line.plot(*zip(*waiting, strict=True), label=f"{r['label']}: waiting")
            admitted = [(p["t"], p["admitted"]) for p in line if p["admitted"] is not None]
            ax_line.plot(
                *zip(*admitted, strict=True), linestyle="--", label=f"{r['label']}: admitted"
            )
        stock = [(p["t"], p["stock"]) for p in line if p["stock"] is not None]
        if stock:
            ax_line.plot(*zip(*stock, strict=True), linestyle=":", label=f"{r['label']}: stock")
        ax_flow.plot(t, [p["paid_per_s"] for p in line], label=f"{r['label']}: paid/s")
        ax_flow.plot(
            t,
            [p["sold_out_per_s"] for p in line],
            linestyle="--",
            label=f"{r['label']}: sold out/s",
        )
        firsts = sorted(v / 1000 for v in r["first_answers"] if v >= 0)
        if firsts:
            share = [(n + 1) / len(r["first_answers"]) for n in range(len(firsts))]
            ax_first.plot(firsts, share, label=r["label"])
    ax_line.set(title="The line (from the database)", xlabel="seconds", ylabel="buyers / units")
    ax_first.set(
        title="Time from arrival to a first answer", xlabel="seconds", ylabel="share of buyers"
    )
    ax_flow.set(title="Final answers per second", xlabel="seconds", ylabel="per second")
    for ax in (ax_line, ax_first, ax_flow):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    names = [r["label"].replace("crowd ", "") for r in results]
    ax_fair.bar(range(len(results)), [100 * r["first_arrivals_served"] for r in results])
    ax_fair.set_xticks(range(len(results)), names, rotation=20, fontsize=7)
    ax_fair.set(title="First S arrivals who got a unit", ylabel="%", ylim=(0, 105))
    first = results[0]["config"]
    fig.suptitle(
        f"12.12 crowd: {first['buyers']} buyers within {first['arrival_s']:g} s "
        f"for {first['stock']} units"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
