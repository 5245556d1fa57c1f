"""`flask flashsale`, small: the simulator runs, checks and reports for real."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecommerce.config import PROJECT_ROOT
from ecommerce.flashsale.ceiling import pay_script
from ecommerce.flashsale.command import flashsale
from ecommerce.flashsale.report import table
from ecommerce.flashsale.server import BIN
from ecommerce.repositories import CartRepository, ItemRepository, OrderRepository
from tests.helpers import database_fault

pytestmark = pytest.mark.slow


def test_ceiling_script_is_the_shops_own_pay_transaction():
    script = pay_script(3, 7, "9.99")
    assert r"\set item random(3, 7)" in script
    body = script[script.index("BEGIN \\; SELECT set_config") :]
    order = [
        "set_config",
        "FOR UPDATE OF carts",
        "nextval",
        "FOR NO KEY UPDATE",
        "new_orders",
        "UPDATE items",
        "COMMIT",
    ]
    positions = [body.index(marker) for marker in order]
    assert positions == sorted(positions)
    # The very statements the repositories execute, compiled the same way.
    for statement in (
        CartRepository.LOCK_CARTS_FOR_PAY,
        ItemRepository.LOCK_ITEMS,
        OrderRepository.NEXT_ORDER_IDS,
        OrderRepository.WRITE_PAID_ORDERS,
    ):
        first_line = str(statement.compile()).strip().split("\n")[0].strip()
        assert first_line in body, first_line


def test_a_small_sale_end_to_end(make_app, database_url, tmp_path: Path):
    app = make_app()
    result = app.test_cli_runner().invoke(
        flashsale,
        args=[
            "--stock",
            "25",
            "--buyers",
            "60",
            "--connections",
            "8",
            "--items",
            "2",
            "--workers",
            "2",
            "--threads",
            "2",
            "--ceiling-seconds",
            "1",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "flow" in result.output and "ok" in result.output
    (report,) = tmp_path.glob("flashsale-*.json")
    (chart,) = tmp_path.glob("flashsale-*.png")
    assert chart.stat().st_size > 10_000
    data = json.loads(report.read_text())
    assert data["machine"]["cpus"] >= 1
    (run,) = data["runs"]
    assert run["correct"] is True
    assert run["paid"] == 25 and run["units_in_orders"] == 25 and run["stock_sold"] == 25
    assert run["oversold_units"] == 0 and run["five_xx"] == 0 and run["charged_twice"] == 0
    assert run["outcomes"]["paid"] == 25 and run["outcomes"]["sold_out"] == 35
    assert run["sold_out"] is True and run["paid_per_s"] > 0
    assert run["ceiling_tps"] > 0 and run["ratio_to_ceiling"] > 0
    # Adds and checkouts went through the cart combiners (from the server's /metrics).
    assert set(run["mean_cart_batch_sizes"]) == {"add", "read"}
    assert "mean cart batch: adds" in result.output
    assert [c["clients"] for c in run["ceiling"]] == [4, 16, 64]
    assert run["pay_latency_ms"]["p50"] <= run["pay_latency_ms"]["p99"]
    assert run["timeline"] and run["invariant_violations"] == []
    # Header, rule, the run, its cart batches, its sold-out phase.
    assert table(data["runs"]).count("\n") == 4


def test_broken_runs_fail_the_command(make_app, committed, database_url, tmp_path):
    """A run whose books do not balance makes the command exit non-zero (unless
    it is naive in --compare). A real fault breaks them: PostgreSQL puts a unit
    back on every sale (a trigger on the items' rows), behind the shop's back."""
    from ecommerce.flashsale import command

    leak = "IF NEW.stock < OLD.stock THEN NEW.stock := NEW.stock + 1; END IF; RETURN NEW;"
    with database_fault(committed, "test_stock_leaks", "items", "UPDATE", leak):
        outcome = (
            make_app()
            .test_cli_runner()
            .invoke(
                command.flashsale,
                args=[
                    *("--database-url", database_url, "--stock", "5", "--buyers", "10"),
                    *("--connections", "4", "--workers", "1", "--threads", "2"),
                    *("--no-ceiling", "--out", str(tmp_path)),
                ],
            )
        )
    assert outcome.exit_code == 1, outcome.output
    assert "OVERSOLD / BROKEN" in outcome.output


def test_the_simulator_is_a_command_beside_the_shop_not_inside_it():
    """`flask flashsale` is found through its entry point, while importing the WSGI
    app (what every gunicorn worker does) loads nothing of the simulator."""
    env = {"FLASK_APP": "wsgi:app", "PATH": str(BIN)}
    listed = subprocess.run(
        [str(BIN / "flask"), "--help"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "flashsale" in listed.stdout
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import wsgi, ecommerce.wsgi, sys; print([m for m in sys.modules if 'flashsale' in m])",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def _sale(make_app, tmp_path: Path, *args: str) -> tuple[str, dict]:
    """`flask flashsale ARGS --out tmp_path`: its output and its JSON report."""
    result = make_app().test_cli_runner().invoke(flashsale, args=[*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (report,) = tmp_path.glob("flashsale-*.json")
    return result.output, json.loads(report.read_text())


def test_a_pay_only_sale_with_keys_reports_the_sold_out_phase(make_app, tmp_path: Path):
    """The hot-item measurement of make bench: carts prepared, each request pays a
    different buyer with an Idempotency-Key; the storm goes on after the last unit."""
    output, report = _sale(
        make_app,
        tmp_path,
        *("--mode", "pay", "--keys", "--stock", "10", "--buyers", "80"),
        *("--connections", "8", "--workers", "1", "--threads", "8", "--no-ceiling"),
    )
    assert "after the last unit" in output
    (run,) = report["runs"]
    assert run["label"] == "pay+keys" and run["correct"] is True
    assert run["paid"] == 10 and run["outcomes"]["sold_out"] == 70
    assert run["after_sold_out"]["n"] > 0 and run["storm_latency_ms"]["n"] == 80
    assert run["mean_batch_size"] >= 1  # read from the server's /metrics


def test_cpu_per_buyer_a_profile_and_the_servers_log(make_app, tmp_path: Path):
    """--cpu: the server's, PostgreSQL's and the load generator's CPU per buyer paid
    from /proc; --profile: py-spy's stacks of a worker under the flow; the server
    logs at info, as in production, into the run's directory."""
    profile = tmp_path / "profile.txt"
    output, report = _sale(
        make_app,
        tmp_path,
        *("--stock", "400", "--buyers", "400", "--connections", "8"),
        *("--workers", "1", "--no-ceiling", "--cpu", "--profile", str(profile)),
        *("--duration", "3"),
    )
    assert "CPU per buyer paid" in output
    (run,) = report["runs"]
    cpu = run["cpu_us_per_paid"]
    assert run["paid"] > 0 and cpu["server"] > 0 and cpu["loadgen"] > 0
    assert cpu["database"] is not None and cpu["database"] > 0
    stacks = profile.read_text()
    assert "wsgi_app (flask/app.py" in stacks  # a worker's requests, sampled
    lines = (tmp_path / "server.log").read_text().splitlines()
    requests = [json.loads(line) for line in lines if '"message":"request"' in line]
    assert len(requests) >= run["paid"] and requests[0]["level"] == "info"


def test_a_sale_with_the_database_one_hop_away(make_app, tmp_path: Path):
    """--db-hop-us: the server talks to PostgreSQL through the relay; the run
    says the round trip it added, as measured, and the relay's CPU apart."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the relay")
    output, report = _sale(
        make_app,
        tmp_path,
        *("--stock", "60", "--buyers", "60", "--connections", "4", "--workers", "1"),
        *("--no-ceiling", "--cpu", "--db-hop-us", "2000", "--duration", "20"),
    )
    (run,) = report["runs"]
    assert run["label"] == "flow hop2000us" and run["correct"] is True and run["paid"] == 60
    assert run["db_hop_added_us"] >= 1000 and run["db_hop_added_under_load_us"] is not None
    # the server's connections went through it: more than the one probing it
    assert run["db_hop_relayed"] >= 2
    assert run["cpu_us_per_paid"]["relay"] >= 0 and "relay us" in output


def test_the_go_designs_rows_say_why_they_are_skipped(make_app, tmp_path: Path):
    output, report = _sale(
        make_app,
        tmp_path,
        *("--stock", "5", "--buyers", "5", "--connections", "2", "--workers", "1"),
        *("--no-ceiling", "--go-seed", str(tmp_path / "nowhere")),
    )
    assert "the Go design's rows: skipped" in output
    assert "go_seed_skipped" in report["machine"]


def test_the_go_design_alone_without_its_source_is_refused_saying_why(make_app, tmp_path: Path):
    result = (
        make_app()
        .test_cli_runner()
        .invoke(
            flashsale,
            args=["--strategy", "go_seed", "--go-seed", str(tmp_path / "nowhere"), "--no-ceiling"],
        )
    )
    assert result.exit_code == 1 and "nothing to run: no Go design at" in result.output
    assert not list(tmp_path.glob("flashsale-*"))


def test_the_capacity_model_measures_the_database_alone(make_app, database_url):
    result = (
        make_app()
        .test_cli_runner()
        .invoke(flashsale, args=["--capacity", "--ceiling-seconds", "1"])
    )
    assert result.exit_code == 0, result.output
    assert "ms per commit" in result.output
    sweep = [line.split() for line in result.output.splitlines()[-5:]]
    assert [int(row[0]) for row in sweep] == [1, 8, 16, 32, 64]
    assert all(float(row[3]) > 0 for row in sweep)
    from sqlalchemy import create_engine, make_url, text

    own = make_url(database_url).set(database=f"{make_url(database_url).database}_flashsale")
    engine = create_engine(own)
    with engine.connect() as conn:  # the scratch tables are gone
        assert conn.execute(text("SELECT to_regclass('capacity_probe_orders')")).scalar() is None
    engine.dispose()
