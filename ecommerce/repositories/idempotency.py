"""Idempotency keys: the advisory lock on a (user, key) pair, the live record of
a key, and storing a key with its result (one, or a combined batch's)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, text, tuple_, update

from ecommerce.models import IdempotencyKey
from ecommerce.repositories._base import _Repository


@dataclass(frozen=True)
class NewKeyRecord:
    """An idempotency key to store with its result."""

    user_id: str
    key: str
    fingerprint: str
    result: bytes


@dataclass(frozen=True)
class StoredResult:
    """What an idempotency key recorded: the request's fingerprint and its result."""

    fingerprint: str
    result: bytes


class IdempotencyRepository(_Repository):
    #: Idempotency keys of a batch: a transaction-scoped advisory lock on each
    #: (user, key) pair, tried without waiting; true where it was taken.
    TRY_LOCK_KEYS = text(
        """
    SELECT pg_try_advisory_xact_lock(hashtextextended(concat_ws(E'\\x1f', k.user_id, k.key), 0))
    FROM unnest(CAST(:users AS text[]), CAST(:keys AS text[])) WITH ORDINALITY
         AS k (user_id, key, n)
    ORDER BY k.n
    """
    )

    def try_lock(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """A transaction-scoped advisory lock on each (user, key) pair, tried
        without waiting, in one statement: True where it was taken, False where
        another transaction holds it (the first request with that key is still
        running), in the pairs' order."""
        params = {"users": [u for u, _ in pairs], "keys": [k for _, k in pairs]}
        return [bool(taken) for (taken,) in self._execute(self.TRY_LOCK_KEYS, params)]

    #: The live records of a batch's keys (after their locks were taken).
    FIND_LIVE_KEYS = text(
        """
    SELECT i.user_id, i.key, i.fingerprint, i.result
    FROM idempotency_keys i
    JOIN unnest(CAST(:users AS text[]), CAST(:keys AS text[])) AS k (user_id, key)
      ON i.user_id = k.user_id AND i.key = k.key
    WHERE i.expires_at > :now
    """
    )

    def find_live(
        self, pairs: Sequence[tuple[str, str]], now: dt.datetime
    ) -> dict[tuple[str, str], StoredResult]:
        """The live (unexpired at ``now``) records of these (user, key) pairs, in
        one statement."""
        params = {"users": [u for u, _ in pairs], "keys": [k for _, k in pairs], "now": now}
        return {
            (row.user_id, row.key): StoredResult(row.fingerprint, bytes(row.result))
            for row in self._execute(self.FIND_LIVE_KEYS, params)
        }

    def commit_waits_for_replicas(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Rewrite these (user, key) records unchanged, so that this transaction's
        COMMIT is written and waits for the synchronous standby like any write (a
        transaction that writes nothing commits without waiting): a replay answers
        only once everything before it, the first request's commit included (it
        may have been answered 503 when its own wait was cut short), has reached
        the standby."""
        self._execute(
            update(IdempotencyKey)
            .where(tuple_(IdempotencyKey.user_id, IdempotencyKey.key).in_(pairs))
            .values(expires_at=IdempotencyKey.expires_at),
            {},
        )

    #: Idempotency records of a batch, each with its result, from parallel k_*
    #: arrays (an expired row with the same key may still be there: it is
    #: replaced). Its text is also a step of orders' WRITE_PAID_ORDERS.
    SAVE_KEYS = text(
        """
        INSERT INTO idempotency_keys (user_id, key, fingerprint, result, created_at, expires_at)
        SELECT k.user_id, k.key, k.fingerprint, k.result, CAST(:now AS timestamptz),
               CAST(:now AS timestamptz) + make_interval(secs => :ttl_s)
        FROM unnest(CAST(:k_users AS text[]), CAST(:k_keys AS text[]),
                    CAST(:k_fingerprints AS text[]), CAST(:k_results AS bytea[]))
             AS k (user_id, key, fingerprint, result)
        ON CONFLICT (user_id, key) DO UPDATE
        SET fingerprint = excluded.fingerprint, result = excluded.result,
            expires_at = excluded.expires_at, created_at = excluded.created_at"""
    )

    def save(self, keys: Sequence[NewKeyRecord], ttl_s: int, now: dt.datetime) -> None:
        """Store each key with its request's fingerprint and result, made at
        ``now`` and kept ``ttl_s``, in one statement."""
        self._execute(self.SAVE_KEYS, key_params(keys, ttl_s, now))

    def delete_expired(self, now: dt.datetime) -> int:
        result = self._execute(
            delete(IdempotencyKey)
            .where(IdempotencyKey.expires_at <= now)
            .returning(IdempotencyKey.key),
            {},
        )
        return len(result.all())


def key_params(keys: Sequence[NewKeyRecord], ttl_s: int, now: dt.datetime) -> dict[str, Any]:
    """The k_*, ttl_s and now parameters of SAVE_KEYS (and of its step in
    WRITE_PAID_ORDERS)."""
    return {
        "now": now,
        "k_users": [k.user_id for k in keys],
        "k_keys": [k.key for k in keys],
        "k_fingerprints": [k.fingerprint for k in keys],
        "k_results": [k.result for k in keys],
        "ttl_s": ttl_s,
    }
