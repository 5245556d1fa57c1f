"""The instances behind the load balancer, as HAProxy's statistics page tells
(CSV, `stats uri` with `;csv`): the console shows which are in service. One GET,
bounded, outside any transaction; nothing is shown when it does not answer."""

from __future__ import annotations

import csv
import http.client
import io
import urllib.request
from dataclasses import dataclass

TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Instance:
    backend: str
    name: str
    status: str  # HAProxy's: UP, DOWN, MAINT, "UP 1/2" while rising, ...
    sessions: int  # current

    @property
    def in_service(self) -> bool:
        return self.status.startswith("UP")


def parse(text: str) -> list[Instance]:
    """The servers of HAProxy's CSV statistics (its proxies' FRONTEND and
    BACKEND summary rows left out)."""
    lines = text.lstrip("# ").splitlines()
    instances = []
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        name = row.get("svname") or ""
        if name in ("", "FRONTEND", "BACKEND"):
            continue
        sessions = row.get("scur") or "0"
        instances.append(
            Instance(
                backend=row.get("pxname") or "",
                name=name,
                status=row.get("status") or "",
                sessions=int(sessions) if sessions.isdigit() else 0,
            )
        )
    return instances


def instances(url: str | None) -> list[Instance] | None:
    """The balancer's view, or None (not configured, or no answer in time)."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            return parse(answer.read().decode("utf-8", "replace"))
    except (OSError, ValueError, http.client.HTTPException, csv.Error):
        return None  # a balancer restarting, a page cut short: nothing shown this second
