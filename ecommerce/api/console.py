"""The sale-night console: a live page for the operator (admins only).

Sign-in: `flask console-link` prints a one-time URL; opening it exchanges the
link for a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) and no
token ever sits in a page or a log. Every action from the page sends the
session's CSRF token in ``X-CSRF-Token`` (403 and nothing changes without it).
Live numbers: ``GET /console/events``, Server-Sent Events, one snapshot a second
(ecommerce/services/console.py), each item's waiting room with it; the page
opens, closes and paces a room through ``POST /console/items/<id>/queue``,
which takes the admin API's room settings. A stream holds a request thread,
so each worker serves at most CONSOLE_MAX_STREAMS of them (beyond: 503 with
Retry-After), and a stream ends after STREAM_MAX_S (the page reconnects by
itself, as it does after a restart).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    redirect,
    render_template,
    request,
    session,
)
from flask.sessions import SecureCookieSessionInterface, SessionMixin

from ecommerce.api import current_shop, json_response, schemas, validation
from ecommerce.api.openapi import not_in_the_api
from ecommerce.api.render import console_json, item_json, room_json
from ecommerce.errors import Forbidden, ServiceBusy, ShopError, Unauthorized
from ecommerce.services import console, inventory, rooms

bp = Blueprint("console", __name__, url_prefix="/console")

CONSOLE_MAX_STREAMS = 4  # per worker
STREAM_MAX_S = 300
SESSION_TTL = dt.timedelta(hours=8)
CSRF_HEADER = "X-CSRF-Token"

_streams = threading.BoundedSemaphore(CONSOLE_MAX_STREAMS)


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed cookie session, Secure exactly when the request came over HTTPS.

    Only the console has a session (its cookie's path is /console): every other
    request gets Flask's null session, so the shop's API does not build a cookie
    signer per request.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path != bp.url_prefix and not request.path.startswith(f"{bp.url_prefix}/"):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def init_app(app: Flask) -> None:
    app.session_interface = ConsoleSessions()
    app.config.update(
        SESSION_COOKIE_NAME="shop_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/console",
        PERMANENT_SESSION_LIFETIME=SESSION_TTL,
    )


def _admin() -> str | None:
    return session.get("admin")


def _page(template: str, status: int = 200, **values: Any) -> Response:
    response = Response(render_template(template, **values), status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    )
    response.headers["Referrer-Policy"] = "no-referrer"  # the link's nonce stays here
    return response


@bp.get("/login")
@not_in_the_api
def login() -> Response:
    nonce = request.args.get("link", "")
    try:
        admin = console.redeem_link(current_shop(), nonce)
    except Unauthorized as refused:
        return _page("console_signin.html", 401, reason=refused.message)
    session.clear()
    session.permanent = True
    session["admin"] = admin
    session["csrf"] = secrets.token_urlsafe(24)
    return redirect("/console", 303)


@bp.get("")
@not_in_the_api
def page() -> Response:
    admin = _admin()
    if admin is None:
        return _page("console_signin.html", 401, reason=None)
    return _page("console.html", admin=admin, csrf=session["csrf"])


def _require_csrf() -> str:
    admin = _admin()
    if admin is None:
        raise Unauthorized("sign in to the console first (flask console-link)")
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent, session.get("csrf", "")):
        raise Forbidden("the CSRF token is missing or wrong")
    return admin


@bp.post("/logout")
@not_in_the_api
def logout() -> Response:
    _require_csrf()
    session.clear()
    return json_response({"signed_out": True})


@bp.get("/events")
@not_in_the_api
def events() -> Response:
    if _admin() is None:
        raise Unauthorized("sign in to the console first (flask console-link)")
    if not _streams.acquire(blocking=False):
        raise ServiceBusy(
            f"at most {CONSOLE_MAX_STREAMS} console streams per worker; retry", retry_after_s=5
        )
    shop = current_shop()  # the stream needs no request context: it reads the shop

    def stream() -> Iterator[str]:
        feed = console.Feed(shop)
        ends = time.monotonic() + STREAM_MAX_S
        yield "retry: 2000\n\n"
        while time.monotonic() < ends:
            try:
                data = json.dumps(console_json(feed.snapshot()), separators=(",", ":"))
                yield f"event: snapshot\ndata: {data}\n\n"
            except ShopError as trouble:  # the database is busy or away: say so, go on
                yield f"event: trouble\ndata: {json.dumps(trouble.message)}\n\n"
            time.sleep(1)

    response = Response(_Stream(stream(), _streams.release), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


class _Stream:
    """The event stream as the WSGI server sees it: its place among the worker's
    streams is given back when the server closes it — after the last event, when
    the browser goes away, or even if it never read a byte."""

    def __init__(self, events: Iterator[str], release: Callable[[], None]) -> None:
        self.events = events
        self.release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[str]:
        return self.events

    def close(self) -> None:
        self.events.close()  # type: ignore[attr-defined]
        if self.release is not None:
            self.release, release = None, self.release
            release()


@bp.post("/items/<id:item_id>/restock")
@not_in_the_api
def restock(item_id: int) -> Response:
    _require_csrf()
    quantity = validation.body(schemas.Restock, validation.json_object(request)).quantity
    return json_response(item_json(inventory.restock(current_shop(), item_id, Decimal(quantity))))


@bp.post("/items/<id:item_id>/sale")
@not_in_the_api
def open_or_close(item_id: int) -> Response:
    """{"open": true}: the sale opens now (no end); {"open": false}: it ends now."""
    _require_csrf()
    body = validation.json_object(request)
    if not isinstance(body.get("open"), bool):
        raise validation.InvalidRequest("open must be true or false")
    shop = current_shop()
    now = shop.clock()
    if body["open"]:
        changes: dict[str, Any] = {"sale_starts_at": now, "sale_ends_at": None}
    else:
        changes = {"sale_starts_at": None, "sale_ends_at": now}
    return json_response(item_json(inventory.change_item(shop, item_id, changes)))


@bp.post("/items/<id:item_id>")
@not_in_the_api
def change(item_id: int) -> Response:
    """Any of price and per_user_limit, as the admin API's PATCH takes them."""
    _require_csrf()
    changes = validation.item_changes(validation.json_object(request))
    unknown = set(changes) - {"price", "per_user_limit"}
    if unknown:
        raise validation.InvalidRequest(
            f"the console changes price and per_user_limit only, not {sorted(unknown)}"
        )
    return json_response(item_json(inventory.change_item(current_shop(), item_id, changes)))


@bp.post("/items/<id:item_id>/queue")
@not_in_the_api
def queue(item_id: int) -> Response:
    """Open, close or change the item's waiting room: the body of the admin
    API's PUT /admin/items/<id>/queue ({"open": ..., "mode", "rate_per_s",
    "max_admitted"}); answers the room as that API does."""
    _require_csrf()
    options = validation.room_options(validation.json_object(request))
    return json_response(room_json(rooms.configure_room(current_shop(), item_id, options)))
