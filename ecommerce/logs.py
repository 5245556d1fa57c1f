"""JSON logs: one object per line, for the app's request log and gunicorn's own
(ecommerce/gunicorn_conf.py gives gunicorn's logger this formatter).

A line carries ``time`` (UTC, RFC 3339), ``level``, ``logger``, ``message``, the
request id of the request being served (when there is one) and the fields a
caller passes as ``extra={"fields": {...}}``. Nothing here knows of Flask: the
HTTP layer sets :data:`request_id` for the duration of a request.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from typing import Any

#: The id of the request this thread is serving (None outside a request).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
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
        return json.dumps(line, default=str, separators=(",", ":"))


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
