"""When the simulator's negative control (the 12.12 read-then-write) proves that
the checks can fail, and when its row proves nothing."""

from ecommerce.flashsale.run import control_proves_the_checks


def _run(**books):
    clean = {"oversold_units": 0, "unaccounted_units": 0, "invariant_violations": [], "five_xx": 0}
    return clean | books


def test_a_control_that_oversold_proves_the_checks():
    assert control_proves_the_checks(_run(oversold_units=387))


def test_lost_updates_before_the_stock_ran_out_prove_the_checks_too():
    """Sold 1,228 units while the stock dropped by 21: not oversold yet (the
    stock never ran out in the row's seconds), but the books are broken."""
    lost = _run(
        unaccounted_units=1207,
        invariant_violations=["stock_not_conserved: item_id=1, unexplained=-1207.00"],
    )
    assert control_proves_the_checks(lost)


def test_a_control_with_clean_books_or_5xx_proves_nothing():
    assert not control_proves_the_checks(_run())
    assert not control_proves_the_checks(_run(oversold_units=387, five_xx=12))
