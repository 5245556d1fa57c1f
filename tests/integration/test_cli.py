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
