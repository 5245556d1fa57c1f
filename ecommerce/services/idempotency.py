"""Idempotency-Key: a request that takes effect at most once.

Semantics follow the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
and Stripe's API:

* the key is scoped to the user; it is stored with a fingerprint of the request
  (the use case and its arguments) and the result, in the same transaction as
  the effect, so either both exist or neither does;
* a replay returns the first result (the API renders it to the same bytes),
  marked as replayed; its transaction's COMMIT waits for the synchronous standby
  like a write, so a first request answered 503 because its commit's wait was
  cut short is acknowledged only once the standby has it;
* the same key while the first request still runs: ``IdempotencyKeyInUse``
  (a transaction-scoped advisory lock tells, without waiting);
* the same key with a different request: ``IdempotencyKeyReused``;
* only successful results are stored: a refused request changed nothing, so
  repeating it simply runs it again;
* keys live IDEMPOTENCY_TTL_S (24 h by default); `flask prune-idempotency-keys`
  deletes expired ones, and an expired key may be used afresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from ecommerce.errors import IdempotencyKeyInUse, IdempotencyKeyReused, ShopError
from ecommerce.limits import IDEMPOTENCY_HEADER
from ecommerce.repositories import IdempotencyRepository
from ecommerce.services import Shop
from ecommerce.services.results import Recordable

R = TypeVar("R", bound=Recordable)


def fingerprint(use_case: str, user_id: str, arguments: dict[str, Any]) -> str:
    canonical = json.dumps(
        [use_case, user_id, arguments], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def in_use() -> IdempotencyKeyInUse:
    return IdempotencyKeyInUse(
        f"a request with this {IDEMPOTENCY_HEADER} is still being processed; retry shortly"
    )


def reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"this {IDEMPOTENCY_HEADER} was already used for a different request"
    )


class KeyedRequest(Protocol):
    """A request of a batch, as the key step sees it."""

    @property
    def user_id(self) -> str: ...
    @property
    def key(self) -> str | None: ...
    @property
    def fingerprint(self) -> str: ...


def claim(
    session: Session,
    batch: Sequence[KeyedRequest],
    decode: Callable[[bytes], R],
    now: dt.datetime,
) -> list[R | ShopError | None]:
    """The key step of a batch (one request or many), inside its transaction, up
    to the effect: per request, its replayed result or its refusal (in use,
    reused), or None where the effect is still to run (no key, or a key not
    used yet, now locked for this transaction by its advisory lock). Two
    statements for the whole batch, none without keys. The combiner lets one
    request per (user, key) be in flight, so a batch never holds one key twice;
    the caller stores the new results in the statement that writes the effect."""
    outcomes: list[R | ShopError | None] = [None] * len(batch)
    first_with_key: dict[tuple[str, str], int] = {}
    for n, request in enumerate(batch):
        if request.key is not None:
            first_with_key[(request.user_id, request.key)] = n
    if not first_with_key:
        return outcomes
    keys = IdempotencyRepository(session)
    pairs = list(first_with_key)
    locked = [pair for pair, ok in zip(pairs, keys.try_lock(pairs), strict=True) if ok]
    stored = keys.find_live(locked, now) if locked else {}
    locked_set = set(locked)
    replayed = []
    for pair, n in first_with_key.items():
        if pair not in locked_set:
            outcomes[n] = in_use()
        elif pair in stored:
            same = stored[pair].fingerprint == batch[n].fingerprint
            outcomes[n] = decode(stored[pair].result) if same else reused()
            if same:
                replayed.append(pair)
    if replayed:
        keys.commit_waits_for_replicas(replayed)
    return outcomes


def prune_expired(shop: Shop) -> int:
    """Delete expired idempotency keys; returns how many."""
    return shop.transaction(
        lambda session: IdempotencyRepository(session).delete_expired(shop.clock()),
        "prune_idempotency_keys",
    )
