"""The campaigns app's API under /api/v1/ (store secret key)."""

from django.urls import path

from campaigns import apis

urlpatterns = [
    path("coupons/redeem", apis.CouponRedeemApi.as_view(), name="coupon-redeem"),
    path("coupons/validate", apis.CouponValidateApi.as_view(), name="coupon-validate"),
]
