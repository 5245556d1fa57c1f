"""The combiner's hand-off, without a database."""

import contextlib
import ctypes
import gc
import threading

from ecommerce.errors import ServiceBusy
from ecommerce.services.combining import Combiner, CombiningPolicy, RunAlone, _Pending


class Refused(Exception):
    pass


def test_a_refusal_reaches_its_request_without_a_reference_cycle():
    # A refused request's exception is raised in the request's thread; if its
    # traceback's frames held the exception, every refusal of a sold-out storm
    # would leave its frames to the cyclic collector (long full passes).
    combiner: Combiner[int, int] = Combiner(
        CombiningPolicy(),
        run_batch=lambda batch: [Refused(n) if n % 2 else n for n in batch],
        run_alone=lambda n: n,
        key_in_use=lambda: Refused("in use"),
    )
    assert combiner.submit(2) == 2  # the combining thread is running
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage
    try:
        for n in range(1, 40, 2):
            with contextlib.suppress(Refused):
                combiner.submit(n)
        gc.collect()
        # Other threads of the test session may leave garbage of their own.
        in_cycles = [o for o in gc.garbage if isinstance(o, Refused)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert in_cycles == []


def test_a_failed_batch_re_runs_its_requests_alone_only_within_the_bound():
    """Before the fix the re-runs had no bound: a batch whose buyers each took long
    alone kept the last of them (and the queue behind) waiting without limit."""
    now = [0.0]

    def slow_alone(n: int) -> int:
        now[0] += 1.0  # each re-run takes a second on this clock
        return n

    def failing_batch(batch):
        if len(batch) > 1:
            raise RuntimeError("the batch's statement failed")
        return list(batch)

    combiner: Combiner[int, int] = Combiner(
        CombiningPolicy(wait_s=2.5),
        run_batch=failing_batch,
        run_alone=slow_alone,
        clock=lambda: now[0],
    )
    pendings = [_Pending(n) for n in range(6)]
    combiner._run(pendings)  # one batch of six, as the combining thread runs it
    outcomes = [p.outcome for p in pendings]
    assert outcomes[:3] == [0, 1, 2]  # run alone while the bound lasted
    assert all(isinstance(o, ServiceBusy) for o in outcomes[3:]), outcomes  # then refused
    assert all(p.done.is_set() for p in pendings)


def test_a_combining_thread_that_stopped_is_replaced():
    combiner: Combiner[int, int] = Combiner(
        CombiningPolicy(), run_batch=lambda batch: list(batch), run_alone=lambda n: n
    )
    assert combiner.submit(1) == 1
    first = combiner._thread
    assert first is not None
    # Stop it for real: raise SystemExit inside it while it waits for work.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(first.ident), ctypes.py_object(SystemExit)
    )
    with combiner._lock:
        combiner._not_empty.notify()  # wake it so the exception is delivered
    first.join(10)
    assert not first.is_alive()
    assert combiner.submit(2) == 2  # answered by a new thread
    assert combiner._thread is not first and combiner._thread.is_alive()


def test_a_request_handed_back_runs_alone_in_its_own_thread():
    """A batch may hand a request back (RunAlone): it is run with run_alone in
    the thread that submitted it, not in the combining thread."""
    ran_in: list[str] = []

    def alone(n: int) -> int:
        ran_in.append(threading.current_thread().name)
        return -n

    combiner: Combiner[int, int] = Combiner(
        CombiningPolicy(),
        run_batch=lambda batch: [RunAlone() if n == 3 else n for n in batch],
        run_alone=alone,
        name="handing-back",
    )
    assert combiner.submit(2) == 2
    assert combiner.submit(3) == -3
    assert ran_in == [threading.current_thread().name]
