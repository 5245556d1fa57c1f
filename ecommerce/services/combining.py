"""Combining concurrent requests into one batch, run by one thread per process.

A hot item's row is held until its transaction's COMMIT is flushed, so one
transaction per buyer caps a hot item near 1 / commit latency, whatever the
language. :class:`Combiner` lifts the cap: request threads queue their request
and wait; a dedicated combining thread takes *whatever is queued* when the
previous batch finishes (up to ``batch_max``), runs it as one batch, and hands
each waiting thread its own outcome. Nothing waits for a timer: a lone request
is a batch of one and runs at once; under a storm, batches grow by themselves
to the rate at which requests arrive during one batch.

Bounds (house rule 5): a full queue is refused at once, and a request still in
the queue after ``wait_s`` is taken out and refused (ServiceBusy: 503 with
Retry-After); nothing happened for it. A request already in a running batch
waits for that batch, which the database bounds (lock and statement timeouts).

The thread is started lazily in the process that submits, so under gunicorn it
belongs to the worker, created after the fork (house rule 7); a forked child
that inherited a combiner builds its own.

This module knows nothing of the shop: the pay use case gives it ``run_batch``
and ``run_alone`` (ecommerce/services/payment.py), and so do the cart's adds
and reads (ecommerce/services/cart.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ecommerce.errors import ServiceBusy

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Out = TypeVar("Out")


@dataclass(frozen=True)
class CombiningPolicy:
    batch_max: int = 64  # requests in one batch at most
    queue_max: int = 1024  # requests waiting at most; beyond it, 503 at once
    wait_s: float = 3.0  # longest wait in the queue before 503
    retry_after_s: int = 1


def value_of(outcome: Out | BaseException) -> Out:
    """A batch's outcome for one request: its value, or its exception raised.
    Raised without a reference cycle (the traceback holds this frame, which
    would hold the exception); pass the outcome straight in, so that no frame of
    the caller holds it either."""
    if isinstance(outcome, BaseException):
        try:
            raise outcome
        finally:
            del outcome
    return outcome


class RunAlone(Exception):
    """A batch's outcome for a request it hands back: the request is run alone,
    with ``run_alone``, in the thread that submitted it (it would have to wait
    for something the batch's other requests must not wait for)."""


@dataclass(eq=False)
class _Pending(Generic[Req, Out]):
    request: Req
    done: threading.Event = field(default_factory=threading.Event)
    taken: bool = False
    outcome: Out | BaseException | None = None

    def take(self) -> Out | BaseException:
        """The outcome, handed over: this request no longer holds it."""
        outcome, self.outcome = self.outcome, None
        return outcome  # type: ignore[return-value]


class Combiner(Generic[Req, Out]):
    def __init__(
        self,
        policy: CombiningPolicy,
        run_batch: Callable[[Sequence[Req]], list[Out | BaseException]],
        run_alone: Callable[[Req], Out],
        key_in_use: Callable[[], Exception] | None = None,
        name: str = "combiner",
        clock: Callable[[], float] = time.monotonic,
        thread_context: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        """``run_batch`` returns one outcome (a value or an exception) per request,
        in order; if it raises ServiceBusy every request gets that answer, and if
        it raises anything else each request is re-run alone with ``run_alone``, as
        long as ``policy.wait_s`` has not passed since the failure (then: busy).
        ``key_in_use`` is raised for a request whose key is already in flight
        (a combiner without it takes no keys). The combining thread runs every
        batch inside one ``thread_context()`` (the shop's: a database connection
        of the thread's own)."""
        self.policy = policy
        self.run_batch = run_batch
        self.run_alone = run_alone
        self.key_in_use = key_in_use
        self.name = name
        self.clock = clock
        self.thread_context = thread_context
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._queue: deque[_Pending[Req, Out]] = deque()
        self._thread: threading.Thread | None = None
        self._keys_in_flight: set[Hashable] = set()
        self._stopping = False

    @property
    def waiting(self) -> int:
        """Requests waiting in the queue now (not the batch being run)."""
        return len(self._queue)

    def stop(self, timeout: float = 10.0) -> None:
        """Let the combining thread finish the queue, leave its thread context
        (the shop's: gives its connection back) and end; a later request starts
        a new one."""
        with self._lock:
            thread = self._thread
            if thread is None or self._pid != os.getpid():
                return
            self._stopping = True
            self._not_empty.notify_all()
        thread.join(timeout)

    def _busy(self, message: str) -> ServiceBusy:
        return ServiceBusy(message, retry_after_s=self.policy.retry_after_s)

    def submit(self, request: Req, key: Hashable | None = None) -> Out:
        """Queue ``request``, wait for its batch, return its outcome (or raise it).

        At most one request per ``key`` is in flight (queued or in a batch): a
        second one is refused with ``key_in_use`` at once, so one batch never
        holds the same key twice.
        """
        if self._pid != os.getpid():
            self._reset()  # inherited through fork: the parent's thread is not ours
        if key is None:
            return self._submit(request)
        assert self.key_in_use is not None, f"{self.name} takes no keys"
        with self._lock:
            if key in self._keys_in_flight:
                raise self.key_in_use()
            self._keys_in_flight.add(key)
        try:
            return self._submit(request)
        finally:
            with self._lock:
                self._keys_in_flight.discard(key)

    def _submit(self, request: Req) -> Out:
        pending: _Pending[Req, Out] = _Pending(request)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                if self._thread is not None:  # it stopped: a new one serves the queue
                    log.error("%s: the combining thread had stopped; starting a new one", self.name)
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            if len(self._queue) >= self.policy.queue_max:
                raise self._busy("the shop is busy, please retry")
            self._queue.append(pending)
            self._not_empty.notify()
        if not pending.done.wait(self.policy.wait_s):
            with self._lock:
                if not pending.taken:
                    self._queue.remove(pending)
                    raise self._busy("the shop is busy, please retry")
            pending.done.wait()  # in a running batch: the database bounds it
        if isinstance(pending.outcome, RunAlone):
            pending.take()
            return self.run_alone(request)  # handed back: its wait is its own
        # Raised without a reference cycle (value_of): a refusal storm would
        # otherwise leave every request's frames for the cyclic collector, whose
        # full passes stall a worker.
        return value_of(pending.take())

    def _loop(self) -> None:
        with self.thread_context():
            self._serve()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    if self._stopping:
                        self._stopping = False
                        self._thread = None
                        return
                    self._not_empty.wait()
                batch = []
                while self._queue and len(batch) < self.policy.batch_max:
                    pending = self._queue.popleft()
                    pending.taken = True
                    batch.append(pending)
            try:
                self._run(batch)
            except BaseException:  # never leave a waiting request without an answer
                log.exception("%s: the combining thread failed a batch", self.name)
                for pending in batch:
                    if not pending.done.is_set():
                        pending.outcome = self._busy("the shop is busy, please retry")
                        pending.done.set()

    def _run(self, batch: list[_Pending[Req, Out]]) -> None:
        requests = [p.request for p in batch]
        outcomes: list[Out | BaseException]
        try:
            outcomes = self.run_batch(requests)
        except ServiceBusy as busy:
            outcomes = [ServiceBusy(busy.message, retry_after_s=busy.retry_after_s) for _ in batch]
        except Exception:
            # One buyer can never fail another: each is re-run on its own, within
            # the queue's bound; a request past it is refused busy (503), with
            # nothing done for it (each re-run is a whole transaction or nothing).
            log.exception("%s: a batch of %d failed; running each alone", self.name, len(batch))
            deadline = self.clock() + self.policy.wait_s
            outcomes = [
                self._alone(r)
                if self.clock() < deadline
                else self._busy("the shop is busy, please retry")
                for r in requests
            ]
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending.outcome = outcome
            pending.done.set()

    def _alone(self, request: Req) -> Out | BaseException:
        try:
            return self.run_alone(request)
        except Exception as error:
            return error
