"""Discount codes made on the store's platform, through its admin API: the interface every
platform's client (integrations/platforms/<platform>_api.py) implements, and the dispatcher.

One call is one attempt (with its timeout): the retry policy, with backoff, is the caller's
(integrations/codes.py). Never call it inside a transaction or while holding a row lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom to call: from the store's Connection, secrets opened."""

    platform: str
    api_url: str  # WooCommerce: the site's base URL; Saleor: its GraphQL URL; Shopify: override
    shop_domain: str  # Shopify: <shop>.myshopify.com
    credentials: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CodeRequest:
    """One of our coupons, as the platform needs it."""

    code: str
    kind: str  # "percent" (amount: percentage points), "fixed" (minor units), "free_shipping"
    amount: int
    currency: str
    min_cart_value: int  # minor units; 0: none
    starts_at: datetime
    expires_at: datetime
    idempotency_key: str  # the same for every attempt at the same code
    title: str = ""


@dataclass(frozen=True, slots=True)
class RemoteCode:
    remote_id: str  # the platform's id of the discount (GID, coupon id, voucher id)
    existed: bool = False  # it was there already (an earlier attempt's, answer lost)


class Transient(Exception):
    """Try again later: a timeout, a connection error, 5xx, 429 (``retry_after`` seconds when
    the platform said)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(Exception):
    """The platform refused the code for good (bad credentials, missing scope, invalid input)."""


def code_create(*, target: Target, request: CodeRequest, timeout: float) -> RemoteCode:
    """Make the code on the target's platform (one attempt). A code that exists already with
    our idempotency key (an earlier attempt succeeded and its answer was lost) is confirmed, not
    refused."""
    from integrations.platforms import saleor_api, shopify_api, woocommerce_api

    client = {
        "shopify": shopify_api,
        "woocommerce": woocommerce_api,
        "saleor": saleor_api,
    }[target.platform]
    return client.code_create(target=target, request=request, timeout=timeout)


# Shared by the platforms' clients -----------------------------------------------------------------

# Names the product to the platforms' operators (their logs, their support).
USER_AGENT = "cart-recovery/0.1 (discount codes; +https://github.com/cart-recovery)"
# Longest wait a platform's Retry-After may impose on us; longer ones are clamped (the caller's
# backoff takes over) so a confused header cannot park a code for a day.
MAX_RETRY_AFTER = 3600.0


def major_units(amount: int, currency: str) -> str:
    """Minor units to the decimal string platforms take (``1250`` EUR -> ``"12.50"``, ``500`` JPY
    -> ``"500"``, ``1234`` KWD -> ``"1.234"``), exact (no float)."""
    from decimal import Decimal

    from carts.money import exponent

    places = exponent(currency.upper()) if currency else 2
    value = Decimal(int(amount)).scaleb(-places)
    return f"{value:.{places}f}"


def percent_points(amount: int) -> int:
    """A percent coupon's points, checked: the platforms refuse more than 100 % (and 0)."""
    if not 0 < amount <= 100:
        raise Permanent(f"a percentage discount must be 1..100, not {amount}")
    return amount


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a platform's Retry-After header, at most MAX_RETRY_AFTER (egress)."""
    from integrations import egress

    return egress.retry_after(value, cap=MAX_RETRY_AFTER, now=now)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced: messages we raise or log carry none (a platform can
    echo a header back in its error body)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Session:
    """One attempt's HTTP calls to one platform: a shared deadline (the attempt as a whole takes
    about ``timeout``, however many calls it needs), our User-Agent and Idempotency-Key on every
    call, transport failures as Transient, and the target's secrets kept out of every message."""

    def __init__(
        self, *, timeout: float, idempotency_key: str, secrets: tuple[str, ...], platform: str
    ) -> None:
        import time

        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.idempotency_key = idempotency_key
        self.secrets = secrets
        self.platform = platform

    def fail(self, kind: type[Exception], message: str, **extra: Any) -> Exception:
        return kind(short(redact(f"{self.platform}: {message}", self.secrets)), **extra)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json_body: Any = None,
        params: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        """The response (any status: the client reads it); Transient on a timeout or a
        connection failure, or when the attempt's time is spent."""
        import time

        import requests

        from integrations import egress

        left = self.deadline - time.monotonic()
        if left <= 0.01:
            raise self.fail(Transient, "out of time for this attempt")
        refused = egress.host_refused(url)
        if refused is not None:  # where the connection's URL may not lead (docs: Security)
            raise self.fail(Permanent, f"not called: {refused}")
        sent = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            # Harmless where the platform ignores it (none of the three documents it for these
            # calls); our real idempotency is the code itself, unique on every platform.
            "Idempotency-Key": self.idempotency_key,
            **headers,
        }
        try:
            response = requests.request(
                method,
                url,
                headers=sent,
                json=json_body,
                params=params,
                auth=auth,
                timeout=(left, left),
                allow_redirects=False,  # a redirect would resend credentials elsewhere
                stream=True,
            )
            # The whole answer within the attempt's time, and at most 1 MB of it.
            egress.body_read(response, deadline=self.deadline, limit=1024 * 1024)
            return response
        except (requests.Timeout, egress.TooSlow):
            raise self.fail(Transient, f"no answer within {self.timeout:g} s") from None
        except requests.RequestException as error:
            raise self.fail(Transient, f"connection failed: {type(error).__name__}") from None

    def json(self, response: Any) -> Any:
        """The body as JSON; Transient when it is not (a proxy's error page, a cut answer)."""
        try:
            return response.json()
        except ValueError:
            raise self.fail(
                Transient, f"HTTP {response.status_code} with a body that is not JSON"
            ) from None

    def http_error(self, response: Any, detail: str = "") -> Exception:
        """Transient for 429 (with Retry-After), 408 and 5xx; Permanent for the rest."""
        status = response.status_code
        text = detail or short(response.text or "", 200)
        if status == 429:
            wait = retry_after(response.headers.get("Retry-After"))
            return self.fail(Transient, f"HTTP 429 (rate limited) {text}", retry_after=wait)
        if status == 408 or status >= 500:
            return self.fail(Transient, f"HTTP {status} {text}")
        if status in (401, 403):
            return self.fail(
                Permanent, f"HTTP {status}: the credentials were refused or lack a scope. {text}"
            )
        return self.fail(Permanent, f"HTTP {status} {text}")
