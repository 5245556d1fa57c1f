from sqlalchemy import text


def test_seed_inserts_the_sample_items_once(runner, connection):
    first = runner.invoke(args=["seed"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(args=["seed"])
    assert second.exit_code == 0
    assert "already present" in second.output
    rows = connection.execute(text("SELECT name, price, stock FROM items ORDER BY id")).all()
    assert [(r.name, str(r.price), str(r.stock)) for r in rows] == [
        ("Apple", "0.50", "10.00"),
        ("Banana", "0.30", "10.00"),
        ("Orange", "0.70", "10.00"),
    ]


def test_the_scheduled_commands_write_their_run_for_the_textfile_collector(
    make_app, committed, tmp_path
):
    """With JOB_METRICS_DIR, each run leaves shop_<job>.prom: when it ran and how
    many orders it left for the next run (none here: nothing was due)."""
    runner = make_app(
        job_metrics_dir=str(tmp_path), payment_gateway_url="http://127.0.0.1:9"
    ).test_cli_runner()
    assert runner.invoke(args=["release-expired"]).exit_code == 0
    assert runner.invoke(args=["reconcile-payments"]).exit_code == 0
    for job in ("release_expired", "reconcile_payments"):
        written = (tmp_path / f"shop_{job}.prom").read_text()
        assert f'shop_job_last_run_failures{{job="{job}"}} 0.0' in written
        assert f'shop_job_last_run_timestamp_seconds{{job="{job}"}}' in written
