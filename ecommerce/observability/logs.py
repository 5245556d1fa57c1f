"""JSON logs: one object per line, for the app's request log and gunicorn's own
(ecommerce/gunicorn_conf.py gives gunicorn's logger this formatter).

A line carries ``time`` (UTC, RFC 3339), ``level``, ``logger``, ``message``, the
request id of the request being served (when there is one) and the fields a
caller passes as ``extra={"fields": {...}}``. Nothing here knows of Flask: the
HTTP layer sets :data:`request_id` for the duration of a request.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

import orjson

#: The id of the request this thread is serving (None outside a request).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            line["request_id"] = current
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # orjson: a tenth of the standard library's encoder per line; anything it
        # cannot encode is written as its str(), as json.dumps(default=str) did.
        try:
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # an integer past 64 bits, a lone surrogate: as before
            return json.dumps(line, default=str, separators=(",", ":"))


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def _rfc3339(created: float) -> str:
    """``created`` in UTC to the millisecond, as datetime.isoformat writes it
    ("2026-12-12T00:00:00.123+00:00"); the date and time are formatted once a second."""
    global _second
    second = int(created)
    micros = round((created - second) * 1e6)  # as datetime.fromtimestamp rounds
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached = _second  # read once: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{micros // 1000:03d}+00:00"


def configure(level: str) -> None:
    """Send the root logger's records to stderr as JSON at ``level``, unless a
    JSON handler is already there (gunicorn's logconfig_dict installs one)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    # Alembic announces its plugins at info whenever its scripts are read.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
