"""Idempotency-Key: a request that takes effect at most once.

Semantics follow the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
and Stripe's API:

* the key is scoped to the user; it is stored with a fingerprint of the request
  (method, path, canonical JSON body) and the response, in the same
  transaction as the effect, so either both exist or neither does;
* a replay returns the first response byte for byte (status and body), with
  ``Idempotent-Replayed: true``;
* the same key while the first request still runs: 409 ``idempotency_key_in_use``
  (a transaction-scoped advisory lock tells, without waiting);
* the same key with a different request: 422 ``idempotency_key_reused``;
* only successful responses are stored: a refused request changed nothing, so
  repeating it simply runs it again;
* keys live IDEMPOTENCY_TTL_S (24 h by default); `flask prune-idempotency-keys`
  deletes expired ones, and an expired key may be used afresh.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from ecommerce.errors import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidRequest
from ecommerce.repositories import IdempotencyRepository

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}\Z")  # visible ASCII, like a UUID or a ULID


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    replayed: bool


def parse_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    key = raw.strip()
    if key.startswith('"') and key.endswith('"') and len(key) >= 2:
        key = key[1:-1]  # the draft sends it as a structured-field string
    if not KEY_PATTERN.match(key):
        raise InvalidRequest(f"{HEADER} must be 1-255 visible ASCII characters")
    return key


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(
        [method.upper(), path, body], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def once(
    session: Session,
    *,
    user_id: str,
    key: str,
    request_fingerprint: str,
    ttl_s: int,
    effect: Callable[[], tuple[int, bytes]],
) -> StoredResponse:
    """Run ``effect`` (inside the caller's transaction) unless ``key`` already ran."""
    keys = IdempotencyRepository(session)
    if not keys.try_lock(user_id, key):
        raise IdempotencyKeyInUse(
            f"a request with this {HEADER} is still being processed; retry shortly"
        )
    stored = keys.find_live(user_id, key)
    if stored is not None:
        if stored.fingerprint != request_fingerprint:
            raise IdempotencyKeyReused(f"this {HEADER} was already used for a different request")
        return StoredResponse(stored.response_status, bytes(stored.response_body), True)
    status, body = effect()
    keys.save(user_id, key, request_fingerprint, status, body, ttl_s)
    return StoredResponse(status, body, False)
