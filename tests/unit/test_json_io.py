"""The lean JSON paths: a log line's time as datetime writes it, and request
bodies parsed as the standard library with parse_float=Decimal parses them."""

import datetime as dt
import json
import logging
import random
from decimal import Decimal

import pytest
from flask import Flask

from ecommerce.api.jsonio import DecimalJSONProvider, dumps_bytes
from ecommerce.observability import logs


def test_a_log_lines_time_is_datetimes_isoformat_to_the_millisecond():
    draw = random.Random(1212)
    moments = [draw.uniform(0, 4e9) for _ in range(20_000)]
    # The edges of a second and of a millisecond, where rounding decides.
    moments += [s + f for s in (0, 1_765_497_600) for f in (0.0, 0.0005, 0.9995, 0.9999995)]
    for moment in moments:
        expected = dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds")
        assert logs._rfc3339(moment) == expected, moment


def test_a_log_line_keeps_its_fields():
    record = logging.LogRecord("ecommerce.request", logging.INFO, "f", 1, "request", (), None)
    record.fields = {"status": 201, "amount": Decimal("1.10"), "user_id": "ü"}  # type: ignore[attr-defined]
    token = logs.request_id.set("abc")
    try:
        line = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.request_id.reset(token)
    assert line == {
        "time": line["time"],
        "level": "info",
        "logger": "ecommerce.request",
        "message": "request",
        "request_id": "abc",
        "status": 201,
        "amount": "1.10",
        "user_id": "ü",
    }


PROVIDER = DecimalJSONProvider(Flask(__name__))

BODIES = [
    b'{"amount": "1.00"}',
    b'{"amount": 1.10}',
    b'{"amount": 1e2}',
    b'{"item_id": 1, "quantity": 2}',
    b'{"quantity": 123456789012345678901234567890}',
    b'{"a": [1, 2.50, {"b": -0.0}]}',
    b'{"a": 1, "a": 2}',
    b'"\\ud800"',
    b"[]",
    b"null",
]


@pytest.mark.parametrize("body", BODIES)
def test_a_body_parses_as_the_standard_library_with_decimals(body):
    expected = json.loads(body, parse_float=Decimal)
    parsed = PROVIDER.loads(body)
    assert parsed == expected and repr(parsed) == repr(expected)


@pytest.mark.parametrize("body", [b'{"amount": NaN}', b'{"a": Infinity}', b"{", b'{"a": 1} x'])
def test_a_body_refused_is_refused_with_the_standard_librarys_message(body):
    with pytest.raises(ValueError) as ours:
        PROVIDER.loads(body)
    try:
        json.loads(body, parse_float=Decimal, parse_constant=_refuse)
    except ValueError as theirs:
        assert str(ours.value) == str(theirs)


def _refuse(name):
    raise ValueError(f"{name} is not a valid JSON number")


def test_a_deep_body_parses_as_the_standard_library_parses_it():
    body = b'{"a": ' + b"[" * 600 + b"1" + b"]" * 600 + b"}"
    assert PROVIDER.loads(body) == json.loads(body)


def test_what_orjson_cannot_encode_is_encoded_as_before():
    for value in ({"n": 2**70}, {"s": "\ud800"}):
        expected = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        assert dumps_bytes(value) == expected
        assert dumps_bytes(value, newline=True) == expected + b"\n"
    record = logging.LogRecord("x", logging.INFO, "f", 1, "m", (), None)
    record.fields = {"n": 2**70, "s": "\ud800"}  # type: ignore[attr-defined]
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["n"] == 2**70 and line["s"] == "\ud800"


def test_an_answer_is_compact_sorted_json_with_decimals_as_strings():
    body = dumps_bytes({"total": Decimal("9.99"), "lines": [{"b": 1, "a": "é"}]}, newline=True)
    assert body == '{"lines":[{"a":"é","b":1}],"total":"9.99"}\n'.encode()
