"""Own-cart authentication: signed bearer tokens whose subject is a user id.

Tokens are signed with SECRET_KEY by itsdangerous (which Flask already brings):
``{"sub": user_id, "exp": unix time}``. With AUTH_REQUIRED on, every
``/cart/<user_id>/...`` and ``/users/<user_id>/...`` request needs a token for
that user (401 without a valid one, 403 for another user's), and an order is
only shown to its owner (404 otherwise, so order ids reveal nothing).
"""

from __future__ import annotations

import time

from flask import current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

from ecommerce.config import Settings
from ecommerce.errors import Forbidden, Unauthorized

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


def _settings() -> Settings:
    return current_app.extensions["settings"]


def current_subject() -> str | None:
    """The authenticated user of this request, or None when auth is off.

    Raises Unauthorized when auth is on and no valid bearer token was sent.
    """
    if not _settings().auth_required:
        return None
    if "auth_subject" not in g:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("an Authorization: Bearer token is required")
        g.auth_subject = verify_token(_settings().secret_key, token.strip())
    return g.auth_subject


def require_user(user_id: str) -> None:
    subject = current_subject()
    if subject is not None and subject != user_id:
        raise Forbidden("this token does not belong to that user")
