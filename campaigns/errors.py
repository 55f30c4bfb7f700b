"""Domain errors of the campaigns app. campaigns/apis.py maps them to HTTP responses."""

from __future__ import annotations

from typing import Any


class CampaignsError(Exception):
    code = "campaigns_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class CouponNotFound(CampaignsError):
    """No such code in this store (another store's code is not found either)."""

    code = "coupon_not_found"


class CouponAlreadyRedeemed(CampaignsError):
    """The code was redeemed, for another order."""

    code = "coupon_already_redeemed"


class CouponExpired(CampaignsError):
    code = "coupon_expired"


class CouponNotApplicable(CampaignsError):
    """The code exists but does not apply to this cart; ``field`` is the request field at fault
    (``cart_value`` below the code's minimum, ``currency`` other than the code's)."""

    code = "coupon_not_applicable"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message, field=field)
        self.field = field
