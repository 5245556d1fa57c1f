"""Bearer tokens whose subject is a user id (or an admin's name), signed with SECRET_KEY.

Signed by itsdangerous (which Flask already brings): ``{"sub": subject, "exp":
unix time}``, plus ``"adm": true`` for an admin token. `flask issue-token` makes
them; ecommerce/api/auth.py checks them on every request that needs one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from ecommerce.errors import Unauthorized

SALT = "ecommerce.auth.v1"
DEFAULT_TTL_S = 24 * 3600


def _serializer(secret_key: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=SALT)


@dataclass(frozen=True)
class Claims:
    subject: str
    admin: bool


def issue_token(
    secret_key: str,
    user_id: str,
    ttl_s: int = DEFAULT_TTL_S,
    *,
    admin: bool = False,
    now: float | None = None,
) -> str:
    """A token for ``user_id`` valid ``ttl_s`` from ``now`` (the clock's time)."""
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"sub": user_id, "exp": int(issued) + ttl_s}
    if admin:
        claims["adm"] = True
    return _serializer(secret_key).dumps(claims)


def verify_token(secret_key: str, token: str, now: float | None = None) -> str:
    """Return the token's subject, or raise Unauthorized."""
    return read_token(secret_key, token, now).subject


def read_token(secret_key: str, token: str, now: float | None = None) -> Claims:
    """The token's claims, or Unauthorized."""
    try:
        claims = _serializer(secret_key).loads(token)
    except BadSignature as exc:
        raise Unauthorized("the bearer token is not valid") from exc
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        raise Unauthorized("the bearer token is not valid")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= (time.time() if now is None else now):
        raise Unauthorized("the bearer token has expired")
    return Claims(claims["sub"], claims.get("adm") is True)
