from decimal import Decimal

import pytest

from ecommerce.api import validation
from ecommerce.errors import InvalidRequest
from ecommerce.limits import MAX_QUANTITY


@pytest.mark.parametrize("user_id", ["user123", "a", "A.b-c_9", "x" * 64])
def test_valid_user_ids(user_id):
    assert validation.user_id(user_id) == user_id


@pytest.mark.parametrize("user_id", ["", "x" * 65, "a b", "a/b", "é", "a\n", "a;drop", "a%20"])
def test_invalid_user_ids(user_id):
    with pytest.raises(InvalidRequest):
        validation.user_id(user_id)


def test_add_to_cart_reads_integers():
    assert validation.add_to_cart({"item_id": 1, "quantity": 2}) == (1, 2)
    assert validation.add_to_cart({"item_id": 1, "quantity": 2, "extra": "ignored"}) == (1, 2)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"item_id": 1},
        {"quantity": 1},
        {"item_id": 1, "quantity": Decimal("1.5")},
        {"item_id": 1, "quantity": "2"},
        {"item_id": 1, "quantity": True},
        {"item_id": True, "quantity": 1},
        {"item_id": 1, "quantity": None},
        {"item_id": 1, "quantity": 0},
        {"item_id": 1, "quantity": -3},
        {"item_id": 0, "quantity": 1},
        {"item_id": 2**31, "quantity": 1},
        {"item_id": 1, "quantity": MAX_QUANTITY + 1},
        {"item_id": [1], "quantity": 1},
    ],
)
def test_add_to_cart_refuses(body):
    with pytest.raises(InvalidRequest):
        validation.add_to_cart(body)


def test_payment_amount():
    assert validation.payment_amount({"amount": Decimal("1.00")}) == Decimal("1.00")
    assert validation.payment_amount({"amount": "1.00"}) == Decimal("1.00")
    with pytest.raises(InvalidRequest, match="required"):
        validation.payment_amount({})
    with pytest.raises(InvalidRequest, match="two decimal"):
        validation.payment_amount({"amount": Decimal("1.005")})


def test_the_balancers_statistics_name_each_instance_and_its_state():
    from ecommerce.services.balancer import parse

    csv = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
        "wretr,wredis,status,weight\n"
        "shop,FRONTEND,,,3,9,4096,120,0,0,0,0,0,,,,,OPEN,\n"
        "instances,i1,0,0,2,8,,60,0,0,,0,,0,0,0,0,UP,1\n"
        "instances,i2,0,0,0,5,,40,0,0,,0,,3,0,0,0,DOWN,1\n"
        "instances,i3,0,0,1,4,,20,0,0,,0,,0,0,0,0,UP 1/2,1\n"
        "instances,BACKEND,0,0,3,9,,120,0,0,0,0,,3,0,0,0,UP,2\n"
    )
    found = parse(csv)
    assert [(i.name, i.status, i.sessions, i.in_service) for i in found] == [
        ("i1", "UP", 2, True),
        ("i2", "DOWN", 0, False),
        ("i3", "UP 1/2", 1, True),
    ]
