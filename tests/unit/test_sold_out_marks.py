"""Sold-out marks and their epoch, without a database."""

from ecommerce.services.soldout import SoldOutMarks


def test_an_item_restocked_earlier_can_be_marked_sold_out_again():
    """A clear that finished before a batch took the epoch is older than the
    batch's read of the stock: the batch's mark stands. (Before the fix the
    mark was refused whenever the item's last clear was the newest one, so an
    item restocked once was never marked sold out again in that process.) A
    clear after the epoch was taken still wins."""
    marks = SoldOutMarks(recheck_s=60)
    marks.mark(7, "Hot", marks.epoch())
    marks.clear(7)  # a restock
    since = marks.epoch()  # a later batch reads the stock: 0 again
    marks.mark(7, "Hot", since)
    assert marks.any()
    since = marks.epoch()
    marks.clear(7)  # a restock after that batch's read
    marks.mark(7, "Hot", since)
    assert not marks.any()
