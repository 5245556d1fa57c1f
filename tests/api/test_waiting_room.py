"""A hot item's waiting room, through the HTTP API: joining, polling, admission
paced by the stock and the in-flight cap, the admission token at add and pay,
sold out told early, a lapsed admission giving its place back, the draw.

Every time decision is taken at the shop's clock (``shop.clock``), which these
tests move; QUEUE_REFRESH_MS=0 makes every request read the line's front."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event, text

from tests.helpers import Clock, bearer, insert_item, sessions_bound_to, shop_state

T0 = dt.datetime(2026, 12, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def app(make_app, connection, clock):
    app = make_app(queue_refresh_ms=0)
    app.extensions["shop"].clock = clock
    with sessions_bound_to(app.extensions["shop"].db, connection):
        yield app


@pytest.fixture
def admin(app):
    return bearer(app, "ops", admin=True)


def code(response) -> str:
    return response.get_json()["error"]["code"]


def open_room(client, admin, item_id, **options):
    response = client.put(
        f"/admin/items/{item_id}/queue", json={"open": True} | options, headers=admin
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def join(client, item_id, user):
    response = client.post(f"/items/{item_id}/queue/{user}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def poll(client, item_id, user, token):
    response = client.get(f"/items/{item_id}/queue/{user}", headers={"X-Place-Token": token})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def admitted(client, item_id, user):
    place = join(client, item_id, user)
    place = poll(client, item_id, user, place["place_token"])
    assert place["status"] == "admitted", place
    return place["admission_token"]


def test_with_no_room_the_shop_is_as_before(client, connection):
    item = insert_item(connection, "Plain", "1.00", 5)
    assert client.post("/cart/u1/add", json={"item_id": item, "quantity": 1}).status_code == 200
    assert client.post("/cart/u1/pay", json={"amount": "1.00"}).status_code == 201
    refused = client.post(f"/items/{item}/queue/u1")
    assert refused.status_code == 404 and code(refused) == "not_found"


def test_an_item_without_a_room_reads_nothing_of_the_rooms_at_add_and_pay(make_app, connection):
    app = make_app(queue_refresh_ms=60_000)  # the open rooms, read once, then cached
    admin = bearer(app, "ops", admin=True)
    hot = insert_item(connection, "Hot", "1.00", 10)
    plain = insert_item(connection, "Plain", "1.00", 10)
    with sessions_bound_to(app.extensions["shop"].db, connection):
        client = app.test_client()
        open_room(client, admin, hot)
        assert client.get("/metrics").status_code == 200
        join(client, hot, "ann")  # the board is read here
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(connection, "before_cursor_execute", listener)
        try:
            added = client.post("/cart/bob/add", json={"item_id": plain, "quantity": 1})
            assert added.status_code == 200
            assert client.post("/cart/bob/pay", json={"amount": "1.00"}).status_code == 201
        finally:
            event.remove(connection, "before_cursor_execute", listener)
    assert statements and not [s for s in statements if "rooms" in s or "queue_places" in s]


def test_a_join_answers_at_once_and_again_the_same_place(client, admin, connection):
    item = insert_item(connection, "Hot", "1.00", 100)
    open_room(client, admin, item, max_admitted=1)
    first = join(client, item, "ann")
    second = join(client, item, "bob")
    third = join(client, item, "cat")
    assert (first["rank"], second["rank"], third["rank"]) == (1, 2, 3)
    # ann is admitted (the room lets one in); bob and cat wait, cat behind bob
    assert first["status"] == "admitted" and first["admission_token"]
    assert second["status"] == "waiting" and second["position"] == 1 and second["ahead"] == 0
    assert third["position"] == 2 and third["ahead"] == 1
    assert third["poll_after_ms"] >= 1 and third["place_token"]
    again = join(client, item, "cat")
    assert again["rank"] == 3 and again["place_token"] == third["place_token"]
    assert connection.execute(text("SELECT count(*) FROM queue_places")).scalar_one() == 3
    waiting = client.get(
        f"/items/{item}/queue/cat", headers={"X-Place-Token": third["place_token"]}
    )
    assert waiting.headers["Retry-After"] == str(-(-third["poll_after_ms"] // 1000))


def test_add_and_pay_need_an_admission_while_the_room_is_open(client, admin, connection):
    item = insert_item(connection, "Hot", "2.00", 10)
    other = insert_item(connection, "Calm", "1.00", 10)
    open_room(client, admin, item)
    before = shop_state(connection)
    refused = client.post("/cart/ann/add", json={"item_id": item, "quantity": 1})
    assert refused.status_code == 409 and code(refused) == "queue_required"
    assert refused.get_json()["error"]["details"]["join"] == f"/items/{item}/queue/ann"
    assert shop_state(connection) == before
    # an item without a room is as before
    assert client.post("/cart/ann/add", json={"item_id": other, "quantity": 1}).status_code == 200

    token = admitted(client, item, "ann")
    with_token = {"X-Admission-Token": token}
    added = client.post("/cart/ann/add", json={"item_id": item, "quantity": 1}, headers=with_token)
    assert added.status_code == 200, added.get_json()
    # the cart holds the roomed item: a pay without the token is refused, nothing sold
    before = shop_state(connection)
    refused = client.post("/cart/ann/pay", json={"amount": "3.00"})
    assert refused.status_code == 409 and code(refused) == "queue_required"
    assert shop_state(connection) == before
    paid = client.post("/cart/ann/pay", json={"amount": "3.00"}, headers=with_token)
    assert paid.status_code == 201, paid.get_json()
    # the place is done: no longer in flight
    done = connection.execute(
        text("SELECT outcome FROM queue_places WHERE user_id = 'ann'")
    ).scalar_one()
    assert done == "paid"


def test_an_admission_token_is_refused_expired_forged_or_for_another_item_or_buyer(
    client, admin, connection, clock
):
    hot = insert_item(connection, "Hot", "1.00", 10)
    warm = insert_item(connection, "Warm", "1.00", 10)
    open_room(client, admin, hot, admission_ttl_s=60)
    open_room(client, admin, warm)
    ann = admitted(client, hot, "ann")
    admitted(client, warm, "bob")

    def add(user, item, token):
        return client.post(
            f"/cart/{user}/add",
            json={"item_id": item, "quantity": 1},
            headers={"X-Admission-Token": token},
        )

    assert add("ann", hot, ann).status_code == 200
    for user, item, token in [
        ("bob", hot, ann),  # another buyer's
        ("ann", warm, ann),  # another item's
        ("ann", hot, ann[:-2] + ("A" if ann[-2] != "A" else "B") + ann[-1]),  # forged
        ("ann", hot, "not-a-token"),
    ]:
        refused = add(user, item, token)
        assert refused.status_code == 409 and code(refused) == "queue_required", (user, item)
    clock.advance(61)
    expired = add("ann", hot, ann)
    assert expired.status_code == 409 and code(expired) == "queue_required"
    assert "expired" in expired.get_json()["error"]["message"]


def test_admission_stops_when_the_stock_is_covered_and_the_rest_are_told_sold_out(
    client, admin, connection
):
    item = insert_item(connection, "Hot", "1.00", 2)
    open_room(client, admin, item, max_admitted=10)
    places = {user: join(client, item, user) for user in ["a", "b", "c", "d"]}
    statuses = {
        user: poll(client, item, user, p["place_token"])["status"] for user, p in places.items()
    }
    assert statuses == {"a": "admitted", "b": "admitted", "c": "sold_out", "d": "sold_out"}
    room = client.get(f"/admin/items/{item}/queue", headers=admin).get_json()
    assert room["serving"] == 2 and room["in_flight"] == 2 and room["line_length"] == 2


def test_a_restock_moves_the_line_again(client, admin, connection):
    item = insert_item(connection, "Hot", "1.00", 1)
    open_room(client, admin, item, max_admitted=10)
    places = {user: join(client, item, user) for user in ["a", "b", "c"]}
    assert poll(client, item, "b", places["b"]["place_token"])["status"] == "sold_out"
    restocked = client.post(f"/admin/items/{item}/restock", json={"quantity": 1}, headers=admin)
    assert restocked.status_code == 200
    assert poll(client, item, "b", places["b"]["place_token"])["status"] == "admitted"
    assert poll(client, item, "c", places["c"]["place_token"])["status"] == "sold_out"


def test_a_per_buyer_limit_counts_each_admitted_buyer_at_the_limit(client, admin, connection):
    item = insert_item(connection, "Hot", "1.00", 4)
    connection.execute(text("UPDATE items SET per_user_limit = 2 WHERE id = :i"), {"i": item})
    open_room(client, admin, item, max_admitted=10)
    places = {user: join(client, item, user) for user in ["a", "b", "c"]}
    statuses = [poll(client, item, u, p["place_token"])["status"] for u, p in places.items()]
    assert statuses == ["admitted", "admitted", "sold_out"]


def test_an_abandoned_admission_gives_its_place_back(client, admin, connection, clock):
    item = insert_item(connection, "Hot", "1.00", 10)
    open_room(client, admin, item, max_admitted=1, admission_ttl_s=30)
    ann = join(client, item, "ann")
    bob = join(client, item, "bob")
    assert ann["status"] == "admitted" and bob["status"] == "waiting"
    clock.advance(29)
    assert poll(client, item, "bob", bob["place_token"])["status"] == "waiting"
    clock.advance(2)  # ann neither paid nor left within her admission
    assert poll(client, item, "bob", bob["place_token"])["status"] == "admitted"
    lapsed = poll(client, item, "ann", ann["place_token"])
    assert lapsed["status"] == "lapsed" and lapsed["admission_token"] is None
    refused = client.post(
        "/cart/ann/add",
        json={"item_id": item, "quantity": 1},
        headers={"X-Admission-Token": ann["admission_token"]},
    )
    assert refused.status_code == 409 and code(refused) == "queue_required"


def test_a_buyer_who_leaves_frees_the_admission(client, admin, connection):
    item = insert_item(connection, "Hot", "1.00", 10)
    open_room(client, admin, item, max_admitted=1)
    join(client, item, "ann")
    bob = join(client, item, "bob")
    assert bob["status"] == "waiting"
    assert client.delete(f"/items/{item}/queue/ann").status_code == 200
    assert poll(client, item, "bob", bob["place_token"])["status"] == "admitted"
    assert client.delete(f"/items/{item}/queue/ann").status_code == 404


def test_a_paid_admission_lets_the_next_buyer_in(client, admin, connection):
    item = insert_item(connection, "Hot", "1.00", 10)
    open_room(client, admin, item, max_admitted=1)
    token = {"X-Admission-Token": join(client, item, "ann")["admission_token"]}
    bob = join(client, item, "bob")
    assert bob["status"] == "waiting"
    assert (
        client.post("/cart/ann/add", json={"item_id": item, "quantity": 1}, headers=token)
    ).status_code == 200
    assert client.post("/cart/ann/pay", json={"amount": "1.00"}, headers=token).status_code == 201
    assert poll(client, item, "bob", bob["place_token"])["status"] == "admitted"


def test_a_place_token_of_another_buyer_or_item_is_refused(client, admin, connection):
    hot = insert_item(connection, "Hot", "1.00", 10)
    warm = insert_item(connection, "Warm", "1.00", 10)
    open_room(client, admin, hot)
    open_room(client, admin, warm)
    ann = join(client, hot, "ann")["place_token"]
    join(client, warm, "ann")
    for path, token in [
        (f"/items/{hot}/queue/bob", ann),
        (f"/items/{warm}/queue/ann", ann),
        (f"/items/{hot}/queue/ann", "forged"),
    ]:
        refused = client.get(path, headers={"X-Place-Token": token})
        assert refused.status_code == 400 and code(refused) == "invalid_request", path
    missing = client.get(f"/items/{hot}/queue/ann")
    assert missing.status_code == 400


def test_polling_a_waiting_place_costs_no_statement(make_app, connection, clock):
    app = make_app(queue_refresh_ms=60_000)  # the front is read once, then cached
    app.extensions["shop"].clock = clock
    admin = bearer(app, "ops", admin=True)
    item = insert_item(connection, "Hot", "1.00", 10)
    with sessions_bound_to(app.extensions["shop"].db, connection):
        client = app.test_client()
        open_room(client, admin, item, max_admitted=1)
        join(client, item, "ann")
        bob = join(client, item, "bob")
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(connection, "before_cursor_execute", listener)
        try:
            for _ in range(20):
                assert poll(client, item, "bob", bob["place_token"])["status"] == "waiting"
        finally:
            event.remove(connection, "before_cursor_execute", listener)
    assert statements == []


def test_a_random_room_draws_the_early_buyers_once_the_sale_opens(client, admin, connection, clock):
    item = insert_item(connection, "Hot", "1.00", 100)
    connection.execute(
        text("UPDATE items SET sale_starts_at = :at WHERE id = :i"),
        {"at": T0 + dt.timedelta(minutes=10), "i": item},
    )
    open_room(client, admin, item, mode="random", max_admitted=100)
    users = [f"early{n}" for n in range(12)]
    places = {user: join(client, item, user) for user in users}
    assert {p["status"] for p in places.values()} == {"before_draw"}
    assert all(p["position"] is None and p["admission_token"] is None for p in places.values())
    clock.advance(600)
    answers = {user: poll(client, item, user, p["place_token"]) for user, p in places.items()}
    ranks = sorted(a["rank"] for a in answers.values())
    assert ranks == list(range(1, 13))  # the draw: a permutation of the early ranks
    assert {a["status"] for a in answers.values()} == {"admitted"}
    seed = connection.execute(
        text("SELECT draw_seed FROM rooms WHERE item_id = :i"), {"i": item}
    ).scalar_one()
    assert seed is not None and len(seed) == 32
    late = join(client, item, "late")
    assert late["rank"] == 13  # after the draw, arrival order behind the drawn


def test_the_operator_opens_shows_and_closes_a_room(client, admin, connection):
    item = insert_item(connection, "Hot", "1.00", 10)
    assert client.get(f"/admin/items/{item}/queue", headers=admin).status_code == 404
    assert client.get(f"/admin/items/{item}/queue").status_code == 401
    bad = client.put(
        f"/admin/items/{item}/queue", json={"open": True, "mode": "lottery"}, headers=admin
    )
    assert bad.status_code == 400 and code(bad) == "invalid_request"
    tiny = client.put(
        f"/admin/items/{item}/queue", json={"open": True, "rate_per_s": 0.0001}, headers=admin
    )
    assert tiny.status_code == 400
    unknown = client.put("/admin/items/999999/queue", json={"open": True}, headers=admin)
    assert unknown.status_code == 404
    room = open_room(client, admin, item, rate_per_s=2.5, max_admitted=7)
    assert room["open"] is True and room["mode"] == "fifo"
    assert room["rate_per_s"] == 2.5 and room["max_admitted"] == 7
    join(client, item, "ann")
    changed = client.put(
        f"/admin/items/{item}/queue", json={"open": True, "mode": "random"}, headers=admin
    )
    assert changed.status_code == 409  # a room with places keeps its mode
    closed = client.put(f"/admin/items/{item}/queue", json={"open": False}, headers=admin)
    assert closed.status_code == 200 and closed.get_json()["open"] is False
    # closed: the shop is as before
    assert client.post("/cart/bob/add", json={"item_id": item, "quantity": 1}).status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "shop_queue_line_length" in metrics


def test_a_fixed_rate_paces_admissions_without_a_burst(client, admin, connection, clock):
    item = insert_item(connection, "Hot", "1.00", 100)
    open_room(client, admin, item, rate_per_s=2, max_admitted=100)
    places = {f"b{n}": join(client, item, f"b{n}") for n in range(10)}

    def admitted_now() -> int:
        poll(client, item, "b9", places["b9"]["place_token"])  # a poll moves the front
        return client.get(f"/admin/items/{item}/queue", headers=admin).get_json()["serving"]

    assert admitted_now() == 0
    assert places["b9"]["estimated_wait_s"] is None or places["b9"]["estimated_wait_s"] == 5
    clock.advance(1)
    assert admitted_now() == 2
    clock.advance(0.25)
    assert admitted_now() == 2  # half a place: carried over
    clock.advance(0.25)
    assert admitted_now() == 3
    clock.advance(60)  # an idle minute saves up one second's worth, not a minute's
    assert admitted_now() == 5
    waiting = poll(client, item, "b9", places["b9"]["place_token"])
    assert waiting["ahead"] == 4 and waiting["estimated_wait_s"] == 3  # 5 places at 2/s


def test_the_measured_rate_counts_from_the_first_admission_not_from_the_opening(
    client, admin, connection, clock
):
    """A room opened half a minute before its crowd: the rate it measures (and
    the waits and poll intervals it tells) is the admissions after the first
    one over the time since it, neither the idle time before it nor the first
    fill of the cap, admitted in one instant, as if it were a pace. Counted
    from the opening, 5 admissions over 32 s said 0.16/s; counting the first
    fill, 4 at once said 4/s with nobody done."""
    item = insert_item(connection, "Hot", "1.00", 100)
    open_room(client, admin, item, max_admitted=4)
    clock.advance(30)
    places = {f"b{n}": join(client, item, f"b{n}") for n in range(12)}
    waiting = poll(client, item, "b11", places["b11"]["place_token"])  # the first fill
    room = client.get(f"/admin/items/{item}/queue", headers=admin).get_json()
    assert room["serving"] == 4 and room["admission_rate_per_s"] == 0.0  # no pace yet
    assert waiting["estimated_wait_s"] is None and waiting["poll_after_ms"] == 1000
    assert client.delete(f"/items/{item}/queue/b0").status_code == 200  # one done
    clock.advance(2)
    waiting = poll(client, item, "b11", places["b11"]["place_token"])
    room = client.get(f"/admin/items/{item}/queue", headers=admin).get_json()
    assert room["serving"] == 5 and room["admission_rate_per_s"] == 0.5  # 1 more in 2 s
    assert waiting["ahead"] == 6 and waiting["estimated_wait_s"] == 14
    assert waiting["poll_after_ms"] == 3500


def test_a_place_told_sold_out_is_asked_back_slowly_unless_next_in(client, admin, connection):
    """Sold out moves only when units come back, and they reach the places just
    behind the cut-off first: those (as many as the room admits at once) poll
    as the front does; the rest are asked back slowly (30 s, or half an
    admission's life if shorter). A crowd of thousands told sold out polling
    each second would cost the shop more than its sale."""
    item = insert_item(connection, "Hot", "1.00", 1)
    open_room(client, admin, item, max_admitted=1, admission_ttl_s=40)
    places = {user: join(client, item, user) for user in ["a", "b", "c"]}

    def answer(user):
        response = client.get(
            f"/items/{item}/queue/{user}", headers={"X-Place-Token": places[user]["place_token"]}
        )
        return response.get_json(), response.headers["Retry-After"]

    (b, b_retry), (c, c_retry) = answer("b"), answer("c")
    assert (b["status"], b["poll_after_ms"], b_retry) == ("sold_out", 1000, "1")
    assert (c["status"], c["poll_after_ms"], c_retry) == ("sold_out", 20_000, "20")
