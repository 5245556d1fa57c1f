"""The crowd's buyers: N people arriving within a few seconds for one hot item,
each on a connection of its own, doing what a real client does.

With the waiting room on, a buyer joins the line, polls as the answer says
(``poll_after_ms``), and once admitted adds one unit and pays with its
admission token; with it off, the buyer adds and pays straight away. Either
way the add and the pay carry Idempotency-Keys, and a 503 (after its Retry-After), a
connection error or a silent server (after REQUEST_TIMEOUT_S) is retried with
the same key: a client that gave up on an unknown outcome would be counting
"nothing happened" where something may have.

Each buyer's story is one :class:`Buyer`: when it arrived, when it got its
first answer (a place in the line, or sold out) and its final one (paid or
sold out), and what went wrong on the way. The crowd runs in a process of its
own (asyncio, no libraries) and reports the CPU it used.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import time
from dataclasses import dataclass, field

from ecommerce.flashsale.loadgen import in_child_process, parse_head, run_loop

#: A request with no answer after this long is given up and retried (a silent
#: server: the client cannot tell a lost request from a slow one).
REQUEST_TIMEOUT_S = 30.0
#: The longest a buyer waits before retrying a 503 or a connection error.
MAX_BACKOFF_S = 2.0
#: A connection idle this long is not used again (a new one is opened), as
#: browsers and HTTP client libraries do: the server may be closing it (the
#: shop's keep-alive is 5 s), and a request sent as it closes is lost.
IDLE_REUSE_S = 4.0

PAID, SOLD_OUT, NO_ANSWER = "paid", "sold_out", "no_answer"


@dataclass(frozen=True)
class CrowdPlan:
    host: str
    port: int
    item_id: int
    price: str  # the unit price, as a decimal string
    buyers: int
    arrival_s: float  # buyers arrive evenly within this many seconds
    user_prefix: str
    room: bool  # join the item's waiting room first
    give_up_s: float = 180.0  # a buyer without a final answer by then: no_answer


@dataclass
class Buyer:
    """One buyer's story (times are monotonic seconds)."""

    n: int  # arrival order, 0 first
    arrived: float = 0.0
    first_at: float | None = None  # a place in the line, or a final answer
    final_at: float | None = None
    admitted_at: float | None = None
    outcome: str = NO_ANSWER  # paid, sold_out, no_answer, or an error code
    requests: int = 0
    polls: int = 0
    connection_errors: int = 0  # refused, reset, closed mid-answer, silent
    busy: int = 0  # 503 with Retry-After
    server_errors: int = 0  # 5xx other than 503
    queue_required: int = 0  # 409: the add or pay needed an admission


@dataclass
class CrowdResult:
    buyers: list[Buyer] = field(default_factory=list)
    # Every request: (buyer, step, sent, answered or given up, status; 0: no answer).
    requests: list[tuple[int, str, float, float, int]] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    cpu_s: float = 0.0


