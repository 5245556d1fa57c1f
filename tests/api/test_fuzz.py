"""Property-based fuzzing of every endpoint: whatever arrives, the answer is
never a 5xx, always JSON, and a refused request changes nothing."""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecommerce.services import rooms
from ecommerce.tokens import issue_token
from tests.helpers import insert_cart_line, insert_item, sessions_bound_to, shop_state

SECRET = "fuzz-secret-0123456789"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# Bodies close to valid ones find more than pure noise does.
cart_bodies = st.fixed_dictionaries(
    {},
    optional={
        "item_id": st.one_of(st.integers(-3, 5), json_values),
        "quantity": st.one_of(st.integers(-3, 20), json_values),
    },
)
pay_bodies = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.one_of(
            st.decimals(min_value=-5, max_value=50, places=2).map(str),
            st.decimals(allow_nan=False, allow_infinity=False),
            json_values,
        )
    },
)
raw_bodies = st.one_of(
    cart_bodies.map(json.dumps),
    pay_bodies.map(lambda b: json.dumps(b, default=str)),
    json_values.map(lambda v: json.dumps(v, default=str)),
    st.binary(max_size=64),
    st.text(max_size=64),
    st.sampled_from(['{"amount": NaN}', '{"amount": 1e999}', "[" * 3000, '{"item_id": 1e400}']),
)
user_ids = st.one_of(
    st.sampled_from(["alice", "bob", "u.1", "x" * 64]),
    st.text(min_size=1, max_size=70).filter(
        lambda s: "/" not in s and "?" not in s and "#" not in s
    ),
)
ids = st.one_of(st.integers(-2, 6), st.integers(2**31 - 2, 2**64), st.text(max_size=5))
paths = st.one_of(
    st.just("/items"),
    ids.map(lambda i: f"/items/{i}"),
    user_ids.map(lambda u: f"/cart/{u}"),
    user_ids.map(lambda u: f"/cart/{u}/add"),
    user_ids.map(lambda u: f"/cart/{u}/checkout"),
    user_ids.map(lambda u: f"/cart/{u}/pay"),
    st.tuples(user_ids, ids).map(lambda t: f"/cart/{t[0]}/items/{t[1]}"),
    ids.map(lambda i: f"/orders/{i}"),
    st.tuples(ids, user_ids).map(lambda t: f"/items/{t[0]}/queue/{t[1]}"),
    ids.map(lambda i: f"/admin/items/{i}/queue"),
    st.tuples(user_ids, st.text(max_size=12)).map(lambda t: f"/users/{t[0]}/orders?limit={t[1]}"),
)
methods = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"])
headers = st.fixed_dictionaries(
    {},
    optional={
        "Idempotency-Key": st.text(max_size=300).filter(lambda s: "\n" not in s and "\r" not in s),
        "Authorization": st.one_of(
            st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s),
            st.sampled_from(["alice", "bob"]).map(
                lambda u: "Bearer " + issue_token(SECRET, u, 600, now=time.time())
            ),
        ),
        "X-Place-Token": st.text(max_size=60).filter(lambda s: "\n" not in s and "\r" not in s),
        "X-Admission-Token": st.text(max_size=60).filter(lambda s: "\n" not in s and "\r" not in s),
        "Content-Type": st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded"]
        ),
    },
)


@pytest.fixture(params=[False, True], ids=["auth-off", "auth-on"])
def fuzz_client(request, make_app, connection):
    app = make_app(auth_required=request.param, secret_key=SECRET)
    a = insert_item(connection, "A", "0.50", 10)
    b = insert_item(connection, "B", "1.25", 3)
    for user in ("alice", "bob"):
        insert_cart_line(connection, user, a, 2)
        insert_cart_line(connection, user, b, 1)
    with sessions_bound_to(app.extensions["shop"].db, connection):
        # B has a waiting room: its paths, and the pays it gates, are fuzzed too
        rooms.configure_room(app.extensions["shop"], b, rooms.RoomOptions(open=True))
        yield app.test_client()


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=methods, path=paths, body=raw_bodies, extra_headers=headers)
def test_no_input_gives_a_5xx_or_a_partial_write(
    fuzz_client, connection, method, path, body, extra_headers
):
    before = shop_state(connection)
    try:
        response = fuzz_client.open(path, method=method, data=body, headers=extra_headers)
    except (ValueError, UnicodeError):
        # The test client itself refuses some headers/paths before any request is made.
        return
    assert response.status_code < 500, (method, path, body, response.get_data(as_text=True))
    assert response.is_json, response.get_data(as_text=True)
    payload = response.get_json()
    if response.status_code >= 400:
        assert (
            set(payload) == {"error"} and payload["error"]["code"] and payload["error"]["message"]
        )
        assert shop_state(connection) == before, (method, path, body)
    else:
        assert method in {"GET", "POST", "DELETE"}


def test_money_leaves_as_decimal_strings(fuzz_client):
    token = issue_token(SECRET, "alice", now=time.time())
    quote = fuzz_client.get("/cart/alice/checkout", headers={"Authorization": f"Bearer {token}"})
    assert quote.status_code == 200
    body = json.loads(quote.get_data())
    assert body["total"] == "2.25"
    for line in body["lines"]:
        assert isinstance(line["unit_price"], str) and isinstance(line["line_total"], str)
        assert isinstance(line["available"], str)
