"""The operator's console through the test client: sign-in by one-time link,
CSRF on every action, the live stream and its cap, the waiting rooms shown and
run from it."""

import http.server
import json
import threading

import pytest
from sqlalchemy import text

from ecommerce.api import console as console_api
from ecommerce.domain import queueing
from tests.helpers import bearer, insert_item, shop_state


def link(runner, *args):
    result = runner.invoke(args=["console-link", *args])
    assert result.exit_code == 0, result.output
    url = result.output.split()[-1]
    return url[url.index("/console/login") :]


@pytest.fixture
def signed_in(client, runner):
    answer = client.get(link(runner))
    assert answer.status_code == 303 and answer.headers["Location"] == "/console"
    page = client.get("/console")
    csrf = page.get_data(as_text=True).split('name="csrf-token" content="')[1].split('"')[0]
    return {"X-CSRF-Token": csrf}


def test_a_one_time_link_signs_in_with_a_strict_cookie(client, runner):
    path = link(runner, "--admin", "ops")
    answer = client.get(path)
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over HTTPS the cookie is Secure
    page = client.get("/console")
    assert page.status_code == 200 and "signed in as <b>ops</b>" in page.get_data(as_text=True)
    nonce = path.split("link=")[1]
    assert nonce not in page.get_data(as_text=True)
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")

    again = client.get(path)  # used once already
    assert again.status_code == 401 and "already used" in again.get_data(as_text=True)


def test_an_expired_or_forged_link_is_a_clear_page(client, runner, connection):
    path = link(runner)
    connection.execute(text("UPDATE console_links SET expires_at = now() - interval '1 second'"))
    for attempt in (path, "/console/login?link=forged", "/console/login"):
        answer = client.get(attempt)
        assert answer.status_code == 401
        assert answer.mimetype == "text/html" and "flask console-link" in answer.get_data(
            as_text=True
        )


def test_without_a_session_nothing_is_shown_or_changed(client, connection):
    item = insert_item(connection, "Lamp", "1.00", 5)
    assert client.get("/console").status_code == 401
    events = client.get("/console/events")
    assert events.status_code == 401 and events.get_json()["error"]["code"] == "unauthorized"
    refused = client.post(f"/console/items/{item}/restock", json={"quantity": 5})
    assert refused.status_code == 401
    assert shop_state(connection).stock[item] == 5


def test_actions_need_the_csrf_token(client, signed_in, connection):
    item = insert_item(connection, "Lamp", "1.00", 5)
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        forged = client.post(
            f"/console/items/{item}/restock", json={"quantity": 5}, headers=headers
        )
        assert forged.status_code == 403 and forged.get_json()["error"]["code"] == "forbidden"
    assert shop_state(connection).stock[item] == 5

    restocked = client.post(
        f"/console/items/{item}/restock", json={"quantity": 5}, headers=signed_in
    )
    assert restocked.status_code == 200 and restocked.get_json()["stock"] == "10.00"
    closed = client.post(f"/console/items/{item}/sale", json={"open": False}, headers=signed_in)
    assert closed.get_json()["sale_ends_at"] is not None
    opened = client.post(f"/console/items/{item}/sale", json={"open": True}, headers=signed_in)
    assert (
        opened.get_json()["sale_starts_at"] is not None
        and opened.get_json()["sale_ends_at"] is None
    )
    limited = client.post(f"/console/items/{item}", json={"per_user_limit": 2}, headers=signed_in)
    assert limited.get_json()["per_user_limit"] == 2
    priced = client.post(f"/console/items/{item}", json={"price": "2.50"}, headers=signed_in)
    assert priced.get_json()["price"] == "2.50"
    bad = client.post(f"/console/items/{item}", json={"price": "-1"}, headers=signed_in)
    assert bad.status_code == 400 and bad.get_json()["error"]["message"]
    renamed = client.post(f"/console/items/{item}", json={"name": "x"}, headers=signed_in)
    assert renamed.status_code == 400
    before = shop_state(connection)
    for path, body in [
        ("/sale", {"open": "yes"}),
        ("/restock", {"quantity": "5"}),
        ("/restock", {"quantity": 0}),
        ("", {"per_user_limit": 0}),
    ]:
        refused = client.post(f"/console/items/{item}{path}", json=body, headers=signed_in)
        assert refused.status_code == 400 and refused.get_json()["error"]["message"], body
    missing = client.post("/console/items/999999/restock", json={"quantity": 1}, headers=signed_in)
    assert missing.status_code == 404
    assert shop_state(connection) == before

    assert client.post("/console/logout", headers=signed_in).status_code == 200
    assert client.get("/console").status_code == 401


