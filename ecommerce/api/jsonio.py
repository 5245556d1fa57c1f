"""JSON in and out, with Decimal for every number that has a fraction or exponent.

Out: orjson (compact, keys sorted as Flask's own provider sorts them, a Decimal
as its string), which costs a fraction of the standard library's encoder on
every answer. In: orjson first; a body it refuses, or one with a number that
has a fraction or an exponent, is parsed again by the standard library with
``parse_float=Decimal``, so 1.10 is Decimal("1.10") (never a float), NaN and
Infinity are refused, and every refusal reads as before.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
from flask.json.provider import JSONProvider

_DUMPS_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "__html__"):
        return str(value.__html__())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _has_float(value: Any) -> bool:
    """Whether a float is anywhere in ``value`` (walked without recursion: a
    deeply nested body must not end in RecursionError)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def dumps_bytes(obj: Any, newline: bool = False) -> bytes:
    """``obj`` as compact JSON bytes (keys sorted), with a final newline if asked.
    What orjson cannot encode (an integer past 64 bits, a lone surrogate in a
    string) is encoded by the standard library, as every answer was before."""
    options = (_DUMPS_OPTIONS | orjson.OPT_APPEND_NEWLINE) if newline else _DUMPS_OPTIONS
    try:
        return orjson.dumps(obj, default=_default, option=options)
    except TypeError:  # orjson.JSONEncodeError is one
        text = json.dumps(obj, default=_default, sort_keys=True, separators=(",", ":"))
        return (text + "\n" if newline else text).encode()


class DecimalJSONProvider(JSONProvider):
    """Parses 1.10 as Decimal("1.10") (never a float) and refuses NaN/Infinity."""

    mimetype = "application/json"

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs.get("indent"):  # a person reading, not a client: as the standard library
            return json.dumps(obj, default=_default, sort_keys=True, **kwargs)
        return dumps_bytes(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if not kwargs:
            try:
                value = orjson.loads(s)
            except orjson.JSONDecodeError:
                pass  # the standard library's verdict and message, below
            else:
                if not _has_float(value):
                    return value
        kwargs.setdefault("parse_float", Decimal)
        kwargs.setdefault("parse_constant", _reject_constant)
        return json.loads(s, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps_bytes(obj, newline=True), mimetype=self.mimetype)
