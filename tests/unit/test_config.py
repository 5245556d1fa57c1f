"""Settings.from_env: the one parser of the environment (docs/CONFIGURATION.md),
and the gunicorn config that takes its values from it."""

import ast
import importlib
import inspect
import re

import pytest

from ecommerce import config
from ecommerce.config import PROJECT_ROOT, Settings

# --- the combiners' bounds
from ecommerce.services.transactions import TransactionPolicy, backoff_delay


def test_the_combining_bounds_default_and_read_their_names():
    settings = Settings.from_env({})
    assert (settings.combining_batch_max, settings.combining_queue_max) == (64, 1024)
    assert settings.combining_queue_wait_ms == 3000
    settings = Settings.from_env(
        {
            "COMBINING_BATCH_MAX": "8",
            "COMBINING_QUEUE_MAX": "100",
            "COMBINING_QUEUE_WAIT_MS": "250",
        }
    )
    assert (settings.combining_batch_max, settings.combining_queue_max) == (8, 100)
    assert settings.combining_queue_wait_ms == 250
    settings.validate()


def test_a_bad_combining_bound_is_refused_by_name():
    with pytest.raises(ValueError, match="COMBINING_QUEUE_MAX must be an integer"):
        Settings.from_env({"COMBINING_QUEUE_MAX": "many"})
    with pytest.raises(ValueError, match=r"^COMBINING_BATCH_MAX must be positive"):
        Settings.from_env({"COMBINING_BATCH_MAX": "0"}).validate()
    with pytest.raises(ValueError, match=r"^COMBINING_QUEUE_WAIT_MS must be positive"):
        Settings.from_env({"COMBINING_QUEUE_WAIT_MS": "0"}).validate()


# --- the payment gateway, derived from its URL

URL = "http://127.0.0.1:8090"


def test_the_url_alone_chooses_the_gateway():
    assert Settings.from_env({}).payment_gateway == "instant"
    settings = Settings.from_env({"PAYMENT_GATEWAY_URL": URL})
    settings.validate()
    assert (settings.payment_gateway, settings.payment_gateway_url) == ("http", URL)


def test_the_url_must_be_http():
    with pytest.raises(ValueError, match="PAYMENT_GATEWAY_URL must be an http"):
        Settings.from_env({"PAYMENT_GATEWAY_URL": "ftp://127.0.0.1"}).validate()


def test_settings_made_in_code_derive_the_gateway_too():
    assert Settings(payment_gateway_url=URL).payment_gateway == "http"
    assert Settings().payment_gateway == "instant"


# --- the gunicorn server's settings


def test_the_gunicorn_settings_default():
    settings = Settings.from_env({})
    settings.validate_server()
    assert settings.bind == "0.0.0.0:8080"
    assert settings.worker_class == "gevent"
    assert settings.workers >= 1
    assert (settings.threads, settings.worker_connections) == (32, 1000)
    assert (settings.worker_timeout_s, settings.graceful_timeout_s) == (30, 20)
    assert settings.reuse_port is True
    assert settings.metrics_dir is None
    # The pool: one connection per thread, plus one per combiner.
    assert settings.pool_size == 36


def test_the_gunicorn_settings_from_the_environment():
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "WEB_CONCURRENCY": "3",
            "GUNICORN_WORKER_CLASS": "gthread",
            "GUNICORN_THREADS": "8",
            "GUNICORN_WORKER_CONNECTIONS": "50",
            "GUNICORN_TIMEOUT": "40",
            "GUNICORN_GRACEFUL_TIMEOUT": "25",
            "GUNICORN_REUSE_PORT": "false",
            "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics",
        }
    )
    settings.validate_server()
    assert settings.bind == "0.0.0.0:9000"
    assert (settings.workers, settings.worker_class, settings.threads) == (3, "gthread", 8)
    assert settings.worker_connections == 50
    assert (settings.worker_timeout_s, settings.graceful_timeout_s) == (40, 25)
    assert settings.reuse_port is False
    assert settings.metrics_dir == "/tmp/metrics"
    assert settings.pool_size == 12  # GUNICORN_THREADS, parsed once, sizes the pool
    bound = Settings.from_env({"PORT": "9000", "GUNICORN_BIND": "127.0.0.1:7000"})
    assert bound.bind == "127.0.0.1:7000"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GUNICORN_TIMEOUT": "10"}, "GUNICORN_TIMEOUT must be above STATEMENT_TIMEOUT_MS"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be at least 1"),
        ({"GUNICORN_THREADS": "0"}, "GUNICORN_THREADS must be at least 1"),
        ({"GUNICORN_WORKER_CONNECTIONS": "0"}, "GUNICORN_WORKER_CONNECTIONS must be at least 1"),
        ({"GUNICORN_GRACEFUL_TIMEOUT": "0"}, "GUNICORN_GRACEFUL_TIMEOUT must be positive"),
        ({"PORT": "70000"}, "PORT must be between 0 and 65535"),
        ({"LOCK_TIMEOUT_MS": "20000"}, "LOCK_TIMEOUT_MS must be positive"),
    ],
)
def test_the_server_refuses_bad_values(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env).validate_server()


