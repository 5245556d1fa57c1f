"""The shop's rules as pure functions over plain values: no database, no clock,
no Flask. The services read rows, call these, and write what they decide; the
tests in tests/unit (test_checkout_rules.py, test_add_rules.py) check them
without a database.

* :mod:`ecommerce.domain.rules`: an item's sale window and per-buyer limit;
* :mod:`ecommerce.domain.checkout`: why a buyer may not pay (in the order a
  buyer is told) and who of a batch of buyers gets what (arrival order, all or
  nothing per buyer);
* :mod:`ecommerce.domain.adds`: whether an add may stay in the cart, for a
  batch of adds in arrival order;
* :mod:`ecommerce.domain.queueing`: a hot item's waiting room: who is
  admitted, how many more may be, who the stock cannot reach, the pre-opening
  draw.
"""
