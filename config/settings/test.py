"""Settings for the test suite: same real PostgreSQL and Redis, faster password hashing.

Test-only keys: each test process makes random signing keys of its own (the environment's win),
and exports them, so the servers, workers and commands a test starts sign with the same keys.
"""

import os
import secrets

from config import env, local_secrets

_keys = local_secrets.generate()
env.secret_defaults_set(_keys)
env.export_for_children(_keys)
# /metrics's token likewise: one per test process, shared with the servers a test starts.
env.export_for_children({"METRICS_TOKEN": secrets.token_urlsafe(32)})

from .base import *  # noqa: E402, F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
CARTS_RATE_LIMIT_PER_MINUTE = 1_000_000
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# One test database per pytest process, so two runs on one machine never drop each other's.
DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}  # noqa: F405

# Tests that need the demo key file point this at a temporary path.
DEMO_STORE_FILE = None  # type: ignore[assignment]
DEMO_ORDERS = True
# The suite's fixed dates (tests/conftest.py T0, 2026-11-01) stay inside the server window for
# years to come; the tests of the window set it themselves (tests/carts/test_bounds.py).
CARTS_SERVER_PAST_DAYS = 3650
# Rate limits off (tests share one Redis and one client address); a test of a limit sets its
# own rule (tests/carts/test_ratelimits.py).
RATE_LIMITS = dict.fromkeys(RATE_LIMITS, "")  # noqa: F405
# The tests' fake platforms and receivers listen on 127.0.0.1 (tests/integrations/test_egress.py
# turns it off).
INTEGRATIONS_ALLOW_PRIVATE_URLS = True
# Tests connect stores as they go: no remembered "not connected".
INTEGRATIONS_CONNECTION_REFRESH_SECONDS = 0.0
