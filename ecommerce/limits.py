"""Every bound the shop accepts, in one place.

Validation, route converters, services and the CLI all read these, so a limit
changes in one line. Each one follows from a column type in the schema.
"""

from __future__ import annotations

import re
from decimal import Decimal

#: Item ids are PostgreSQL INT (items.id); order ids BIGINT (orders.id).
MAX_ID = 2**31 - 1
MAX_ORDER_ID = 2**63 - 1
#: The largest whole quantity items.stock (NUMERIC(10, 2)) can hold.
MAX_QUANTITY = 99_999_999
#: items.price is NUMERIC(10, 2).
MAX_PRICE = Decimal("99999999.99")
#: orders.total and payments.amount are NUMERIC(12, 2).
MAX_AMOUNT = Decimal("9999999999.99")
#: Orders per page of GET /users/<user_id>/orders.
MAX_PAGE_SIZE = 100
#: A user id: what may appear in a URL path segment and in carts.user_id.
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
USER_ID_RULE = "user_id must be 1-64 characters of letters, digits, '_', '.' or '-'"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: An Idempotency-Key: visible ASCII, like a UUID or a ULID.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}\Z")
#: The waiting room's tokens: a place token when polling, admission tokens at
#: add and pay (several, comma-separated or repeated: one per roomed item).
PLACE_TOKEN_HEADER = "X-Place-Token"
ADMISSION_TOKEN_HEADER = "X-Admission-Token"
MAX_ADMISSION_TOKENS = 16
MAX_TOKEN_LENGTH = 1024
