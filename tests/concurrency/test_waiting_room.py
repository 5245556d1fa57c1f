"""The waiting room across instances: two shops (two apps, as two instances
would be) on the same PostgreSQL, their buyers' threads released together,
each on a connection of its own; what the line holds is read from a separate
connection."""

from __future__ import annotations

import time
from decimal import Decimal

from sqlalchemy import text

from ecommerce.services import cart, payment, rooms
from tests.helpers import (
    assert_invariants,
    commit_item,
    held_by_another_transaction,
    run_together,
    shop_state,
)


def open_room(shop, item_id, **options) -> None:
    rooms.configure_room(shop, item_id, rooms.RoomOptions(open=True, **options))


def places(engine, item_id) -> dict[str, int]:
    """Each buyer's arrival number (the line's order)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT user_id, seq FROM queue_places WHERE item_id = :i"), {"i": item_id}
        )
        return {user: seq for user, seq in rows}


def admitted_count(engine, item_id) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM queue_places WHERE item_id = :i AND admitted_at IS NOT NULL"
            ),
            {"i": item_id},
        ).scalar_one()


def test_concurrent_joins_from_two_instances_get_one_place_each_in_one_order(storm_shop, committed):
    buyers = 24
    one = storm_shop(buyers, queue_refresh_ms=0)
    two = storm_shop(buyers, queue_refresh_ms=0)
    item = commit_item(committed, "Hot", "1.00", 1000)
    open_room(one, item, max_admitted=1)
    users = [f"b{n}" for n in range(buyers // 2)]
    # every buyer joins twice at once, once through each instance
    work = [lambda u=u, s=s: rooms.join(s, item, u).seq for u in users for s in (one, two)]
    answers = run_together(work)
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    by_user: dict[str, set[int]] = {}
    for (user, _), rank in zip([(u, s) for u in users for s in (1, 2)], answers, strict=True):
        by_user.setdefault(user, set()).add(rank)
    assert all(len(ranks) == 1 for ranks in by_user.values()), by_user  # one place each
    stored = places(committed, item)
    assert stored == {user: ranks.pop() for user, ranks in by_user.items()}
    # one line: ranks are distinct, and later joins queue behind all of them
    assert len(set(stored.values())) == len(users)
    # and joins one after another, through either instance, rank in arrival order
    joined = [rooms.join(shop, item, f"late{n}") for n, shop in enumerate([two, one] * 3)]
    later = [place.seq for place in joined]
    assert later == sorted(later) and len(set(later)) == len(later)
    # their ranks count every place in the line, through either instance's view
    assert [place.rank for place in joined] == list(range(len(users) + 1, len(users) + 7))
    assert later[0] > max(stored.values())
    assert admitted_count(committed, item) == 1


def test_instances_refreshing_together_never_admit_past_the_cap_or_the_stock(storm_shop, committed):
    buyers = 16
    one = storm_shop(buyers, queue_refresh_ms=0)
    two = storm_shop(buyers, queue_refresh_ms=0)
    item = commit_item(committed, "Hot", "1.00", 3)
    open_room(one, item, max_admitted=2)
    for n in range(10):
        rooms.join(one if n % 2 else two, item, f"b{n}")
    # many polls through both instances at once: each one refreshes the front
    polls = [lambda s=s: rooms.front(s, item) for s in (one, two) * (buyers // 2)]
    results = run_together(polls)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert admitted_count(committed, item) == 2  # the cap, not a double advance
    with committed.begin() as conn:  # the admitted two are done: room for one more
        conn.execute(
            text(
                "UPDATE queue_places SET done_at = admitted_at, outcome = 'paid'"
                " WHERE item_id = :i AND admitted_at IS NOT NULL"
            ),
            {"i": item},
        )
        conn.execute(text("UPDATE items SET stock = 1 WHERE id = :i"), {"i": item})
    results = run_together(polls)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert admitted_count(committed, item) == 3  # the stock's one unit: one more buyer


def test_joining_and_polling_wait_for_no_lock_on_the_room_or_the_item(storm_shop, committed):
    shop = storm_shop(2, queue_refresh_ms=0, lock_timeout_ms=100, statement_timeout_ms=5000)
    item = commit_item(committed, "Hot", "1.00", 10)
    open_room(shop, item, max_admitted=1)
    rooms.join(shop, item, "first")
    # Another transaction holds the room's row (as a refresh or an admin does)
    # and the item's row (as a pay does): a join still answers at once.
    with (
        held_by_another_transaction(
            committed, "SELECT 1 FROM rooms WHERE item_id = :i FOR NO KEY UPDATE", i=item
        ),
        held_by_another_transaction(
            committed, "SELECT 1 FROM items WHERE id = :i FOR UPDATE", i=item
        ),
    ):
        place = rooms.join(shop, item, "second")
        assert place.status == "waiting" and place.ahead == 0
        again = rooms.poll(shop, item, "second", place.place_token)
        assert again.rank == place.rank
    assert places(committed, item)["second"] == place.seq


def test_a_crowd_through_two_instances_buys_exactly_the_stock_in_turn(storm_shop, committed):
    """Twelve buyers for five units, at most three admitted at once, through two
    instances: each joins, polls until told admitted or sold out, and an
    admitted buyer adds and pays with the admission. Exactly the stock is sold,
    only to admitted buyers, and everyone else is told sold out."""
    buyers, stock = 12, 5
    one = storm_shop(buyers, queue_refresh_ms=0)
    two = storm_shop(buyers, queue_refresh_ms=0)
    item = commit_item(committed, "Hot", "3.00", stock)
    open_room(one, item, max_admitted=3)

    def buyer(n: int) -> str:
        shop = one if n % 2 else two
        user = f"b{n}"
        place = rooms.join(shop, item, user)
        deadline = time.monotonic() + 60
        while place.status in ("waiting", "before_draw"):
            assert time.monotonic() < deadline, f"{user} was never let in nor told sold out"
            time.sleep(0.01)  # a client's poll interval, not a synchronisation
            place = rooms.poll(shop, item, user, place.place_token)
        if place.status != "admitted":
            return place.status
        tokens = (place.admission_token,)
        cart.add_to_cart(shop, user, item, 1, admission_tokens=tokens)
        payment.pay(shop, user, Decimal("3.00"), admission_tokens=tokens)
        return "paid"

    outcomes = run_together([lambda n=n: buyer(n) for n in range(buyers)])
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert sorted(outcomes) == ["paid"] * stock + ["sold_out"] * (buyers - stock)
    # in turn: the buyers who got the stock are the first in line
    ranks = places(committed, item)
    paid = {f"b{n}" for n, outcome in enumerate(outcomes) if outcome == "paid"}
    assert paid == set(sorted(ranks, key=ranks.__getitem__)[:stock])
    state = shop_state(committed)
    assert state.stock[item] == 0 and state.sold[item] == stock
    assert admitted_count(committed, item) == stock  # never admitted past the stock
    assert_invariants(committed)


def test_a_join_committed_after_the_line_passed_its_number_is_admitted_or_told_sold_out(
    storm_shop, committed
):
    """A join whose arrival number was drawn before another's but committed
    after the refresh that admitted that other (the refresh could not see it):
    the next refresh admits it while the stock lasts; once the stock is gone it
    is told sold out, not left waiting for a turn that can no longer come."""
    from sqlalchemy.orm import Session

    from ecommerce.repositories.rooms import RoomRepository

    shop = storm_shop(6, queue_refresh_ms=0)  # a connection per combining thread too
    item = commit_item(committed, "Hot", "2.00", 1)
    late_item = commit_item(committed, "Warm", "2.00", 2)
    open_room(shop, item, max_admitted=3)
    open_room(shop, late_item, max_admitted=3)
    now = shop.clock()
    with committed.connect() as conn, conn.begin() as late_join:
        # "late" joins both lines first; its joins stay uncommitted
        late = RoomRepository(Session(bind=conn)).join_many(
            [(item, "late", 0), (late_item, "late", 0)], now
        )
        late_seqs = [joined[0].seq for joined in late]
        tokens: list[str] = []
        for hot in (item, late_item):  # "first" joins after, is admitted and buys
            place = rooms.join(shop, hot, "first")
            assert place.seq > max(late_seqs)
            place = rooms.poll(shop, hot, "first", place.place_token)
            assert place.status == "admitted"
            tokens.append(place.admission_token)
            cart.add_to_cart(shop, "first", hot, 1, admission_tokens=tokens)
        payment.pay(shop, "first", Decimal("4.00"), admission_tokens=tokens)
        late_join.commit()
    # the hot item's one unit is sold: "late" is told so, every poll after
    place = rooms.join(shop, item, "late")
    assert (place.seq, place.status) == (late_seqs[0], "sold_out")
    assert rooms.poll(shop, item, "late", place.place_token).status == "sold_out"
    # the other item has a unit left: the next refresh admits "late"
    place = rooms.join(shop, late_item, "late")
    assert (place.seq, place.status) == (late_seqs[1], "admitted")
    assert admitted_count(committed, item) == 1
    assert_invariants(committed)


def test_a_batch_of_joins_numbers_new_places_in_arrival_order(storm_shop, committed):
    """Joins combined into one statement: new places numbered in the batch's
    order, a buyer's second join in the batch given the same place, an existing
    place found, an item without an open room refused alone, and each new
    place counting those the statement made ahead of it (its snapshot holds
    none of them)."""
    from ecommerce.services.rooms.places import _insert_batch

    shop = storm_shop(4, queue_refresh_ms=0)
    item = commit_item(committed, "Hot", "1.00", 100)
    roomless = commit_item(committed, "Quiet", "1.00", 100)
    open_room(shop, item)
    early = rooms.join(shop, item, "early").seq
    batch = [
        (item, "a", early),
        (item, "early", early),
        (roomless, "c", 0),
        (item, "b", early),
        (item, "a", early),
        (item, "a", early + 1000),  # again, from a view read since
    ]
    a, found, refused, b, a_again, a_later = _insert_batch(shop, batch)
    assert refused is None
    assert early < a[0].seq < b[0].seq
    assert a_again == a
    assert a_later == (a[0], None)  # counted from another view: ranked from its own
    assert found[0].seq == early
    assert (a[1], b[1]) == (0, 1)  # b's view misses a, made by the same statement
    assert places(committed, item) == {"early": early, "a": a[0].seq, "b": b[0].seq}
    assert places(committed, roomless) == {}


def test_a_waiting_place_is_answered_from_the_last_view_while_the_database_cannot_be_read(
    storm_shop, committed
):
    """A refresh that cannot read the rooms (here: the table locked by another
    transaction past the lock timeout, as a primary lost does for longer) leaves
    the worker's last view standing: a waiting buyer's poll is answered from
    it, as at any other time, instead of 503 to every poll of the line."""
    shop = storm_shop(2, queue_refresh_ms=0, lock_timeout_ms=100, statement_timeout_ms=5000)
    item = commit_item(committed, "Hot", "1.00", 10)
    open_room(shop, item, max_admitted=1)
    rooms.join(shop, item, "first")
    place = rooms.join(shop, item, "second")
    assert place.status == "waiting"
    with held_by_another_transaction(committed, "LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE"):
        again = rooms.poll(shop, item, "second", place.place_token)
    assert (again.status, again.rank, again.ahead) == ("waiting", place.rank, place.ahead)
