"""The OpenAPI document: valid OpenAPI 3.1, covering every route, agreeing with
the validation it is generated from."""

import json
import re

import pytest
from openapi_spec_validator import validate

from ecommerce.api import schemas
from tests.helpers import insert_cart_line, insert_item


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return json.loads(response.get_data())


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_and_method_is_in_the_document(app, document):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or app.view_functions[rule.endpoint].openapi is None:
            continue  # the console's pages, for browsers, are marked as not in the API
        path = re.sub(r"<\w+:", "<", rule.rule).replace("<", "{").replace(">", "}")
        assert path in document["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = document["paths"][path][method.lower()]
            assert "503" in operation["responses"] and operation["summary"]


def test_the_bounds_in_the_document_are_the_ones_enforced(client, document):
    add = document["components"]["schemas"]["AddToCart"]["properties"]["quantity"]
    too_many = add["maximum"] + 1
    refused = client.post("/cart/u1/add", json={"item_id": 1, "quantity": too_many})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["message"] == (
        f"quantity must be between {add['minimum']} and {add['maximum']}"
    )


def test_answers_match_their_models(client, connection):
    item = insert_item(connection, "Modelled", "2.50", 10)
    insert_cart_line(connection, "dora", item, 2)
    schemas.Items.model_validate(client.get("/items").get_json())
    schemas.Item.model_validate(client.get(f"/items/{item}").get_json())
    schemas.Cart.model_validate(client.get("/cart/dora").get_json())
    schemas.Quote.model_validate(client.get("/cart/dora/checkout").get_json())
    order = client.post("/cart/dora/pay", json={"amount": "5.00"})
    assert order.status_code == 201
    schemas.Order.model_validate(order.get_json())
    schemas.OrderPage.model_validate(client.get("/users/dora/orders").get_json())
    schemas.Error.model_validate(client.get("/items/999999").get_json())
    schemas.Health.model_validate(client.get("/healthz").get_json())
