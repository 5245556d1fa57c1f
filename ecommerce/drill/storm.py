"""The drill's buyers: well-behaved clients of a hot item, as a real storm of
them would be. Each connection runs buyers one after another: add one unit to
the cart, pay it; every add and pay carries an Idempotency-Key, and a 503, a
timeout or a dropped connection is retried with the same key (after
Retry-After, at most a second), so an order the shop acknowledged is never paid
twice and an answer that never arrived is settled by the retry. Every answer is
recorded with its time; the acknowledged orders (201/202 with their ids) are
what the drill checks on the final primary.

In room mode (the item behind a waiting room) each buyer first joins the
item's line and polls its place as told (``poll_after_ms``, at most a second),
retrying a 503 or no answer as above; once admitted, it adds and pays with its
admission token, and gives the place back (``DELETE``) if the add or the pay
is refused. A place told ``sold_out`` or ``lapsed`` ends the buyer; what the
room answered is counted in :attr:`StormLog.room`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from ecommerce.flashsale.loadgen import parse_head
from ecommerce.limits import ADMISSION_TOKEN_HEADER, IDEMPOTENCY_HEADER, PLACE_TOKEN_HEADER

REQUEST_TIMEOUT_S = 10.0
TRANSPORT = 0  # the status recorded when no HTTP answer came back
#: A place that waits longer than this in the line gives up (counted "gave up":
#: the room stopped moving, which the drill reports as broken).
PLACE_WAIT_BOUND_S = 90.0
#: The place statuses that mean "poll again" (docs/API.md).
WAITING = ("waiting", "before_draw")


@dataclass
class StormLog:
    # (answered at, step, status, error code, sent at); step is "add" or "pay"
    # (and "join" or "poll" in room mode)
    events: list[tuple[float, str, int, str, float]] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # user -> order id
    buyers_started: int = 0
    # Buyers whose add was answered 200 and whose pay then found the cart empty:
    # an acknowledged add that was lost.
    lost_adds: int = 0
    # Room mode, per buyer: "joined" (a place), "waited" (told to wait at the
    # join), "admitted", "sold_out", "lapsed", "queue_required" (an add or pay
    # refused for want of an admission), "gave up" (waited past
    # PLACE_WAIT_BOUND_S), "join refused ..." (no place: 404)...
    room: Counter[str] = field(default_factory=Counter)
    # Room mode: the buyers admitted (user -> item), to check paid ⊆ admitted.
    admitted: dict[str, int] = field(default_factory=dict)


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: dict | None, headers: dict[str, str]
    ) -> tuple[int, dict, float]:
        """(status, JSON body, Retry-After seconds)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode() if body is not None else b""
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: shop\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        raw = await self.reader.readexactly(head.length) if head.length else b""
        if head.close:
            self.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return head.status, parsed if isinstance(parsed, dict) else {}, head.retry_after_s

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def error_code(answer: dict) -> str:
    error = answer.get("error")
    return str(error.get("code", "")) if isinstance(error, dict) else ""


def poll_delay_s(place: dict, retry_after_s: float) -> float:
    """When to poll a waiting place again: its ``poll_after_ms`` (else the
    answer's Retry-After), at least 50 ms, at most a second."""
    after_ms = place.get("poll_after_ms")
    wait = after_ms / 1000 if isinstance(after_ms, int | float) else retry_after_s
    return min(max(wait, 0.05), 1.0)


