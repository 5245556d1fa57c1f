"""Own-cart authentication for HTTP requests.

With AUTH_REQUIRED on, every ``/cart/<user_id>/...`` and ``/users/<user_id>/...``
request needs a bearer token for that user (401 without a valid one, 403 for
another user's), and an order is only shown to its owner (404 otherwise, so
order ids reveal nothing). Tokens are made and verified by ecommerce/tokens.py.
"""

from __future__ import annotations

from flask import current_app, g, request

from ecommerce.config import Settings
from ecommerce.errors import Forbidden, Unauthorized
from ecommerce.tokens import Claims, read_token


def _settings() -> Settings:
    return current_app.extensions["settings"]


def current_subject() -> str | None:
    """The authenticated user of this request, or None when auth is off.

    Raises Unauthorized when auth is on and no valid bearer token was sent.
    """
    if not _settings().auth_required:
        return None
    if "auth_subject" not in g:
        claims = _claims()
        if claims.admin:
            raise Forbidden("an admin token does not act for a buyer")
        g.auth_subject = claims.subject
    return g.auth_subject


def require_admin() -> str:
    """The admin's name. Admin endpoints need an admin token whatever AUTH_REQUIRED
    says: 401 without a valid token, 403 with a buyer's."""
    claims = _claims()
    if not claims.admin:
        raise Forbidden("this endpoint needs an admin token (flask issue-token --admin NAME)")
    g.admin = claims.subject
    return claims.subject


def _claims() -> Claims:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an Authorization: Bearer token is required")
    now = current_app.extensions["shop"].clock().timestamp()
    return read_token(_settings().secret_key, token.strip(), now)


def require_user(user_id: str) -> None:
    subject = current_subject()
    if subject is not None and subject != user_id:
        raise Forbidden("this token does not belong to that user")
