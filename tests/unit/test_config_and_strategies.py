import pytest

from ecommerce.config import Settings
from ecommerce.services.stock import (
    AtomicStrategy,
    ForUpdateStrategy,
    strategy_named,
)
from ecommerce.services.transactions import TransactionPolicy, backoff_delay


def test_settings_defaults_are_consistent():
    settings = Settings.from_env({})
    settings.validate()
    assert settings.database_url is None
    assert settings.port == 8080
    assert settings.stock_strategy == "for_update"
    assert settings.lock_timeout_ms < settings.statement_timeout_ms


def test_settings_from_environment():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@h/db",
            "PORT": "9000",
            "GUNICORN_THREADS": "8",
            "LOCK_TIMEOUT_MS": "100",
            "STOCK_STRATEGY": "atomic",
            "ALLOW_UNSAFE_STRATEGY": "yes",
        }
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.port == 9000
    # One per request thread, one for each combiner (pays; cart adds, cart reads).
    assert settings.pool_size == 11
    assert Settings.from_env({"GUNICORN_THREADS": "8", "PAY_COMBINING": "off"}).pool_size == 10
    alone = {"GUNICORN_THREADS": "8", "PAY_COMBINING": "off", "CART_COMBINING": "false"}
    assert Settings.from_env(alone).pool_size == 8
    assert Settings.from_env(alone).cart_combining is False
    assert settings.lock_timeout_ms == 100
    assert settings.stock_strategy == "atomic"
    assert settings.allow_unsafe_strategy is True


@pytest.mark.parametrize(
    "env",
    [{"PORT": "eighty"}, {"ALLOW_UNSAFE_STRATEGY": "maybe"}],
)
def test_settings_refuse_garbage(env):
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_lock_timeout_must_be_below_statement_timeout():
    settings = Settings.from_env({"LOCK_TIMEOUT_MS": "5000", "STATEMENT_TIMEOUT_MS": "5000"})
    with pytest.raises(ValueError, match="LOCK_TIMEOUT_MS"):
        settings.validate()


def test_strategies_by_name():
    assert isinstance(strategy_named("for_update"), ForUpdateStrategy)
    assert isinstance(strategy_named("atomic"), AtomicStrategy)
    with pytest.raises(ValueError, match="unknown"):
        strategy_named("optimistic")


def test_naive_strategy_needs_explicit_permission():
    with pytest.raises(ValueError, match="ALLOW_UNSAFE_STRATEGY"):
        strategy_named("naive")
    assert strategy_named("naive", allow_unsafe=True).safe is False


def test_backoff_is_bounded_and_jittered():
    policy = TransactionPolicy(backoff_base_s=0.01, backoff_cap_s=0.05)
    delays = [backoff_delay(attempt, policy) for attempt in range(10) for _ in range(20)]
    assert all(0 <= d <= 0.05 for d in delays)
    assert len(set(delays)) > 1


def test_plain_postgresql_urls_use_psycopg2():
    from ecommerce.db import normalize_database_url

    assert normalize_database_url("postgresql://postgres@127.0.0.1:5432/test") == (
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    )
    assert normalize_database_url("postgres://u:p%40ss@h/db").startswith(
        "postgresql+psycopg2://u:p%40ss@"
    )
    assert normalize_database_url("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    with pytest.raises(ValueError, match="PostgreSQL"):
        normalize_database_url("mysql+pymysql://u@h/shop")


def test_both_multi_host_url_forms_name_the_same_hosts():
    """libpq's form (what pg_autoctl prints) and SQLAlchemy's query form. Before,
    libpq's form failed: ValueError: invalid literal for int()."""
    from sqlalchemy import make_url

    from ecommerce.db import normalize_database_url

    libpq = normalize_database_url(
        "postgresql://shop:p%40ss@db-a:5432,db-b:5433/shop?target_session_attrs=read-write"
    )
    query = normalize_database_url(
        "postgresql://shop:p%40ss@/shop?host=db-a:5432&host=db-b:5433&target_session_attrs=read-write"
    )
    for url in (libpq, query):
        parsed = make_url(url)
        assert parsed.drivername == "postgresql+psycopg2"
        assert parsed.username == "shop" and parsed.password == "p@ss"
        assert parsed.database == "shop"
        assert parsed.query["host"] == ("db-a:5432", "db-b:5433")
        assert parsed.query["target_session_attrs"] == "read-write"
    assert make_url(normalize_database_url("postgresql://a,b/db")).query["host"] == ("a", "b")


def test_the_payment_provider_settings():
    from ecommerce.config import Settings

    assert Settings.from_env({}).payment_gateway == "instant"
    with_url = Settings.from_env({"PAYMENT_GATEWAY_URL": "http://127.0.0.1:8090"})
    assert with_url.payment_gateway == "http"
    with_url.validate()
    for env in (
        {"PAYMENT_GATEWAY": "http"},  # no URL
        {"PAYMENT_GATEWAY": "instant", "PAYMENT_GATEWAY_URL": "http://127.0.0.1:8090"},
        {"PAYMENT_GATEWAY": "paypal"},
        {"PAYMENT_GATEWAY_URL": "ftp://127.0.0.1"},
    ):
        with pytest.raises(ValueError):
            Settings.from_env(env).validate()
