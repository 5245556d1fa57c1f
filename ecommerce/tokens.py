"""Bearer tokens whose subject is a user id, signed with SECRET_KEY.

Signed by itsdangerous (which Flask already brings): ``{"sub": user_id, "exp":
unix time}``. `flask issue-token` makes them; ecommerce/api/auth.py checks them
on every request that needs one.
"""

from __future__ import annotations

import time

from itsdangerous import BadSignature, URLSafeSerializer

from ecommerce.errors import Unauthorized

SALT = "ecommerce.auth.v1"
DEFAULT_TTL_S = 24 * 3600


def _serializer(secret_key: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=SALT)


def issue_token(secret_key: str, user_id: str, ttl_s: int = DEFAULT_TTL_S) -> str:
    return _serializer(secret_key).dumps({"sub": user_id, "exp": int(time.time()) + ttl_s})


def verify_token(secret_key: str, token: str, now: float | None = None) -> str:
    """Return the token's subject, or raise Unauthorized."""
    try:
        claims = _serializer(secret_key).loads(token)
    except BadSignature as exc:
        raise Unauthorized("the bearer token is not valid") from exc
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        raise Unauthorized("the bearer token is not valid")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= (time.time() if now is None else now):
        raise Unauthorized("the bearer token has expired")
    return claims["sub"]
