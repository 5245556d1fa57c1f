"""The drill's waiting room: a phase whose storm goes through it opens a room
on each of its items with the admin API (through HAProxy, as an operator
would), waits until every instance refuses an add without an admission (each
sees the room: a well-behaved buyer then never meets ``queue_required``), and
closes the rooms after the books are checked."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from ecommerce.drill.procs import wait_for
from ecommerce.tokens import issue_token

#: Buyers admitted and not done at once, per room: fewer than the storm's
#: clients on the hot item, so a line forms; a handful on the scarce one
#: (30 units), so its line is told ``sold_out`` once the units cannot reach it.
HOT_MAX_ADMITTED = 48
SCARCE_MAX_ADMITTED = 4
#: A buyer who never pays: it probes whether an instance sees a room.
PROBE_USER = "drill-room-probe"


def _request(port: int, method: str, path: str, body: dict, headers: dict[str, str]):
    """(status, JSON body) of one request to 127.0.0.1:``port``."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as refused:
        raw = refused.read()
        try:
            return refused.code, json.loads(raw or b"{}")
        except ValueError:
            return refused.code, {}


class Rooms:
    """The rooms of one phase's items, opened through ``front_port``."""

    def __init__(self, secret_key: str, front_port: int, instance_ports: list[int]) -> None:
        self.token = issue_token(secret_key, "drill", 3600, admin=True, now=time.time())
        self.front_port, self.instance_ports = front_port, instance_ports

    def _configure(self, item_id: int, settings: dict) -> dict:
        status, room = _request(
            self.front_port,
            "PUT",
            f"/admin/items/{item_id}/queue",
            settings,
            {"Authorization": f"Bearer {self.token}"},
        )
        if status != 200:
            raise RuntimeError(f"the admin API answered {status} to {settings}: {room}")
        return room

    def open(self, rooms: dict[int, int]) -> None:
        """Open a room on each item ({item: max_admitted}); returns once every
        instance refuses an add of each without an admission."""
        for item_id, max_admitted in rooms.items():
            self._configure(item_id, {"open": True, "max_admitted": max_admitted})
        for item_id in rooms:
            wait_for(
                f"every instance to see the room of item {item_id}",
                lambda item_id=item_id: self._seen_everywhere(item_id),
                10,
                poll_s=0.05,
            )

    def _seen_everywhere(self, item_id: int) -> bool:
        for port in self.instance_ports:
            _, answer = _request(
                port, "POST", f"/cart/{PROBE_USER}/add", {"item_id": item_id, "quantity": 1}, {}
            )
            if (answer.get("error") or {}).get("code") != "queue_required":
                return False
        return True

    def close(self, item_ids: list[int]) -> None:
        for item_id in item_ids:
            self._configure(item_id, {"open": False})
