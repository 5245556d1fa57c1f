"""The combiner's hand-off, without a database."""

import contextlib
import gc

from ecommerce.services.combining import Combiner, CombiningPolicy


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
