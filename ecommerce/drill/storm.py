"""The drill's buyers: well-behaved clients of a hot item, as a real storm of
them would be. Each connection runs buyers one after another: add one unit to
the cart, pay it; every request carries an Idempotency-Key, and a 503, a timeout
or a dropped connection is retried with the same key (after Retry-After, at most
a second), so an order the shop acknowledged is never paid twice and an answer
that never arrived is settled by the retry. Every answer is recorded with its
time; the acknowledged orders (201/202 with their ids) are what the drill
checks on the final primary."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

from ecommerce.flashsale.loadgen import parse_head

REQUEST_TIMEOUT_S = 10.0
TRANSPORT = 0  # the status recorded when no HTTP answer came back


@dataclass
class StormLog:
    # (answered at, step, status, error code, sent at); step is "add" or "pay"
    events: list[tuple[float, str, int, str, float]] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # user -> order id
    buyers_started: int = 0
    # Buyers whose add was answered 200 and whose pay then found the cart empty:
    # an acknowledged add that was lost.
    lost_adds: int = 0


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: dict, key: str
    ) -> tuple[int, dict, float]:
        """(status, JSON body, Retry-After seconds)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode()
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: {key}\r\n"
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
    ) -> None:
        """Every tenth buyer buys ``scarce_item_id`` instead (if given): an item
        that sells out while the fault runs, so overselling would show."""
        self.host, self.port = host, port
        self.item_id, self.price = item_id, price
        self.scarce_item_id = scarce_item_id
        self.connections, self.prefix = connections, prefix
        self.log = StormLog()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="drill-storm", daemon=True)

    def start(self) -> Storm:
        self._thread.start()
        return self

    def stop(self) -> StormLog:
        """Stop starting buyers; those in flight finish (their retries included)."""
        self._stopping = True
        self._thread.join(120)
        return self.log

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(self.connections)))

    async def _call(self, conn: _Connection, step: str, path: str, body: dict, key: str):
        """The request, retried with its key until it gets an answer that is not
        503; that answer. A buyer started is always finished: a client that gave
        up on an unknown outcome is exactly what the drill must not count as
        "nothing happened"."""
        while True:
            sent = time.time()
            try:
                status, answer, retry_after = await asyncio.wait_for(
                    conn.request("POST", path, body, key), REQUEST_TIMEOUT_S
                )
                code = (answer.get("error") or {}).get("code", "")
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                status, answer, retry_after, code = TRANSPORT, {}, 0.2, "transport"
            self.log.events.append((time.time(), step, status, code, sent))
            in_flight = status == 409 and code == "idempotency_key_in_use"
            if status not in (TRANSPORT, 503) and not in_flight:
                return status, answer
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
                status, _ = await self._call(
                    conn,
                    "add",
                    f"/cart/{user}/add",
                    {"item_id": item_id, "quantity": 1},
                    f"{user}-add",
                )
                if status != 200:
                    continue
                status, answer = await self._call(
                    conn, "pay", f"/cart/{user}/pay", {"amount": self.price}, f"{user}-pay"
                )
                if status in (201, 202):
                    self.log.acknowledged[user] = int(answer["order_id"])
                elif (answer.get("error") or {}).get("code") == "empty_cart":
                    self.log.lost_adds += 1
        finally:
            conn.close()
