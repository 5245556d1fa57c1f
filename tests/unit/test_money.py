from decimal import Decimal

import pytest

from ecommerce.api.jsonio import DecimalJSONProvider
from ecommerce.money import MAX_AMOUNT, MoneyError, format_money, parse_amount


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (Decimal("1.00"), Decimal("1.00")),
        (Decimal("1.1"), Decimal("1.10")),
        (Decimal("1E+2"), Decimal("100.00")),
        (Decimal("1.000"), Decimal("1.00")),  # same value, trailing zeros are fine
        (3, Decimal("3.00")),
        (0, Decimal("0.00")),
        ("0.30", Decimal("0.30")),
        ("12", Decimal("12.00")),
        (MAX_AMOUNT, MAX_AMOUNT),
    ],
)
def test_parse_amount_accepts_exact_amounts(raw, expected):
    value = parse_amount(raw)
    assert value == expected
    assert str(value) == str(expected)


@pytest.mark.parametrize(
    "raw",
    [
        True,
        False,
        None,
        [],
        {},
        1.5,  # a float never reaches here from JSON; refuse it anyway
        Decimal("-0.01"),
        -1,
        Decimal("1.001"),
        "1.001",
        "1e2",
        " 1.00",
        "1,00",
        "-1",
        "NaN",
        "Infinity",
        "",
        Decimal("NaN"),
        Decimal("Infinity"),
        MAX_AMOUNT + Decimal("0.01"),
        Decimal("1E+999999"),
        Decimal("1E-999999"),
    ],
)
def test_parse_amount_refuses(raw):
    with pytest.raises(MoneyError):
        parse_amount(raw)


def test_format_money_always_has_two_decimals():
    assert format_money(Decimal("1")) == "1.00"
    assert format_money(Decimal("0.5")) == "0.50"
    assert format_money(Decimal("10.00")) == "10.00"


def test_json_numbers_with_fractions_become_decimals():
    from flask import Flask

    provider = DecimalJSONProvider(Flask(__name__))
    body = provider.loads('{"amount": 1.10, "n": 2, "e": 1e2}')
    assert body["amount"] == Decimal("1.10") and isinstance(body["amount"], Decimal)
    assert body["n"] == 2 and isinstance(body["n"], int)
    assert body["e"] == Decimal("100")
    # 0.1 + 0.2 is exactly 0.3 in Decimal, which a float would not give.
    assert provider.loads("0.1") + provider.loads("0.2") == Decimal("0.3")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"amount": NaN}'])
def test_json_refuses_non_finite_constants(text):
    from flask import Flask

    provider = DecimalJSONProvider(Flask(__name__))
    with pytest.raises(ValueError):
        provider.loads(text)
