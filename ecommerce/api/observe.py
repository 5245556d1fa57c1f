"""Every request: an id, a JSON log line, and its metrics.

* ``X-Request-ID``: an incoming one (1-128 visible ASCII characters) is kept,
  anything else is replaced by a new one; it is echoed on every response and
  carried by every log line written while the request is served.
* One log line per request at info (debug for probes and scrapes): method,
  endpoint (the route template), status, duration, the user when known, the
  error code when refused. Never a header, a token or a body.
* ``shop_http_requests_total`` and ``shop_http_request_duration_seconds``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request

from ecommerce.api.ops import QUIET_ENDPOINTS
from ecommerce.observability import logs, metrics

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")

log = logging.getLogger("ecommerce.request")


def _new_request_id() -> str:
    """Unique without a system call per request: a random prefix per process
    (re-drawn after a fork) and a counter."""
    global _prefix, _prefix_pid
    if _prefix_pid != os.getpid():
        _prefix, _prefix_pid = uuid.uuid4().hex[:16], os.getpid()
    return f"{_prefix}{next(_counter):08x}"


_prefix, _prefix_pid = "", -1
_counter = itertools.count()


def _start(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # One lookup through each context proxy per request, not one per attribute.
    state = g._get_current_object()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    state.request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else _new_request_id()
    state.request_started = time.perf_counter()
    state.request_id_token = logs.request_id.set(state.request_id)


def _finish(response: Response) -> Response:
    state = g._get_current_object()
    req = request._get_current_object()  # type: ignore[attr-defined]
    started = state.get("request_started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    endpoint = req.url_rule.rule if req.url_rule is not None else "unmatched"
    response.headers[REQUEST_ID_HEADER] = state.get("request_id", "")
    metrics.count_request(req.method, endpoint, response.status_code, seconds)
    level = logging.DEBUG if req.endpoint in QUIET_ENDPOINTS else logging.INFO
    if log.isEnabledFor(level):
        fields: dict[str, Any] = {
            "method": req.method,
            "endpoint": endpoint,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 2),
        }
        user = state.get("auth_subject") or (req.view_args or {}).get("user_id")
        if user is not None:
            fields["user_id"] = user
        if "error_code" in state:
            fields["error_code"] = state.error_code
        log.log(level, "request", extra={"fields": fields})
    return response


def _forget(_: BaseException | None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        logs.request_id.reset(token)


def init_app(app: Flask) -> None:
    # An app-level URL value preprocessor runs before every blueprint's (so before
    # authentication) and costs a plain call, where the request_started signal
    # cost a dispatch through blinker on every request.
    app.url_value_preprocessor(_start)
    app.after_request(_finish)
    app.teardown_request(_forget)
