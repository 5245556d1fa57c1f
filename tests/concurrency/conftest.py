from collections.abc import Callable

import pytest
from flask import Flask

from ecommerce.services import Shop

SAFE_STRATEGIES = ["for_update", "atomic"]


@pytest.fixture(params=SAFE_STRATEGIES)
def safe_strategy(request) -> str:
    """Every safe stock strategy must pass the concurrency tests that use this."""
    return request.param


@pytest.fixture
def storm_shop(make_app: Callable[..., Flask], committed) -> Callable[..., Shop]:
    """A shop with its own pool, large enough that every buyer thread holds a
    real connection of its own, on committed data."""

    def make(buyers: int, **overrides: object) -> Shop:
        overrides.setdefault("pool_size", buyers)
        overrides.setdefault("lock_timeout_ms", 20_000)
        overrides.setdefault("statement_timeout_ms", 30_000)
        return make_app(**overrides).extensions["shop"]

    return make


@pytest.fixture(params=[True, False], ids=["combined", "alone"])
def pay_combining(request) -> bool:
    """Every concurrency test that builds a shop runs with pays, adds and cart
    reads combined into batches (the default) and with one transaction each."""
    return request.param


@pytest.fixture
def make_app(make_app: Callable[..., Flask], pay_combining: bool) -> Callable[..., Flask]:
    def make(**overrides: object) -> Flask:
        overrides.setdefault("pay_combining", pay_combining)
        overrides.setdefault("cart_combining", pay_combining)
        return make_app(**overrides)

    return make
