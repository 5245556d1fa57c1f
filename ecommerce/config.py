"""Settings read from the environment, in one place.

Every environment setting of the shop (the app and its gunicorn server,
ecommerce/gunicorn_conf.py) is parsed here, by :meth:`Settings.from_env`, and
checked by :meth:`Settings.validate` (the app's) and :meth:`Settings.validate_server`
(the server's too); docs/CONFIGURATION.md has the table.
Every knob has a safe default so that `make run` works on a fresh machine; a
real deployment sets DATABASE_URL and SECRET_KEY at least.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# instance/ (the embedded PostgreSQL's data): beside the source tree when the
# package runs from one, else in the directory the shop is started from (an
# installed package must not write into site-packages).
DEFAULT_INSTANCE_PATH = (
    PROJECT_ROOT / "instance"
    if (PROJECT_ROOT / "alembic.ini").is_file()
    else Path.cwd() / "instance"
)
DEFAULT_SECRET_KEY = "dev-secret-change-me"
LOG_LEVELS = ("debug", "info", "warning", "error")
#: The waiting room's bounds (an admission lasts at most a day; at most a
#: million buyers admitted and not done at once).
MAX_ADMISSION_TTL_S = 24 * 3600
MAX_ADMITTED = 1_000_000


def _env_int(name: str, default: int, environ: dict[str, str]) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def env_bool(name: str, default: bool, environ: dict[str, str]) -> bool:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


#: GUNICORN_THREADS' default (the default pool is built on it: default_pool_size).
DEFAULT_THREADS = 32


def default_pool_size(threads: int, pay_combining: bool, cart_combining: bool) -> int:
    """One connection per request thread, plus one for each combiner's thread
    (pays; cart adds, cart reads and waiting-room joins): more would only add
    waiting in front of a hot row."""
    return threads + int(pay_combining) + 3 * int(cart_combining)


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    # None means: start (or reuse) the embedded PostgreSQL under instance/.
    database_url: str | None = None
    instance_path: Path = DEFAULT_INSTANCE_PATH
    secret_key: str = DEFAULT_SECRET_KEY
    port: int = 8080
    # Database waits are bounded so a hot row never hangs a worker (docs/OPERATIONS.md).
    lock_timeout_ms: int = 3000
    statement_timeout_ms: int = 10000
    idle_in_transaction_timeout_ms: int = 15000
    # GUNICORN_THREADS. gthread: each worker's request threads. Every worker
    # class: the default pool_size is threads + one connection per combiner
    # (default_pool_size). gunicorn's gevent worker ignores threads, so under
    # gevent it only sets how many of a worker's requests hold a pooled
    # connection at once (the others wait, at most pool_timeout_s, then 503),
    # and nothing at all when DB_POOL_SIZE is set; worker_connections bounds
    # the requests.
    threads: int = DEFAULT_THREADS
    pool_size: int = default_pool_size(DEFAULT_THREADS, pay_combining=True, cart_combining=True)
    pool_max_overflow: int = 0
    pool_timeout_s: float = 5.0
    # Making a connection may take this long (a server that accepts and never
    # answers included); one query may take statement_timeout + 2 s on this side
    # (ecommerce/database/cooperative.py).
    db_connect_timeout_ms: int = 3000
    # Deadlocks and serialization failures re-run the whole unit of work.
    transaction_retries: int = 3
    retry_after_s: int = 1
    # "production" turns authentication on by default and refuses the default key.
    environment: str = "development"
    auth_required: bool = False
    idempotency_ttl_s: int = 24 * 3600
    # Combined pays (ecommerce/services/combining.py): on by default.
    pay_combining: bool = True
    # Adds, and cart reads (the checkout quote, GET /cart/<user>), that arrive
    # together are combined like pays; on by default.
    cart_combining: bool = True
    # The bounds of every combiner of a worker (pays, cart adds, cart reads):
    # requests per batch; requests waiting for it; the longest wait (then 503).
    combining_batch_max: int = 64
    combining_queue_max: int = 1024
    combining_queue_wait_ms: int = 3000
    # How long a sold-out mark is trusted before a plain read re-checks it.
    sold_out_recheck_ms: int = 500
    # The waiting room (ecommerce/services/rooms/): how often a worker reads
    # the fronts of the open lines (and so how stale its view of which items
    # have a room may be); a poll's shortest Retry-After; a new room's
    # admission lifetime and its cap on buyers admitted and not yet done.
    queue_refresh_ms: int = 200
    queue_poll_ms: int = 1000
    queue_admission_ttl_s: int = 300
    queue_max_admitted: int = 100
    # The payment provider (ecommerce/gateway.py): set, pays go through it (the
    # http gateway); None, the instant gateway (paid at once, no outside call).
    payment_gateway_url: str | None = None
    payment_gateway_timeout_ms: int = 2000
    payment_webhook_secret: str | None = None
    reservation_ttl_s: int = 900
    # HAProxy's statistics as CSV (e.g. http://lb:8404/stats;csv): the console
    # shows each instance behind the balancer. None: not shown.
    balancer_stats_url: str | None = None
    # JSON logs at this level (a line per request at info); Prometheus metrics.
    log_level: str = "info"
    metrics_enabled: bool = True
    # prometheus-client's multiprocess directory; None: the gunicorn master
    # makes a temporary one (and removes it at exit).
    metrics_dir: str | None = None
    # Where the scheduled commands (release-expired, reconcile-payments) write
    # their run's figures for node_exporter's textfile collector; None: nowhere.
    job_metrics_dir: str | None = None

    # The gunicorn server (ecommerce/gunicorn_conf.py).
    # None: 0.0.0.0:<port>.
    gunicorn_bind: str | None = None
    # Worker processes: one per core (docs/CAPACITY.md).
    workers: int = field(default_factory=_cpu_count)
    # "gevent" or "gthread" (both drain on SIGTERM); any other gunicorn worker
    # class is handed to gunicorn as it is.
    worker_class: str = "gevent"
    # gevent: connections a worker serves at once; beyond it they wait in the backlog.
    worker_connections: int = 1000
    # Above statement_timeout, which is above lock_timeout: the database gives
    # up first and the client gets a 503, not a killed worker.
    worker_timeout_s: int = 30
    # On SIGTERM, how long workers may finish the requests in flight.
    graceful_timeout_s: int = 20
    # Each worker listens on a socket of its own (SO_REUSEPORT); gunicorn_conf.
    reuse_port: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        threads = _env_int("GUNICORN_THREADS", cls.threads, env)
        combining = env_bool("PAY_COMBINING", cls.pay_combining, env)
        cart_combining = env_bool("CART_COMBINING", cls.cart_combining, env)
        environment = (env.get("APP_ENV") or cls.environment).strip().lower()
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            instance_path=Path(env.get("INSTANCE_PATH") or DEFAULT_INSTANCE_PATH),
            secret_key=env.get("SECRET_KEY") or DEFAULT_SECRET_KEY,
            port=_env_int("PORT", cls.port, env),
            lock_timeout_ms=_env_int("LOCK_TIMEOUT_MS", cls.lock_timeout_ms, env),
            statement_timeout_ms=_env_int("STATEMENT_TIMEOUT_MS", cls.statement_timeout_ms, env),
            idle_in_transaction_timeout_ms=_env_int(
                "IDLE_IN_TRANSACTION_TIMEOUT_MS", cls.idle_in_transaction_timeout_ms, env
            ),
            pool_size=_env_int(
                "DB_POOL_SIZE", default_pool_size(threads, combining, cart_combining), env
            ),
            pool_max_overflow=_env_int("DB_POOL_MAX_OVERFLOW", cls.pool_max_overflow, env),
            pool_timeout_s=_env_int("DB_POOL_TIMEOUT_MS", round(cls.pool_timeout_s * 1000), env)
            / 1000.0,
            db_connect_timeout_ms=_env_int("DB_CONNECT_TIMEOUT_MS", cls.db_connect_timeout_ms, env),
            transaction_retries=_env_int("TRANSACTION_RETRIES", cls.transaction_retries, env),
            retry_after_s=_env_int("RETRY_AFTER_S", cls.retry_after_s, env),
            environment=environment,
            auth_required=env_bool("AUTH_REQUIRED", environment == "production", env),
            idempotency_ttl_s=_env_int("IDEMPOTENCY_TTL_S", cls.idempotency_ttl_s, env),
            pay_combining=combining,
            cart_combining=cart_combining,
            combining_batch_max=_env_int("COMBINING_BATCH_MAX", cls.combining_batch_max, env),
            combining_queue_max=_env_int("COMBINING_QUEUE_MAX", cls.combining_queue_max, env),
            combining_queue_wait_ms=_env_int(
                "COMBINING_QUEUE_WAIT_MS", cls.combining_queue_wait_ms, env
            ),
            sold_out_recheck_ms=_env_int("SOLD_OUT_RECHECK_MS", cls.sold_out_recheck_ms, env),
            queue_refresh_ms=_env_int("QUEUE_REFRESH_MS", cls.queue_refresh_ms, env),
            queue_poll_ms=_env_int("QUEUE_POLL_MS", cls.queue_poll_ms, env),
            queue_admission_ttl_s=_env_int("QUEUE_ADMISSION_TTL_S", cls.queue_admission_ttl_s, env),
            queue_max_admitted=_env_int("QUEUE_MAX_ADMITTED", cls.queue_max_admitted, env),
            payment_gateway_url=env.get("PAYMENT_GATEWAY_URL") or None,
            payment_gateway_timeout_ms=_env_int(
                "PAYMENT_GATEWAY_TIMEOUT_MS", cls.payment_gateway_timeout_ms, env
            ),
            payment_webhook_secret=env.get("PAYMENT_WEBHOOK_SECRET") or None,
            reservation_ttl_s=_env_int("RESERVATION_TTL_S", cls.reservation_ttl_s, env),
            balancer_stats_url=env.get("BALANCER_STATS_URL") or None,
            log_level=(env.get("LOG_LEVEL") or cls.log_level).strip().lower(),
            metrics_enabled=env_bool("METRICS", cls.metrics_enabled, env),
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            job_metrics_dir=env.get("JOB_METRICS_DIR") or None,
            gunicorn_bind=env.get("GUNICORN_BIND") or None,
            workers=_env_int("WEB_CONCURRENCY", _cpu_count(), env),
            worker_class=(env.get("GUNICORN_WORKER_CLASS") or cls.worker_class).strip(),
            threads=threads,
            worker_connections=_env_int("GUNICORN_WORKER_CONNECTIONS", cls.worker_connections, env),
            worker_timeout_s=_env_int("GUNICORN_TIMEOUT", cls.worker_timeout_s, env),
            graceful_timeout_s=_env_int("GUNICORN_GRACEFUL_TIMEOUT", cls.graceful_timeout_s, env),
            reuse_port=env_bool("GUNICORN_REUSE_PORT", cls.reuse_port, env),
        )

    @property
    def payment_gateway(self) -> str:
        """The gateway pays go through: http when PAYMENT_GATEWAY_URL is set, else
        instant (derived from the URL, never set on its own)."""
        return "http" if self.payment_gateway_url else "instant"

    @property
    def bind(self) -> str:
        """The address gunicorn listens on (GUNICORN_BIND, else all interfaces at PORT)."""
        return self.gunicorn_bind or f"0.0.0.0:{self.port}"

    @property
    def db_silence_timeout_s(self) -> float:
        """How long this side waits for one answer of the server: above
        statement_timeout, which the server enforces while it runs."""
        return (self.statement_timeout_ms + 2000) / 1000

    def validate(self) -> None:
        if not 0 < self.lock_timeout_ms < self.statement_timeout_ms:
            raise ValueError("LOCK_TIMEOUT_MS must be positive and below STATEMENT_TIMEOUT_MS")
        if self.db_connect_timeout_ms < 1:
            raise ValueError("DB_CONNECT_TIMEOUT_MS must be positive")
        if self.pool_size < 1:
            raise ValueError("DB_POOL_SIZE must be at least 1")
        if self.pool_max_overflow < 0:
            # SQLAlchemy would read -1 as "no limit": connections stay bounded.
            raise ValueError("DB_POOL_MAX_OVERFLOW must not be negative")
        if self.pool_timeout_s <= 0:
            raise ValueError("DB_POOL_TIMEOUT_MS must be positive")
        if self.retry_after_s < 0:
            raise ValueError("RETRY_AFTER_S must not be negative")
        if self.transaction_retries < 0:
            raise ValueError("TRANSACTION_RETRIES must not be negative")
        if self.environment not in {"development", "production"}:
            raise ValueError("APP_ENV must be development or production")
        if self.idempotency_ttl_s < 1:
            raise ValueError("IDEMPOTENCY_TTL_S must be positive")
        for name, value in (
            ("COMBINING_BATCH_MAX", self.combining_batch_max),
            ("COMBINING_QUEUE_MAX", self.combining_queue_max),
            ("COMBINING_QUEUE_WAIT_MS", self.combining_queue_wait_ms),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive")
        if self.balancer_stats_url and not self.balancer_stats_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("BALANCER_STATS_URL must be an http(s) URL")
        if self.payment_gateway_url and not self.payment_gateway_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("PAYMENT_GATEWAY_URL must be an http:// or https:// URL")
        if self.payment_gateway_timeout_ms < 1 or self.reservation_ttl_s < 1:
            raise ValueError("PAYMENT_GATEWAY_TIMEOUT_MS and RESERVATION_TTL_S must be positive")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if self.sold_out_recheck_ms < 0:
            raise ValueError("SOLD_OUT_RECHECK_MS must not be negative")
        if self.queue_refresh_ms < 0:
            raise ValueError("QUEUE_REFRESH_MS must not be negative")
        if self.queue_poll_ms < 1:
            raise ValueError("QUEUE_POLL_MS must be positive")
        if not 1 <= self.queue_admission_ttl_s <= MAX_ADMISSION_TTL_S:
            raise ValueError(f"QUEUE_ADMISSION_TTL_S must be between 1 and {MAX_ADMISSION_TTL_S}")
        if not 1 <= self.queue_max_admitted <= MAX_ADMITTED:
            raise ValueError(f"QUEUE_MAX_ADMITTED must be between 1 and {MAX_ADMITTED}")
        if self.environment == "production" and (
            self.secret_key == DEFAULT_SECRET_KEY or len(self.secret_key) < 16
        ):
            raise ValueError(
                "APP_ENV=production needs SECRET_KEY set to a secret of 16+ characters"
            )

    def validate_server(self) -> None:
        """validate(), and the gunicorn server's settings (ecommerce/gunicorn_conf.py
        calls it in the master, so a bad value stops the start)."""
        self.validate()
        if not 0 <= self.port <= 65535:
            raise ValueError(f"PORT must be between 0 and 65535, got {self.port}")
        if self.workers < 1:
            raise ValueError("WEB_CONCURRENCY must be at least 1")
        if self.threads < 1:
            raise ValueError("GUNICORN_THREADS must be at least 1")
        if self.worker_connections < 1:
            raise ValueError("GUNICORN_WORKER_CONNECTIONS must be at least 1")
        if self.worker_timeout_s * 1000 <= self.statement_timeout_ms:
            raise ValueError(
                "GUNICORN_TIMEOUT must be above STATEMENT_TIMEOUT_MS, or workers die first"
            )
        if self.graceful_timeout_s < 1:
            raise ValueError("GUNICORN_GRACEFUL_TIMEOUT must be positive")