def test_the_stream_sends_snapshots_and_is_capped(client, signed_in, connection):
    insert_item(connection, "Lamp", "1.00", 5)
    stream = client.get("/console/events")
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    chunks = iter(stream.response)
    assert next(chunks).startswith(b"retry:")
    event = next(chunks).decode()
    assert event.startswith("event: snapshot\n")
    snapshot = json.loads(event.split("data: ", 1)[1])
    lamp = next(i for i in snapshot["items"] if i["name"] == "Lamp")
    assert (lamp["available"], lamp["sold"], lamp["on_sale"]) == ("5.00", 0, True)
    assert {"pays_per_s", "refusals_per_s", "pay_latency_ms", "batch_size", "pending"} <= set(
        snapshot
    )
    # The database reached: this test's server is a primary with no standby.
    database = snapshot["database"]
    assert database["primary"] is True
    assert ":" in database["server"]  # address (or "socket") and port
    assert (database["standbys"], database["synchronous"]) == (0, 0)

    # The next snapshot sees a refusal made meanwhile, from the shop's own metrics.
    assert client.post("/cart/nobody/pay", json={"amount": "1.00"}).status_code == 409
    later = json.loads(next(chunks).decode().split("data: ", 1)[1])
    assert later["refusals_per_s"].get("empty_cart", 0) > 0
    assert later["pay_latency_ms"]["p50"] is not None

    held = [stream] + [
        client.get("/console/events") for _ in range(console_api.CONSOLE_MAX_STREAMS - 1)
    ]
    try:
        for response in held[1:]:
            next(iter(response.response))  # started: each holds its place
        beyond = client.get("/console/events")
        assert beyond.status_code == 503 and "Retry-After" in beyond.headers
    finally:
        for response in held:
            response.close()


def test_over_https_the_cookie_is_secure(client, runner):
    answer = client.get(link(runner), base_url="https://localhost")
    assert answer.status_code == 303
    assert "Secure" in answer.headers["Set-Cookie"]


def test_the_stream_shows_the_instances_behind_the_balancer(app, client, signed_in):
    """With BALANCER_STATS_URL, each snapshot names the instances as HAProxy's
    statistics (CSV over HTTP, here from a local server) say; when that page
    does not answer, the snapshot says nothing of them rather than failing."""
    stats = (
        b"# pxname,svname,scur,status\n"
        b"instances,i1,4,UP\ninstances,i2,0,DOWN\ninstances,BACKEND,4,UP\n"
    )

    class Stats(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(stats)))
            self.end_headers()
            self.wfile.write(stats)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shop = app.extensions["shop"]
    shop.balancer_stats_url = f"http://127.0.0.1:{server.server_address[1]}/stats;csv"
    try:
        stream = client.get("/console/events")
        chunks = iter(stream.response)
        next(chunks)
        snapshot = json.loads(next(chunks).decode().split("data: ", 1)[1])
        assert snapshot["instances"] == [
            {"name": "i1", "status": "UP", "in_service": True, "sessions": 4},
            {"name": "i2", "status": "DOWN", "in_service": False, "sessions": 0},
        ]
        server.shutdown()
        server.server_close()
        later = json.loads(next(chunks).decode().split("data: ", 1)[1])
        assert later["instances"] is None
        stream.close()
    finally:
        shop.balancer_stats_url = None


# --- The waiting rooms ---------------------------------------------------------


@pytest.fixture
def admin(app):
    return bearer(app, "ops", admin=True)


@pytest.fixture
def rooms_now(shop):
    """Every request (the snapshot's too) advances the open rooms, as a
    refresh a moment later would."""
    shop.room_board.refresh_s = 0


def rooms(connection):
    return connection.execute(
        text("SELECT item_id, is_open, mode, rate_per_s, max_admitted FROM rooms ORDER BY 1")
    ).all()


