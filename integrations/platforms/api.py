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
