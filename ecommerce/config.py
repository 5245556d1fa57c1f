"""Settings read from the environment, in one place.

Every knob has a safe default so that `make run` works on a fresh machine; a
real deployment sets DATABASE_URL and SECRET_KEY at least.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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
    pool_size: int = 2
    pool_max_overflow: int = 0
    pool_timeout_s: float = 5.0
    # Making a connection may take this long (a server that accepts and never
    # answers included); one query may take statement_timeout + 2 s on this side
    # (ecommerce/cooperative.py).
    db_connect_timeout_ms: int = 3000
    # Deadlocks and serialization failures re-run the whole unit of work.
    transaction_retries: int = 3
    retry_after_s: int = 1
    stock_strategy: str = "for_update"
    allow_unsafe_strategy: bool = False
    # "production" turns authentication on by default and refuses the default key.
    environment: str = "development"
    auth_required: bool = False
    idempotency_ttl_s: int = 24 * 3600
    # Combined pays (ecommerce/services/combining.py): on by default.
    pay_combining: bool = True
    pay_batch_max: int = 64
    pay_queue_max: int = 1024
    pay_queue_wait_ms: int = 3000
    # Adds, and cart reads (the checkout quote, GET /cart/<user>), that arrive
    # together are combined like pays, under the same bounds; on by default.
    cart_combining: bool = True
    # How long a sold-out mark is trusted before a plain read re-checks it.
    sold_out_recheck_ms: int = 500
    # The payment provider (ecommerce/gateway.py): "instant" (paid at once, no
    # outside call) or "http" (PAYMENT_GATEWAY_URL; the default when it is set).
    payment_gateway: str = "instant"
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

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        threads = _env_int("GUNICORN_THREADS", 32, env)
        combining = env_bool("PAY_COMBINING", cls.pay_combining, env)
        cart_combining = env_bool("CART_COMBINING", cls.cart_combining, env)
        environment = (env.get("APP_ENV") or cls.environment).strip().lower()
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            instance_path=Path(env.get("INSTANCE_PATH") or DEFAULT_INSTANCE_PATH),
            secret_key=env.get("SECRET_KEY") or DEFAULT_SECRET_KEY,
            port=_env_int("PORT", 8080, env),
            lock_timeout_ms=_env_int("LOCK_TIMEOUT_MS", cls.lock_timeout_ms, env),
            statement_timeout_ms=_env_int("STATEMENT_TIMEOUT_MS", cls.statement_timeout_ms, env),
            idle_in_transaction_timeout_ms=_env_int(
                "IDLE_IN_TRANSACTION_TIMEOUT_MS", cls.idle_in_transaction_timeout_ms, env
            ),
            # One connection per request thread, plus one for each combiner's
            # thread (pays; cart adds and cart reads): more would only add
            # waiting in front of a hot row.
            pool_size=_env_int(
                "DB_POOL_SIZE", threads + int(combining) + 2 * int(cart_combining), env
            ),
            pool_max_overflow=_env_int("DB_POOL_MAX_OVERFLOW", 0, env),
            pool_timeout_s=float(_env_int("DB_POOL_TIMEOUT_MS", 5000, env)) / 1000.0,
            db_connect_timeout_ms=_env_int("DB_CONNECT_TIMEOUT_MS", cls.db_connect_timeout_ms, env),
            transaction_retries=_env_int("TRANSACTION_RETRIES", cls.transaction_retries, env),
            retry_after_s=_env_int("RETRY_AFTER_S", cls.retry_after_s, env),
            stock_strategy=env.get("STOCK_STRATEGY") or cls.stock_strategy,
            allow_unsafe_strategy=env_bool("ALLOW_UNSAFE_STRATEGY", False, env),
            environment=environment,
            auth_required=env_bool("AUTH_REQUIRED", environment == "production", env),
            idempotency_ttl_s=_env_int("IDEMPOTENCY_TTL_S", cls.idempotency_ttl_s, env),
            pay_combining=combining,
            cart_combining=cart_combining,
            pay_batch_max=_env_int("PAY_BATCH_MAX", cls.pay_batch_max, env),
            pay_queue_max=_env_int("PAY_QUEUE_MAX", cls.pay_queue_max, env),
            pay_queue_wait_ms=_env_int("PAY_QUEUE_WAIT_MS", cls.pay_queue_wait_ms, env),
            sold_out_recheck_ms=_env_int("SOLD_OUT_RECHECK_MS", cls.sold_out_recheck_ms, env),
            payment_gateway=(
                env.get("PAYMENT_GATEWAY")
                or ("http" if env.get("PAYMENT_GATEWAY_URL") else cls.payment_gateway)
            )
            .strip()
            .lower(),
            payment_gateway_url=env.get("PAYMENT_GATEWAY_URL") or None,
            balancer_stats_url=env.get("BALANCER_STATS_URL") or None,
            payment_gateway_timeout_ms=_env_int(
                "PAYMENT_GATEWAY_TIMEOUT_MS", cls.payment_gateway_timeout_ms, env
            ),
            payment_webhook_secret=env.get("PAYMENT_WEBHOOK_SECRET") or None,
            reservation_ttl_s=_env_int("RESERVATION_TTL_S", cls.reservation_ttl_s, env),
            log_level=(env.get("LOG_LEVEL") or cls.log_level).strip().lower(),
            metrics_enabled=env_bool("METRICS", cls.metrics_enabled, env),
        )

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
        if self.transaction_retries < 0:
            raise ValueError("TRANSACTION_RETRIES must not be negative")
        if self.environment not in {"development", "production"}:
            raise ValueError("APP_ENV must be development or production")
        if self.idempotency_ttl_s < 1:
            raise ValueError("IDEMPOTENCY_TTL_S must be positive")
        if self.pay_batch_max < 1 or self.pay_queue_max < 1 or self.pay_queue_wait_ms < 1:
            raise ValueError("PAY_BATCH_MAX, PAY_QUEUE_MAX and PAY_QUEUE_WAIT_MS must be positive")
        if self.payment_gateway not in ("instant", "http"):
            raise ValueError("PAYMENT_GATEWAY must be instant or http")
        if (self.payment_gateway == "http") != bool(self.payment_gateway_url):
            raise ValueError("PAYMENT_GATEWAY=http needs PAYMENT_GATEWAY_URL, and only it uses one")
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
        if self.environment == "production" and (
            self.secret_key == DEFAULT_SECRET_KEY or len(self.secret_key) < 16
        ):
            raise ValueError(
                "APP_ENV=production needs SECRET_KEY set to a secret of 16+ characters"
            )
