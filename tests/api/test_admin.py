"""The admin API: always behind an admin token; changes go through the ledger."""

import time

import pytest
from sqlalchemy import text

from ecommerce.tokens import issue_token
from tests.helpers import bearer, insert_cart_line, insert_item, shop_state


@pytest.fixture
def admin(app):
    return bearer(app, "ops", admin=True)


@pytest.fixture
def buyer(app):
    return bearer(app, "alice")


def code(response):
    return response.get_json()["error"]["code"]


NEW = {"name": "Phone", "price": "199.00", "stock": 50}


def test_admin_endpoints_need_an_admin_token_even_with_auth_off(client, buyer):
    assert not client.application.extensions["settings"].auth_required
    for method, path in [
        ("POST", "/admin/items"),
        ("PATCH", "/admin/items/1"),
        ("POST", "/admin/items/1/restock"),
        ("GET", "/admin/items/1/sales"),
    ]:
        anonymous = client.open(path, method=method, json={})
        assert anonymous.status_code == 401 and code(anonymous) == "unauthorized"
        as_buyer = client.open(path, method=method, json={}, headers=buyer)
        assert as_buyer.status_code == 403 and code(as_buyer) == "forbidden"


def test_an_admin_token_does_not_act_for_a_buyer(make_app):
    app = make_app(auth_required=True)
    secret = app.extensions["settings"].secret_key
    token = issue_token(secret, "alice", 600, admin=True, now=time.time())
    refused = app.test_client().get("/cart/alice", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403


def test_add_an_item_with_its_rules_and_opening_stock(client, admin, connection):
    created = client.post(
        "/admin/items",
        json=NEW | {"per_user_limit": 2, "sale_starts_at": "2026-12-12T00:00:00+08:00"},
        headers=admin,
    )
    assert created.status_code == 201, created.get_json()
    item = created.get_json()
    assert item["stock"] == "50.00" and item["price"] == "199.00"
    assert item["per_user_limit"] == 2
    assert item["sale_starts_at"] == "2026-12-11T16:00:00+00:00"
    assert item["sale_ends_at"] is None
    assert client.get(f"/items/{item['id']}").get_json() == item
    ledger = connection.execute(
        text("SELECT quantity, reason FROM stock_movements WHERE item_id = :i"), {"i": item["id"]}
    ).all()
    assert [(int(q), r) for q, r in ledger] == [(50, "initial")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (NEW | {"sale_starts_at": "2026-12-12T00:00:00"}, "sale_starts_at must have a UTC offset"),
        (NEW | {"sale_ends_at": "tomorrow"}, "sale_ends_at must be an RFC 3339 time"),
        (
            NEW
            | {"sale_starts_at": "2026-12-12T00:00:00Z", "sale_ends_at": "2026-12-11T00:00:00Z"},
            "sale_ends_at must be after sale_starts_at",
        ),
        (NEW | {"per_user_limit": 0}, "per_user_limit must be between 1 and"),
        (NEW | {"per_user_limit": 1.5}, "per_user_limit must be a JSON integer"),
        (NEW | {"price": "100000000.00"}, "price must not exceed"),
        (NEW | {"stock": -1}, "stock must be between 0 and"),
        ({"price": "1.00", "stock": 1}, "name is required"),
    ],
)
def test_bad_items_are_refused_and_change_nothing(client, admin, connection, body, message):
    before = shop_state(connection)
    refused = client.post("/admin/items", json=body, headers=admin)
    assert refused.status_code == 400, refused.get_json()
    assert refused.get_json()["error"]["message"].startswith(message)
    assert shop_state(connection) == before


def test_change_rules_and_clear_them(client, admin, connection):
    item = insert_item(connection, "Phone", "10.00", 5)
    changed = client.patch(
        f"/admin/items/{item}",
        json={"price": "12.50", "per_user_limit": 1, "sale_ends_at": "2027-01-01T00:00:00Z"},
        headers=admin,
    )
    assert changed.status_code == 200, changed.get_json()
    body = changed.get_json()
    assert (body["price"], body["per_user_limit"]) == ("12.50", 1)
    assert body["sale_ends_at"] == "2027-01-01T00:00:00+00:00"

    # A start after the stored end is refused against the stored value.
    late = client.patch(
        f"/admin/items/{item}", json={"sale_starts_at": "2027-02-01T00:00:00Z"}, headers=admin
    )
    assert late.status_code == 400 and "after sale_starts_at" in late.get_json()["error"]["message"]

    cleared = client.patch(
        f"/admin/items/{item}", json={"per_user_limit": None, "sale_ends_at": None}, headers=admin
    )
    assert cleared.get_json()["per_user_limit"] is None
    assert cleared.get_json()["sale_ends_at"] is None
    assert cleared.get_json()["price"] == "12.50"  # not sent, not changed

    nameless = client.patch(f"/admin/items/{item}", json={"name": None}, headers=admin)
    assert nameless.status_code == 400
    missing = client.patch("/admin/items/999999", json={"name": "x"}, headers=admin)
    assert missing.status_code == 404


def test_restock_through_the_ledger_and_the_sales_of_an_item(client, admin, connection):
    item = insert_item(connection, "Phone", "2.00", 3)
    insert_cart_line(connection, "amy", item, 2)
    assert client.post("/cart/amy/pay", json={"amount": "4.00"}).status_code == 201

    restocked = client.post(f"/admin/items/{item}/restock", json={"quantity": 7}, headers=admin)
    assert restocked.status_code == 200 and restocked.get_json()["stock"] == "8.00"
    zero = client.post(f"/admin/items/{item}/restock", json={"quantity": 0}, headers=admin)
    assert zero.status_code == 400

    sales = client.get(f"/admin/items/{item}/sales", headers=admin)
    assert sales.status_code == 200
    assert sales.get_json() == {
        "item_id": item,
        "available": "8.00",
        "reserved": 0,
        "sold": 2,
        "refunded": 0,
        "revenue": "4.00",
        "orders": 1,
    }
    assert client.get("/admin/items/999999/sales", headers=admin).status_code == 404


def test_issue_an_admin_token_from_the_cli(runner, app):
    from ecommerce.tokens import read_token

    result = runner.invoke(args=["issue-token", "--admin", "ops", "--ttl", "60"])
    assert result.exit_code == 0
    claims = read_token(
        app.extensions["settings"].secret_key, result.output.split()[-1], now=time.time()
    )
    assert claims.subject == "ops" and claims.admin
