"""JSON in and out, with Decimal for every number that has a fraction or exponent."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from flask.json.provider import DefaultJSONProvider


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


class DecimalJSONProvider(DefaultJSONProvider):
    """Parses 1.10 as Decimal("1.10") (never a float) and refuses NaN/Infinity."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_float", Decimal)
        kwargs.setdefault("parse_constant", _reject_constant)
        return json.loads(s, **kwargs)
