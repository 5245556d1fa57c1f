"""Idempotency keys under real concurrency: one effect, whatever the timing."""

import threading
from collections import Counter

from sqlalchemy import text

from tests.helpers import (
    assert_invariants,
    commit_cart_lines,
    commit_item,
    run_together,
    shop_state,
    wait_until_a_backend_waits_on_a_lock,
)


def test_same_key_while_the_first_still_runs_is_409_then_replays(make_app, committed):
    app = make_app(pool_size=4)
    hot = commit_item(committed, "Hot", "2.00", 5)
    commit_cart_lines(committed, [("u1", hot, 1)])
    headers = {"Idempotency-Key": "double-click"}
    first: dict[str, object] = {}

    with committed.connect() as holder:
        holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})

        def pay_first() -> None:
            r = app.test_client().post("/cart/u1/pay", json={"amount": "2.00"}, headers=headers)
            first["status"], first["body"] = r.status_code, r.get_data()

        thread = threading.Thread(target=pay_first)
        thread.start()
        wait_until_a_backend_waits_on_a_lock(committed)  # the first pay, on the row lock

        second = app.test_client().post("/cart/u1/pay", json={"amount": "2.00"}, headers=headers)
        assert second.status_code == 409
        assert second.get_json()["error"]["code"] == "idempotency_key_in_use"
        holder.rollback()  # release the row: the first pay goes on

    thread.join(20)
    assert first["status"] == 201
    third = app.test_client().post("/cart/u1/pay", json={"amount": "2.00"}, headers=headers)
    assert third.status_code == 201 and third.get_data() == first["body"]
    assert shop_state(committed).orders == 1
    assert_invariants(committed)


def test_a_storm_of_one_key_makes_one_order(make_app, committed):
    clicks = 20
    app = make_app(pool_size=clicks)
    hot = commit_item(committed, "Hot", "2.00", 50)
    commit_cart_lines(committed, [("u1", hot, 3)])

    def click():
        r = app.test_client().post(
            "/cart/u1/pay", json={"amount": "6.00"}, headers={"Idempotency-Key": "same"}
        )
        return r.status_code, r.get_data()

    results = run_together([click] * clicks)

    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {201, 409}, statuses
    assert len({body for status, body in results if status == 201}) == 1  # replays are identical
    after = shop_state(committed)
    assert after.orders == 1 and after.stock[hot] == 47
    assert_invariants(committed)
