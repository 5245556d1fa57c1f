"""Own-cart authentication (AUTH_REQUIRED)."""

import time

import pytest

from ecommerce import create_app
from ecommerce.config import Settings
from ecommerce.errors import Unauthorized
from ecommerce.tokens import issue_token, read_token
from tests.helpers import insert_cart_line, insert_item, sessions_bound_to

SECRET = "test-secret-0123456789"


@pytest.fixture
def auth_app(make_app, connection):
    app = make_app(auth_required=True, secret_key=SECRET)
    with sessions_bound_to(app.extensions["shop"].db, connection):
        yield app


@pytest.fixture
def auth_client(auth_app):
    return auth_app.test_client()


def bearer(user, ttl=3600, secret=SECRET):
    return {"Authorization": f"Bearer {issue_token(secret, user, ttl, now=time.time())}"}


def test_tokens_round_trip_and_expire():
    token = issue_token(SECRET, "alice", 60, now=time.time())
    assert read_token(SECRET, token, now=time.time()).subject == "alice"
    with pytest.raises(Unauthorized, match="expired"):
        read_token(SECRET, token, now=10**12)
    with pytest.raises(Unauthorized):
        read_token("another-secret-value", token, now=time.time())
    with pytest.raises(Unauthorized):
        read_token(SECRET, token[:-2] + "xx", now=time.time())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "Bearer not-a-token"},
    ],
)
def test_missing_or_bad_tokens_are_401(auth_client, headers):
    r = auth_client.get("/cart/alice", headers=headers)
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_is_401(auth_client):
    import time

    token = issue_token(SECRET, "alice", 60, now=time.time() - 61)  # issued a minute ago
    r = auth_client.get("/cart/alice", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "expired" in r.get_json()["error"]["message"]


def test_own_cart_works_and_anothers_is_403(auth_client, connection):
    a = insert_item(connection, "A", "1.00", 5)
    own = auth_client.post(
        "/cart/alice/add", json={"item_id": a, "quantity": 1}, headers=bearer("alice")
    )
    assert own.status_code == 200
    for method, path in [
        ("GET", "/cart/alice"),
        ("POST", "/cart/alice/add"),
        ("GET", "/cart/alice/checkout"),
        ("POST", "/cart/alice/pay"),
        ("DELETE", f"/cart/alice/items/{a}"),
        ("GET", "/users/alice/orders"),
    ]:
        r = auth_client.open(
            path, method=method, json={"item_id": a, "quantity": 1}, headers=bearer("mallory")
        )
        assert r.status_code == 403, (method, path)
        assert r.get_json()["error"]["code"] == "forbidden"
    assert (
        auth_client.get("/cart/alice", headers=bearer("alice")).get_json()["lines"][0]["quantity"]
        == 1
    )


def test_orders_are_shown_only_to_their_owner(auth_client, connection):
    a = insert_item(connection, "A", "1.00", 5)
    insert_cart_line(connection, "alice", a, 1)
    paid = auth_client.post("/cart/alice/pay", json={"amount": "1.00"}, headers=bearer("alice"))
    assert paid.status_code == 201
    order_id = paid.get_json()["order_id"]
    assert auth_client.get(f"/orders/{order_id}", headers=bearer("alice")).status_code == 200
    hidden = auth_client.get(f"/orders/{order_id}", headers=bearer("mallory"))
    assert hidden.status_code == 404  # not 403: order ids reveal nothing
    assert auth_client.get(f"/orders/{order_id}").status_code == 401
    assert auth_client.get("/users/alice/orders", headers=bearer("alice")).status_code == 200


def test_items_stay_public(auth_client):
    assert auth_client.get("/items").status_code == 200


def test_auth_is_off_in_development_and_on_in_production():
    assert Settings.from_env({}).auth_required is False
    production = Settings.from_env({"APP_ENV": "production", "SECRET_KEY": SECRET})
    assert production.auth_required is True
    assert (
        Settings.from_env(
            {"APP_ENV": "production", "SECRET_KEY": SECRET, "AUTH_REQUIRED": "false"}
        ).auth_required
        is False
    )


def test_production_refuses_the_default_secret_key():
    with pytest.raises(ValueError, match="SECRET_KEY"):
        create_app(Settings.from_env({"APP_ENV": "production"}))
    with pytest.raises(ValueError, match="SECRET_KEY"):
        create_app(Settings.from_env({"APP_ENV": "production", "SECRET_KEY": "short"}))


def test_issue_token_command(make_app):
    app = make_app(secret_key=SECRET)
    result = app.test_cli_runner().invoke(args=["issue-token", "alice", "--ttl", "60"])
    assert result.exit_code == 0
    assert read_token(SECRET, result.output.strip(), now=time.time()).subject == "alice"
    assert app.test_cli_runner().invoke(args=["issue-token", "bad id"]).exit_code != 0
