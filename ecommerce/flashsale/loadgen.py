"""A lean HTTP/1.1 load generator for the sale: asyncio, keep-alive, no libraries.

Each of C connections runs buyers one after another: add one unit to the cart,
get the checkout quote, pay (mode "flow"); or only pay a cart prepared
beforehand (mode "pay", the hot-item measurement). It runs in a process of its
own and reports the CPU
it used, so a run can show that the load generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

ADD, CHECKOUT, PAY = 0, 1, 2
TRANSPORT_ERROR = 0  # the status recorded when no HTTP answer came back

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class LoadPlan:
    host: str
    port: int
    items: list[tuple[int, str]]  # (item id, unit price as a decimal string)
    buyers: int
    connections: int
    duration_s: float
    user_prefix: str
    # "flow": add -> checkout -> pay per buyer; "pay": every buyer's cart is
    # prepared, each request pays a different buyer.
    mode: str = "flow"
    keys: bool = False  # an Idempotency-Key on every pay


@dataclass
class LoadResult:
    # One record per request: (step, started, finished, status, error code).
    records: list[tuple[int, float, float, int, str]] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    cpu_s: float = 0.0

    @property
    def cpu_share(self) -> float:
        """CPU used by the load generator, as a share of one core."""
        wall = self.finished - self.started
        return self.cpu_s / wall if wall > 0 else 0.0


@dataclass(frozen=True)
class Head:
    status: int
    length: int  # Content-Length (0 when absent)
    close: bool  # Connection: close
    retry_after_s: float  # Retry-After in seconds (0 when absent)


def parse_head(raw: bytes) -> Head:
    """An HTTP/1.1 response's status line and the headers a client acts on."""
    length, close, retry_after = 0, False, 0.0
    for line in raw.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
        elif name == b"retry-after":
            retry_after = float(value)
    return Head(int(raw[9:12]), length, close, retry_after)


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes | None, key: str | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if key is not None:
            head += f"Idempotency-Key: {key}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        head = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        status, length, close = head.status, head.length, head.close
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# The shop's error bodies start {"error":{"code":"...": the code is read from
# the bytes, not by parsing the whole body (details name items, prices, stock):
# a sold-out storm is tens of thousands of refusals, and the load generator
# shares the machine's CPU with the server it measures.
_CODE_PREFIX = b'{"error":{"code":"'


def _error_code(status: int, body: bytes) -> str:
    if status < 400:
        return ""
    if body.startswith(_CODE_PREFIX):
        end = body.find(b'"', len(_CODE_PREFIX))
        if end > 0:
            return body[len(_CODE_PREFIX) : end].decode("ascii", "replace")
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "non_json_error"


async def _run(plan: LoadPlan, result: LoadResult) -> None:
    next_buyer = 0
    deadline = time.monotonic() + plan.duration_s
    records = result.records

    async def connection_loop() -> None:
        nonlocal next_buyer
        conn = _Connection(plan.host, plan.port)

        async def step(
            kind: int, method: str, path: str, body: bytes | None, key: str | None = None
        ) -> int:
            started = time.monotonic()
            try:
                status, data = await conn.request(method, path, body, key)
                code = _error_code(status, data)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                status, code = TRANSPORT_ERROR, "transport_error"
            records.append((kind, started, time.monotonic(), status, code))
            return status

        while next_buyer < plan.buyers and time.monotonic() < deadline:
            n = next_buyer
            next_buyer += 1
            user = f"{plan.user_prefix}{n}"
            item_id, price = plan.items[n % len(plan.items)]
            pay = f'{{"amount": "{price}"}}'.encode()
            key = f"{user}-pay" if plan.keys else None
            if plan.mode == "pay":
                await step(PAY, "POST", f"/cart/{user}/pay", pay, key)
                continue
            add = f'{{"item_id": {item_id}, "quantity": 1}}'.encode()
            if await step(ADD, "POST", f"/cart/{user}/add", add) != 200:
                continue
            await step(CHECKOUT, "GET", f"/cart/{user}/checkout", None)
            await step(PAY, "POST", f"/cart/{user}/pay", pay, key)
        conn.close()

    await asyncio.gather(*(connection_loop() for _ in range(plan.connections)))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop's event loop when it is installed (make install's bench extra):
    the load generator shares the machine with the shop it measures, and uvloop
    spends less CPU per request than asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def run_load(plan: LoadPlan) -> LoadResult:
    result = LoadResult()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    result.started = time.monotonic()
    run_loop(_run(plan, result))
    result.finished = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_s = usage.ru_utime + usage.ru_stime - cpu_before
    return result


def _child(run: Callable[[P], R], plan: P, conn: multiprocessing.connection.Connection) -> None:
    conn.send(run(plan))
    conn.close()


def in_child_process(run: Callable[[P], R], plan: P) -> R:
    """``run(plan)`` in a child process (its own interpreter, its own core if
    free, its CPU counted apart); ``run`` must be importable by name."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(run, plan, child), daemon=True)
    process.start()
    child.close()
    result = parent.recv()
    process.join()
    return result


def run_load_in_process(plan: LoadPlan) -> LoadResult:
    """Run the load in a child process."""
    return in_child_process(run_load, plan)
