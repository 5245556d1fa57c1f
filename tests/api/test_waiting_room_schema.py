"""The schema changes only through migrations: a waiting room's whole life
sends no DDL and leaves every relation of every schema (pg_class) as it was.
Rooms are rows; every place's arrival number comes from the one sequence that
migration 0009 makes."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import event, text

from tests.api import test_waiting_room as room_tests
from tests.api.test_waiting_room import T0, join, open_room, poll
from tests.helpers import insert_item

# The room's own fixtures (its clock, its app, an admin's token), shared.
clock, app, admin = room_tests.clock, room_tests.app, room_tests.admin

DDL = re.compile(r"\s*(CREATE|ALTER|DROP|COMMENT|GRANT|REVOKE|DO)\b", re.IGNORECASE)


def test_a_room_s_whole_life_makes_no_schema_object(client, admin, connection, clock):
    """The schema changes only through migrations: opening rooms (fifo and
    random), joining, polling, admissions, the draw, an add and a pay, leaving,
    closing and opening again send no DDL, and every relation of every schema
    (pg_class) is the same after as before."""

    def relations() -> set[tuple]:
        return set(connection.execute(text("SELECT oid, relname, relkind FROM pg_class")).all())

    fifo = insert_item(connection, "Hot", "1.00", 2)
    drawn = insert_item(connection, "Drawn", "1.00", 5)
    connection.execute(
        text("UPDATE items SET sale_starts_at = :at WHERE id = :i"),
        {"at": T0 + dt.timedelta(minutes=1), "i": drawn},
    )
    before = relations()
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(connection, "before_cursor_execute", listener)
    try:
        open_room(client, admin, fifo, max_admitted=1)
        open_room(client, admin, drawn, mode="random")
        places = {user: join(client, fifo, user) for user in ["ann", "bob", "cat"]}
        early = {user: join(client, drawn, user) for user in ["dan", "eve"]}
        token = {"X-Admission-Token": places["ann"]["admission_token"]}
        added = client.post("/cart/ann/add", json={"item_id": fifo, "quantity": 1}, headers=token)
        assert added.status_code == 200
        paid = client.post("/cart/ann/pay", json={"amount": "1.00"}, headers=token)
        assert paid.status_code == 201
        assert poll(client, fifo, "bob", places["bob"]["place_token"])["status"] == "admitted"
        assert client.delete(f"/items/{fifo}/queue/cat").status_code == 200
        clock.advance(60)
        assert {poll(client, drawn, u, p["place_token"])["status"] for u, p in early.items()} == {
            "admitted"
        }
        for item in (fifo, drawn):
            closed = client.put(f"/admin/items/{item}/queue", json={"open": False}, headers=admin)
            assert closed.status_code == 200
            open_room(client, admin, item)
            assert client.get(f"/admin/items/{item}/queue", headers=admin).status_code == 200
        join(client, fifo, "fay")
    finally:
        event.remove(connection, "before_cursor_execute", listener)
    assert statements
    assert [s for s in statements if DDL.match(s)] == []
    assert relations() == before


def test_an_admission_is_spent_by_the_pay_and_by_leaving(client, admin, connection):
    """An admission token is good only while its place is admitted and not done.
    Found in review: the token was judged by its signature, expiry, buyer and
    item alone, so a buyer who had paid (or left) could add and pay again with
    it while others were admitted in their place, past the room's cap."""
    item = insert_item(connection, "Hot", "1.00", 10)
    open_room(client, admin, item, max_admitted=1)
    token = {"X-Admission-Token": join(client, item, "ann")["admission_token"]}
    add = {"item_id": item, "quantity": 1}
    assert client.post("/cart/ann/add", json=add, headers=token).status_code == 200
    assert client.post("/cart/ann/pay", json={"amount": "1.00"}, headers=token).status_code == 201

    again = client.post("/cart/ann/add", json=add, headers=token)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "queue_required"

    bob = join(client, item, "bob")
    bob_token = {
        "X-Admission-Token": poll(client, item, "bob", bob["place_token"])["admission_token"]
    }
    assert client.post("/cart/bob/add", json=add, headers=bob_token).status_code == 200
    assert client.delete(f"/items/{item}/queue/bob").status_code == 200
    paid_after_leaving = client.post("/cart/bob/pay", json={"amount": "1.00"}, headers=bob_token)
    assert paid_after_leaving.status_code == 409
    assert paid_after_leaving.get_json()["error"]["code"] == "queue_required"