class Storm:
    """``connections`` clients buying one unit each of ``item_id`` through
    ``host:port``, until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        item_id: int,
        price: str,
        connections: int,
        prefix: str,
        scarce_item_id: int | None = None,
        room: bool = False,
    ) -> None:
        """Every tenth buyer buys ``scarce_item_id`` instead (if given): an item
        that sells out while the fault runs, so overselling would show.
        ``room``: both items are behind open waiting rooms; every buyer joins
        the line of the item it buys and waits for its turn first."""
        self.host, self.port = host, port
        self.item_id, self.price = item_id, price
        self.scarce_item_id = scarce_item_id
        self.connections, self.prefix = connections, prefix
        self.room = room
        self.log = StormLog()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="drill-storm", daemon=True)

    def start(self) -> Storm:
        self._thread.start()
        return self

    def stop(self) -> StormLog:
        """Stop starting buyers; those in flight finish (their retries included)."""
        self._stopping = True
        self._thread.join(120 + PLACE_WAIT_BOUND_S)
        return self.log

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(self.connections)))

    async def _call(
        self,
        conn: _Connection,
        step: str,
        path: str,
        body: dict | None,
        headers: dict[str, str],
        method: str = "POST",
    ) -> tuple[int, dict, float]:
        """The request, retried (with its key, if it has one) until it gets an
        answer that is not 503; that answer and its Retry-After. A buyer
        started is always finished: a client that gave up on an unknown outcome
        is exactly what the drill must not count as "nothing happened"."""
        while True:
            sent = time.time()
            try:
                status, answer, retry_after = await asyncio.wait_for(
                    conn.request(method, path, body, headers), REQUEST_TIMEOUT_S
                )
                code = error_code(answer)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                status, answer, retry_after, code = TRANSPORT, {}, 0.2, "transport"
            self.log.events.append((time.time(), step, status, code, sent))
            in_flight = status == 409 and code == "idempotency_key_in_use"
            if status not in (TRANSPORT, 503) and not in_flight:
                return status, answer, retry_after
            await asyncio.sleep(min(max(retry_after, 0.1), 1.0))

    async def _client(self) -> None:
        conn = _Connection(self.host, self.port)
        try:
            while not self._stopping:
                n = self.log.buyers_started
                self.log.buyers_started += 1
                user = f"{self.prefix}{n}"
                scarce = self.scarce_item_id is not None and n % 10 == 0
                item_id = self.scarce_item_id if scarce else self.item_id
                assert item_id is not None
                await self._buy(conn, user, item_id)
        finally:
            conn.close()

    async def _buy(self, conn: _Connection, user: str, item_id: int) -> None:
        admission: dict[str, str] = {}
        if self.room:
            token = await self._turn(conn, user, item_id)
            if token is None:
                return
            admission = {ADMISSION_TOKEN_HEADER: token}
        status, answer, _ = await self._call(
            conn,
            "add",
            f"/cart/{user}/add",
            {"item_id": item_id, "quantity": 1},
            {IDEMPOTENCY_HEADER: f"{user}-add", **admission},
        )
        if status != 200:
            await self._refused(conn, user, item_id, answer)
            return
        status, answer, _ = await self._call(
            conn,
            "pay",
            f"/cart/{user}/pay",
            {"amount": self.price},
            {IDEMPOTENCY_HEADER: f"{user}-pay", **admission},
        )
        if status in (201, 202):
            self.log.acknowledged[user] = int(answer["order_id"])
            return
        if error_code(answer) == "empty_cart":
            self.log.lost_adds += 1
        await self._refused(conn, user, item_id, answer)

    async def _refused(self, conn: _Connection, user: str, item_id: int, answer: dict) -> None:
        """An add or a pay refused. In room mode the buyer, admitted and now not
        buying, gives its place back: the next buyer is let in now, not once
        the admission lapses."""
        if error_code(answer) == "queue_required":
            self.log.room["queue_required"] += 1
        if self.room:
            status, _, _ = await self._call(
                conn, "leave", f"/items/{item_id}/queue/{user}", None, {}, method="DELETE"
            )
            self.log.room[f"left {status}"] += 1

    async def _turn(self, conn: _Connection, user: str, item_id: int) -> str | None:
        """Join the item's line and poll the place as told until it is the
        buyer's turn: the admission token; None when the place ends otherwise
        (sold out, lapsed, refused, or waited past PLACE_WAIT_BOUND_S)."""
        path = f"/items/{item_id}/queue/{user}"
        status, place, retry_after = await self._call(conn, "join", path, None, {})
        if status != 200:
            self.log.room[f"join refused {status} {error_code(place)}".strip()] += 1
            return None
        self.log.room["joined"] += 1
        if place.get("status") in WAITING:
            self.log.room["waited"] += 1  # the line was in front of it
        deadline = time.monotonic() + PLACE_WAIT_BOUND_S
        token = str(place.get("place_token", ""))
        while place.get("status") in WAITING:
            if time.monotonic() > deadline:
                self.log.room["gave up"] += 1
                return None
            await asyncio.sleep(poll_delay_s(place, retry_after))
            status, place, retry_after = await self._call(
                conn, "poll", path, None, {PLACE_TOKEN_HEADER: token}, method="GET"
            )
            if status != 200:
                self.log.room[f"poll refused {status} {error_code(place)}".strip()] += 1
                return None
            token = str(place.get("place_token") or token)  # keep the newest
        state = str(place.get("status"))
        self.log.room[state] += 1
        if state != "admitted" or not place.get("admission_token"):
            return None
        self.log.admitted[user] = item_id
        return str(place["admission_token"])