def test_the_app_alone_does_not_check_the_server():
    """A test (or the CLI) may run statements longer than a gunicorn worker's timeout."""
    Settings.from_env({"STATEMENT_TIMEOUT_MS": "60000"}).validate()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GUNICORN_THREADS": "many"}, "GUNICORN_THREADS must be an integer, got 'many'"),
        ({"GUNICORN_TIMEOUT": "soon"}, "GUNICORN_TIMEOUT must be an integer"),
        ({"GUNICORN_REUSE_PORT": "maybe"}, "GUNICORN_REUSE_PORT must be true or false"),
        ({"DB_POOL_MAX_OVERFLOW": "-1"}, "DB_POOL_MAX_OVERFLOW must not be negative"),
        ({"RETRY_AFTER_S": "-1"}, "RETRY_AFTER_S must not be negative"),
        ({"DB_POOL_TIMEOUT_MS": "0"}, "DB_POOL_TIMEOUT_MS must be positive"),
    ],
)
def test_garbage_is_refused_by_name(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env(env).validate()


GUNICORN_NAMES = (
    "PORT",
    "GUNICORN_BIND",
    "WEB_CONCURRENCY",
    "GUNICORN_WORKER_CLASS",
    "GUNICORN_THREADS",
    "GUNICORN_WORKER_CONNECTIONS",
    "GUNICORN_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_REUSE_PORT",
    "STATEMENT_TIMEOUT_MS",
    "LOCK_TIMEOUT_MS",
    "LOG_LEVEL",
)


@pytest.fixture
def gunicorn_conf(monkeypatch, tmp_path):
    """Load ecommerce.gunicorn_conf afresh under an environment of the test's:
    ``load(**env)`` returns the module, loaded with only ``env`` of its settings set."""
    # A directory of the test's own: the config would otherwise make one and
    # leave PROMETHEUS_MULTIPROC_DIR set in this process (monkeypatch unsets it).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def load(**env: str):
        for name in GUNICORN_NAMES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        from ecommerce import gunicorn_conf

        return importlib.reload(gunicorn_conf)

    return load


def test_gunicorn_takes_its_values_from_the_settings(gunicorn_conf):
    conf = gunicorn_conf(
        WEB_CONCURRENCY="3",
        GUNICORN_THREADS="7",
        GUNICORN_BIND="127.0.0.1:18080",
        GUNICORN_WORKER_CLASS="gthread",
        GUNICORN_WORKER_CONNECTIONS="55",
        GUNICORN_TIMEOUT="45",
        GUNICORN_GRACEFUL_TIMEOUT="12",
        LOG_LEVEL="WARNING",
    )
    assert (conf.workers, conf.threads, conf.bind) == (3, 7, "127.0.0.1:18080")
    assert conf.worker_class is conf.DrainingThreadWorker
    assert conf.worker_connections == 55
    assert (conf.timeout, conf.graceful_timeout) == (45, 12)
    assert conf.loglevel == "warning"
    assert conf.reuse_port is True
    assert conf._settings.pool_size == 11


def test_gunicorn_defaults(gunicorn_conf, tmp_path):
    conf = gunicorn_conf(PORT="9100")
    assert conf.bind == "0.0.0.0:9100"
    assert conf.worker_class is conf.DrainingGeventWorker
    assert conf.threads == 32
    assert (conf.timeout, conf.graceful_timeout) == (30, 20)
    assert conf._made_metrics_dir is False  # PROMETHEUS_MULTIPROC_DIR was given
    # No fixed TCP port (or asked not to): one shared socket.
    assert gunicorn_conf(GUNICORN_BIND="127.0.0.1:0").reuse_port is False
    assert gunicorn_conf(GUNICORN_BIND="unix:/tmp/shop.sock").reuse_port is False
    assert (
        gunicorn_conf(GUNICORN_BIND="127.0.0.1:9100", GUNICORN_REUSE_PORT="0").reuse_port is False
    )


def test_gunicorn_refuses_a_bad_value_at_start(gunicorn_conf):
    with pytest.raises(ValueError, match="GUNICORN_THREADS must be an integer"):
        gunicorn_conf(GUNICORN_THREADS="lots")
    with pytest.raises(ValueError, match="GUNICORN_TIMEOUT must be above STATEMENT_TIMEOUT_MS"):
        gunicorn_conf(GUNICORN_TIMEOUT="10")
    with pytest.raises(ValueError, match="LOCK_TIMEOUT_MS"):
        gunicorn_conf(LOCK_TIMEOUT_MS="20000")


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines of ``tree`` that read a variable of the environment: os.getenv,
    os.environ[...] loaded, os.environ.get/pop/setdefault, ``in os.environ``.
    Handing the whole environment to a child process (``{**os.environ}``,
    ``dict(os.environ)``, ``os.environ.items()``) and setting a variable for
    one are not reads."""

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ"
        )

    def reads(node: ast.AST) -> bool:
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            return name == "getenv" or (
                name in ("get", "pop", "setdefault")
                and isinstance(func, ast.Attribute)
                and is_environ(func.value)
            )
        if isinstance(node, ast.Subscript):
            return isinstance(node.ctx, ast.Load) and is_environ(node.value)
        if isinstance(node, ast.Compare):
            return any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and any(
                is_environ(c) for c in node.comparators
            )
        return False

    return sorted(node.lineno for node in ast.walk(tree) if reads(node))


def test_no_module_but_the_config_reads_the_environment():
    """Every setting is read in config.py (Settings.from_env); the rest of the
    package, the tools included, takes it from there."""
    package = PROJECT_ROOT / "ecommerce"
    found = {
        str(path.relative_to(PROJECT_ROOT)): lines
        for path in sorted(package.rglob("*.py"))
        if path.name != "config.py" or path.parent != package
        if (lines := _environment_reads(ast.parse(path.read_text(), str(path))))
    }
    assert found == {}


def test_the_guard_sees_every_way_of_reading_the_environment():
    reads = """
import os
from os import environ, getenv
a = os.environ.get("A")
b = os.environ["B"]
c = os.getenv("C")
d = environ.get("D", "")
e = "E" in os.environ
f = getenv("F")
g = os.environ.pop("G", None)
"""
    assert _environment_reads(ast.parse(reads)) == [4, 5, 6, 7, 8, 9, 10]
    hands_on = """
import os
child = {**os.environ, "PORT": "1"}
copy = dict(os.environ)
kept = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
os.environ["PROMETHEUS_MULTIPROC_DIR"] = "/tmp/m"
"""
    assert _environment_reads(ast.parse(hands_on)) == []


# --- one table, every setting once


def _table_rows() -> list[str]:
    text = (PROJECT_ROOT / "docs" / "CONFIGURATION.md").read_text()
    return [line for line in text.splitlines() if line.startswith("| `")]


def test_every_setting_read_has_one_row_in_the_table():
    source = inspect.getsource(config)
    read = set(re.findall(r'(?:env\.get|_env_int|env_bool)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert {"GUNICORN_THREADS", "PORT", "PAYMENT_GATEWAY_URL", "INSTANCE_PATH"} <= read
    rows = _table_rows()
    first_cells = [re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1]) for row in rows]
    named = [name for names in first_cells for name in names]
    assert len(named) == len(set(named)), "a setting has two rows"
    table = "\n".join(rows)
    missing = sorted(name for name in read if not re.search(rf"`{name}[`=]", table))
    assert missing == []
    assert sorted(set(named) - read) == []  # and no row for a setting nobody reads


# --- more settings, the retry backoff, database URLs


def test_settings_made_in_code_default_as_the_empty_environment_does():
    # one set of defaults: the dataclass's, which from_env falls back to
    assert Settings() == Settings.from_env({})


def test_settings_defaults_are_consistent():
    settings = Settings.from_env({})
    settings.validate()
    assert settings.database_url is None
    assert settings.port == 8080
    assert settings.lock_timeout_ms < settings.statement_timeout_ms


def test_settings_from_environment():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@h/db",
            "PORT": "9000",
            "GUNICORN_THREADS": "8",
            "LOCK_TIMEOUT_MS": "100",
        }
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.port == 9000
    # One per request thread, one for each combiner (pays; cart adds, cart
    # reads, waiting-room joins).
    assert settings.pool_size == 12
    assert Settings.from_env({"GUNICORN_THREADS": "8", "PAY_COMBINING": "off"}).pool_size == 11
    alone = {"GUNICORN_THREADS": "8", "PAY_COMBINING": "off", "CART_COMBINING": "false"}
    assert Settings.from_env(alone).pool_size == 8
    assert Settings.from_env(alone).cart_combining is False
    assert settings.lock_timeout_ms == 100


@pytest.mark.parametrize(
    "env",
    [
        {"PORT": "eighty"},
        {"METRICS": "maybe"},
    ],
)
def test_settings_refuse_garbage(env):
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_lock_timeout_must_be_below_statement_timeout():
    settings = Settings.from_env({"LOCK_TIMEOUT_MS": "5000", "STATEMENT_TIMEOUT_MS": "5000"})
    with pytest.raises(ValueError, match="LOCK_TIMEOUT_MS"):
        settings.validate()


def test_backoff_is_bounded_and_jittered():
    policy = TransactionPolicy(backoff_base_s=0.01, backoff_cap_s=0.05)
    delays = [backoff_delay(attempt, policy) for attempt in range(10) for _ in range(20)]
    assert all(0 <= d <= 0.05 for d in delays)
    assert len(set(delays)) > 1


def test_plain_postgresql_urls_use_psycopg2():
    from ecommerce.database.failover import normalize_database_url

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

    from ecommerce.database.failover import normalize_database_url

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
    with pytest.raises(ValueError):
        Settings.from_env({"PAYMENT_GATEWAY_URL": "ftp://127.0.0.1"}).validate()