class _Connection:
    """One buyer's HTTP/1.1 connection, opened again after it is lost."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used_at = 0.0

    async def request(
        self, method: str, path: str, body: dict | None, headers: dict[str, str]
    ) -> tuple[int, dict, float]:
        """(status, JSON body, Retry-After seconds)."""
        if self.writer is not None and time.monotonic() - self.used_at > IDLE_REUSE_S:
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: shop\r\n"
        for name, value in headers.items():
            head += f"{name}: {value}\r\n"
        data = json.dumps(body).encode() if body is not None else b""
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        answer = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        raw = await self.reader.readexactly(answer.length) if answer.length else b""
        self.used_at = time.monotonic()
        if answer.close:
            self.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return answer.status, parsed if isinstance(parsed, dict) else {}, answer.retry_after_s

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class _Shopper:
    """One buyer's client: the requests, retried as a well-behaved client does."""

    def __init__(
        self,
        plan: CrowdPlan,
        buyer: Buyer,
        give_up_at: float,
        log: list[tuple[int, str, float, float, int]],
    ) -> None:
        self.plan, self.buyer, self.give_up_at, self.log = plan, buyer, give_up_at, log
        self.user = f"{plan.user_prefix}{buyer.n}"
        self.conn = _Connection(plan.host, plan.port)

    async def call(
        self, step: str, method: str, path: str, body: dict | None = None, **headers: str
    ) -> tuple[int, dict] | None:
        """The request's first answer that is not a 503 or an error of the
        connection (those are retried); None when the buyer gives up."""
        b = self.buyer
        while time.monotonic() < self.give_up_at:
            b.requests += 1
            sent = time.monotonic()
            try:
                status, answer, retry_after = await asyncio.wait_for(
                    self.conn.request(method, path, body, headers), REQUEST_TIMEOUT_S
                )
                self.log.append((b.n, step, sent, time.monotonic(), status))
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                self.log.append((b.n, step, sent, time.monotonic(), 0))
                self.conn.close()
                b.connection_errors += 1
                await asyncio.sleep(random.uniform(0.5, 1.0) * MAX_BACKOFF_S)
                continue
            if status == 503:
                b.busy += 1
                await asyncio.sleep(min(max(retry_after, 0.1), MAX_BACKOFF_S))
                continue
            if status >= 500:
                b.server_errors += 1
                await asyncio.sleep(random.uniform(0.5, 1.0) * MAX_BACKOFF_S)
                continue
            return status, answer
        return None

    def end(self, outcome: str) -> None:
        now = time.monotonic()
        self.buyer.outcome = outcome
        self.buyer.final_at = now
        if self.buyer.first_at is None:
            self.buyer.first_at = now

    async def run(self) -> None:
        try:
            admission = await self.queue() if self.plan.room else ""
            if admission is not None:
                await self.buy(admission)
        finally:
            self.conn.close()

    async def queue(self) -> str | None:
        """Join the line and poll it until admitted: the admission token, or
        None when the buyer's story ended in the line (sold out, an error)."""
        path = f"/items/{self.plan.item_id}/queue/{self.user}"
        answered = await self.call("join", "POST", path)
        while True:
            if answered is None:
                return None
            status, place = answered
            if status != 200:
                self.end(_code(status, place))
                return None
            if self.buyer.first_at is None:
                self.buyer.first_at = time.monotonic()
            state = place.get("status")
            if state == "admitted":
                self.buyer.admitted_at = time.monotonic()
                return str(place["admission_token"])
            if state == "sold_out":
                self.end(SOLD_OUT)
                return None
            if state not in ("waiting", "before_draw"):  # lapsed, done: not for this client
                self.end(f"place_{state}")
                return None
            await asyncio.sleep(int(place.get("poll_after_ms") or 1000) / 1000)
            self.buyer.polls += 1
            token = {"X-Place-Token": place["place_token"]}
            answered = await self.call("poll", "GET", path, None, **token)

    async def buy(self, admission: str) -> None:
        token = {"X-Admission-Token": admission} if admission else {}
        add = {"item_id": self.plan.item_id, "quantity": 1}
        add_key = {"Idempotency-Key": f"{self.user}-add"}  # a retried add adds once
        answered = await self.call("add", "POST", f"/cart/{self.user}/add", add, **token, **add_key)
        if answered is None:
            return
        if answered[0] != 200:
            self.end(_outcome(*answered, self.buyer))
            return
        pay = {"amount": self.plan.price}
        key = {"Idempotency-Key": f"{self.user}-pay"}
        answered = await self.call("pay", "POST", f"/cart/{self.user}/pay", pay, **token, **key)
        if answered is not None:
            self.end(PAID if answered[0] in (201, 202) else _outcome(*answered, self.buyer))


def _code(status: int, answer: dict) -> str:
    return (answer.get("error") or {}).get("code") or f"http_{status}"


def _outcome(status: int, answer: dict, buyer: Buyer) -> str:
    code = _code(status, answer)
    if code == "insufficient_stock":
        return SOLD_OUT
    if code == "queue_required":
        buyer.queue_required += 1
    return code


async def _crowd(plan: CrowdPlan, result: CrowdResult) -> None:
    loop_start = time.monotonic()
    spacing = plan.arrival_s / max(1, plan.buyers - 1) if plan.buyers > 1 else 0.0
    give_up_at = loop_start + plan.give_up_s

    async def arrive(buyer: Buyer) -> None:
        delay = loop_start + buyer.n * spacing - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        buyer.arrived = time.monotonic()
        await _Shopper(plan, buyer, give_up_at, result.requests).run()

    result.buyers = [Buyer(n) for n in range(plan.buyers)]
    result.started = loop_start
    await asyncio.gather(*(arrive(b) for b in result.buyers))


def run_crowd(plan: CrowdPlan) -> CrowdResult:
    """The crowd in this process: every buyer's story, and the CPU it cost."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if plan.buyers + 100 > hard:  # else the crowd's own EMFILE would pass for the shop's errors
        raise ValueError(f"{plan.buyers} buyers need a socket each: the open-files limit is {hard}")
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = CrowdResult()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    run_loop(_crowd(plan, result))
    result.finished = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_s = usage.ru_utime + usage.ru_stime - cpu_before
    return result


def run_crowd_in_process(plan: CrowdPlan) -> CrowdResult:
    """The crowd in a child process (its own interpreter, counted apart)."""
    return in_child_process(run_crowd, plan)