def test_a_room_is_run_from_the_console(client, signed_in, admin, connection):
    item = insert_item(connection, "Phone", "9.00", 5)
    assert client.get(f"/admin/items/{item}/queue", headers=admin).status_code == 404

    opened = client.post(
        f"/console/items/{item}/queue",
        json={"open": True, "mode": "random", "rate_per_s": 2.5, "max_admitted": 3},
        headers=signed_in,
    )
    assert opened.status_code == 200, opened.get_json()
    room = opened.get_json()
    assert (room["item_id"], room["open"], room["mode"]) == (item, True, "random")
    assert (room["rate_per_s"], room["max_admitted"]) == (2.5, 3)
    seen = client.get(f"/admin/items/{item}/queue", headers=admin).get_json()
    assert (seen["open"], seen["mode"], seen["rate_per_s"], seen["max_admitted"]) == (
        True,
        "random",
        2.5,
        3,
    )

    # null: the fixed rate goes, the rest stays
    cleared = client.post(
        f"/console/items/{item}/queue", json={"open": True, "rate_per_s": None}, headers=signed_in
    ).get_json()
    assert (cleared["rate_per_s"], cleared["max_admitted"], cleared["mode"]) == (None, 3, "random")
    capped = client.post(
        f"/console/items/{item}/queue", json={"open": True, "max_admitted": 7}, headers=signed_in
    ).get_json()
    assert (capped["rate_per_s"], capped["max_admitted"]) == (None, 7)

    closed = client.post(f"/console/items/{item}/queue", json={"open": False}, headers=signed_in)
    assert closed.status_code == 200 and closed.get_json()["open"] is False
    assert client.get(f"/admin/items/{item}/queue", headers=admin).get_json()["open"] is False

    missing = client.post("/console/items/999999/queue", json={"open": True}, headers=signed_in)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def test_the_room_actions_refuse_without_a_session_a_token_or_a_good_body(
    client, runner, connection
):
    item = insert_item(connection, "Phone", "9.00", 5)
    path = f"/console/items/{item}/queue"
    unsigned = client.post(path, json={"open": True})
    assert unsigned.status_code == 401 and unsigned.get_json()["error"]["code"] == "unauthorized"

    client.get(link(runner))
    page = client.get("/console").get_data(as_text=True)
    csrf = {"X-CSRF-Token": page.split('name="csrf-token" content="')[1].split('"')[0]}
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        forged = client.post(path, json={"open": True}, headers=headers)
        assert forged.status_code == 403 and forged.get_json()["error"]["code"] == "forbidden"
    assert rooms(connection) == []

    for body in [
        {},
        {"open": "yes"},
        {"open": True, "mode": "lifo"},
        {"open": True, "rate_per_s": 0},
        {"open": True, "rate_per_s": "fast"},
        {"open": True, "max_admitted": 0},
        {"open": True, "max_admitted": 2.5},
    ]:
        refused = client.post(path, json=body, headers=csrf)
        assert refused.status_code == 400, body
        assert refused.get_json()["error"]["code"] == "invalid_request", body
        assert refused.get_json()["error"]["message"], body
    not_json = client.post(path, data="open", headers=csrf, content_type="application/json")
    assert not_json.status_code == 400
    assert rooms(connection) == []

    # A room's settings stay as they were after a bad change.
    assert (
        client.post(path, json={"open": True, "max_admitted": 4}, headers=csrf).status_code == 200
    )
    before = rooms(connection)
    assert (
        client.post(path, json={"open": False, "max_admitted": -1}, headers=csrf).status_code == 400
    )
    assert rooms(connection) == before


def test_the_snapshot_carries_each_room(client, signed_in, connection, rooms_now):
    hot = insert_item(connection, "Phone", "9.00", 5)
    calm = insert_item(connection, "Lamp", "1.00", 5)
    opened = client.post(
        f"/console/items/{hot}/queue", json={"open": True, "max_admitted": 2}, headers=signed_in
    )
    assert opened.status_code == 200
    for n in range(10):
        assert client.post(f"/items/{hot}/queue/fan{n}").status_code == 200

    stream = client.get("/console/events")
    chunks = iter(stream.response)
    next(chunks)
    snapshot = json.loads(next(chunks).decode().split("data: ", 1)[1])
    stream.close()
    by_id = {i["id"]: i for i in snapshot["items"]}
    assert by_id[calm]["room"] is None
    room = by_id[hot]["room"]
    assert (room["open"], room["mode"], room["rate_per_s"], room["max_admitted"]) == (
        True,
        "fifo",
        None,
        2,
    )
    # Two admitted (the cap), eight waiting; five units: places 1-5 can buy,
    # the places behind are told sold out.
    assert (room["serving"], room["in_flight"], room["line_length"]) == (2, 2, 8)
    assert room["sold_out_after"] == 5
    assert room["admission_rate_per_s"] > 0
    assert room["estimated_wait_s"] == queueing.estimated_wait_s(7, room["admission_rate_per_s"])
    assert room["admission_ttl_s"] > 0 and room["refreshed_at"]
