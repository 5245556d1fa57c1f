"""Bearer tokens whose subject is a user id (or an admin's name), signed with SECRET_KEY.

Signed by itsdangerous (which Flask already brings): ``{"sub": subject, "exp":
unix time}``, plus ``"adm": true`` for an admin token. `flask issue-token` makes
them; ecommerce/api/auth.py checks them on every request that needs one.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadData, BadSignature, URLSafeSerializer

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
    now: float,
) -> str:
    """A token for ``user_id`` valid ``ttl_s`` from ``now`` (the shop's clock,
    as a Unix time)."""
    claims: dict[str, object] = {"sub": user_id, "exp": int(now) + ttl_s}
    if admin:
        claims["adm"] = True
    return _serializer(secret_key).dumps(claims)


def read_token(secret_key: str, token: str, now: float) -> Claims:
    """The token's claims, or Unauthorized (expired at ``now``, the shop's clock
    as a Unix time)."""
    try:
        claims = _serializer(secret_key).loads(token)
    except BadSignature as exc:
        raise Unauthorized("the bearer token is not valid") from exc
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        raise Unauthorized("the bearer token is not valid")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now:
        raise Unauthorized("the bearer token has expired")
    return Claims(claims["sub"], claims.get("adm") is True)


# --- The waiting room's tokens (ecommerce/services/rooms/) -----------------------
#
# Each kind has a salt of its own, so no token of one kind (a bearer token
# included) is ever read as another.

PLACE_SALT = "ecommerce.queue.place.v1"
ADMISSION_SALT = "ecommerce.queue.admission.v1"


class BadQueueToken(Exception):
    """A place or admission token that is forged, malformed or expired."""


@dataclass(frozen=True)
class PlaceClaims:
    """A place in an item's line: its arrival number, and whether that number
    is final (a place that joined a random room before its draw is dealt a new
    one)."""

    item_id: int
    user_id: str
    seq: int
    final: bool


@dataclass(frozen=True)
class AdmissionClaims:
    item_id: int
    user_id: str
    seq: int
    expires: int  # unix time


def issue_place_token(secret_key: str, place: PlaceClaims) -> str:
    claims = {"i": place.item_id, "u": place.user_id, "s": place.seq, "f": place.final}
    return URLSafeSerializer(secret_key, salt=PLACE_SALT).dumps(claims)


def read_place_token(secret_key: str, token: str) -> PlaceClaims:
    claims = _load(secret_key, PLACE_SALT, token)
    item, user, seq, final = (claims.get(k) for k in ("i", "u", "s", "f"))
    if not (_an_int(item) and isinstance(user, str) and _an_int(seq) and final in (True, False)):
        raise BadQueueToken("the place token is not valid")
    return PlaceClaims(item, user, seq, final)


def issue_admission_token(secret_key: str, admission: AdmissionClaims) -> str:
    claims = {
        "i": admission.item_id,
        "u": admission.user_id,
        "s": admission.seq,
        "exp": admission.expires,
    }
    return URLSafeSerializer(secret_key, salt=ADMISSION_SALT).dumps(claims)


def read_admission_token(secret_key: str, token: str, now: float) -> AdmissionClaims:
    """The admission's claims, or BadQueueToken (forged, malformed, expired at ``now``)."""
    claims = _load(secret_key, ADMISSION_SALT, token)
    item, user, seq, exp = (claims.get(k) for k in ("i", "u", "s", "exp"))
    if not (_an_int(item) and isinstance(user, str) and _an_int(seq) and _an_int(exp)):
        raise BadQueueToken("the admission token is not valid")
    if exp <= now:
        raise BadQueueToken("the admission token has expired")
    return AdmissionClaims(item, user, seq, exp)


def _load(secret_key: str, salt: str, token: str) -> dict:
    try:
        claims = URLSafeSerializer(secret_key, salt=salt).loads(token)
    except (BadData, UnicodeError, ValueError) as exc:
        raise BadQueueToken("the token is not valid") from exc
    if not isinstance(claims, dict):
        raise BadQueueToken("the token is not valid")
    return claims


def _an_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
