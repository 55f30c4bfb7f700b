"""Admin forms for campaigns: field-level checks a merchant can act on.

Checks that span tiers (positions, increasing delays, a tier to activate) live in
``TierFormSet``; checks of one tier in ``TierForm`` (its templates through
``campaigns.emails.template_errors``, the renderer's own check); the store's messaging settings
in ``CampaignSettingsForm``. Messages name the field and the value that is wrong.
"""

from __future__ import annotations

import itertools
import string
import zoneinfo
from email.utils import parseaddr
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import models
from django.forms.models import BaseInlineFormSet

from campaigns.models import Campaign, CampaignSettings, Tier

EMAIL_CHANNELS = frozenset({Tier.Channel.EMAIL, Tier.Channel.DISCOUNT})
DISCOUNT_OFFER_KINDS = frozenset(
    {Tier.OfferKind.PERCENT_DISCOUNT, Tier.OfferKind.FIXED_DISCOUNT, Tier.OfferKind.FREE_SHIPPING}
)
MAX_PERCENT = 90
CART_URL_PLACEHOLDERS = frozenset({"items", "code", "cart"})


class LinesField(forms.Field):
    """A JSON list of strings edited one per line (or comma-separated)."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 40})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(str(v) for v in value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(v) for v in value]
        values: list[str] = []
        for line in str(value or "").replace(",", "\n").splitlines():
            if line.strip() and line.strip() not in values:
                values.append(line.strip())
        return values

    def has_changed(self, initial: Any, data: Any) -> bool:
        return self.to_python(initial or []) != self.to_python(data)


class CampaignForm(forms.ModelForm):
    only_skus = LinesField(
        required=False, help_text="One SKU per line. Empty: carts with any products."
    )
    only_categories = LinesField(
        required=False, help_text="One category per line. Empty: carts with any products."
    )

    class Meta:
        model = Campaign
        fields = [
            "name", "store", "active", "priority", "holdout_share", "inactivity_minutes",
            "max_age_days", "min_score", "min_cart_value", "only_skus", "only_categories",
            "shopper_cap_hours", "cart_cap", "quiet_start", "quiet_end", "attribution_hours",
        ]  # fmt: skip

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        start, end = cleaned.get("quiet_start"), cleaned.get("quiet_end")
        # A field that failed its own validation is absent, not empty: only judge what was given.
        if "quiet_start" in cleaned and "quiet_end" in cleaned and (start is None) != (end is None):
            missing = "quiet_end" if end is None else "quiet_start"
            self.add_error(
                missing,
                "Set both the start and the end of quiet hours, or leave both empty "
                "(no quiet hours).",
            )
        return cleaned


def _formfield(db_field: Any, **kwargs: Any) -> Any:
    if isinstance(db_field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return db_field.formfield(**kwargs)


class TierForm(forms.ModelForm):
    class Meta:
        model = Tier
        fields = [
            "position", "channel", "delay_minutes", "min_score", "min_cart_value", "offer_kind",
            "percent", "discount_cap", "headline", "body", "cta_label", "cta_url",
            "cooldown_hours", "offer_ttl_minutes", "subject_template", "body_template",
            "discount_min", "discount_max", "code_expiry_hours", "recent_code_days",
            "recent_code_policy", "margin_floor_percent",
        ]  # fmt: skip
        formfield_callback = _formfield

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        channel = cleaned.get("channel")
        if channel in EMAIL_CHANNELS:
            # The checks of the code that sends: its engine (no {% load %}, {% include %} or
            # {% debug %}) and its sample carts, so what saves here also renders when it is due.
            from campaigns.emails import template_errors

            errors = template_errors(
                subject_template=cleaned.get("subject_template") or "",
                body_template=cleaned.get("body_template") or "",
            )
            for name, problems in errors.items():
                for problem in problems:
                    self.add_error(name, problem)
        if channel == Tier.Channel.DISCOUNT:
            self._clean_discount(cleaned)
        return cleaned

    def _clean_discount(self, cleaned: dict[str, Any]) -> None:
        kind = cleaned.get("offer_kind")
        if kind is None:
            return
        if kind not in DISCOUNT_OFFER_KINDS:
            self.add_error(
                "offer_kind",
                "A discount tier gives a percentage discount, a fixed amount off or free "
                "shipping; use an email tier for a message only.",
            )
            return
        if kind == Tier.OfferKind.FREE_SHIPPING:
            return
        low, high, cap = (cleaned.get(k) for k in ("discount_min", "discount_max", "discount_cap"))
        unit = "percent" if kind == Tier.OfferKind.PERCENT_DISCOUNT else "minor units"
        for name, value in (("discount_min", low), ("discount_max", high)):
            if value is None and name not in self.errors:
                self.add_error(name, f"Required for a {Tier.OfferKind(kind).label}.")
        if low is not None and high is not None and low > high:
            self.add_error(
                "discount_min",
                f"The smallest discount ({low} {unit}) must not exceed the largest "
                f"({high} {unit}).",
            )
        if kind == Tier.OfferKind.PERCENT_DISCOUNT:
            if high is not None and high > MAX_PERCENT:
                self.add_error(
                    "discount_max", f"A percentage discount is at most {MAX_PERCENT}% (not {high})."
                )
            if cap is not None and cap < 1:
                self.add_error(
                    "discount_cap", "A cap must be at least 1 minor unit; leave it empty for none."
                )
        elif cap is not None and high is not None and high > cap:
            self.add_error(
                "discount_max",
                f"A fixed discount must not exceed the cap: the largest discount ({high}) is "
                f"more than the cap ({cap}).",
            )


class TierFormSet(BaseInlineFormSet):
    """The campaign's tiers: unique positions, delays increasing with position, and at least one
    tier when the campaign is active."""

    def clean(self) -> None:
        # Ours first: Django's own unique check (in super().clean()) raises, and its message
        # ("duplicate data for campaign and position") says less than ours.
        live = [
            form
            for form in self.forms
            if getattr(form, "cleaned_data", None) and not self._should_delete_form(form)  # type: ignore[attr-defined]
        ]
        by_position: dict[int, forms.BaseForm] = {}
        for form in live:
            position = form.cleaned_data.get("position")
            if position is None:
                continue
            if position in by_position:
                form.add_error(
                    "position",
                    f"Another tier already has position {position}: positions must be unique.",
                )
            else:
                by_position[position] = form
        ordered = sorted(by_position.items())
        for (prev_pos, prev), (pos, later) in itertools.pairwise(ordered):
            prev_delay = prev.cleaned_data.get("delay_minutes")
            delay = later.cleaned_data.get("delay_minutes")
            if prev_delay is None or delay is None or delay > prev_delay:
                continue
            later.add_error(
                "delay_minutes",
                f"Tier {pos} must come after tier {prev_pos}: its delay ({delay} minutes) must "
                f"be more than tier {prev_pos}'s ({prev_delay} minutes).",
            )
        if getattr(self.instance, "active", False) and not live:
            raise ValidationError(
                "An active campaign needs at least one tier: add a tier, or untick Active."
            )
        super().clean()

    def save_existing_objects(self, commit: bool = True) -> list[Tier]:
        if commit:
            self._free_moved_positions()
        return super().save_existing_objects(commit)

    def _free_moved_positions(self) -> None:
        """Move the tiers that change position or go away out of the way first: positions are
        unique in the database, and a swap (1 <-> 2) would otherwise collide half-way."""
        moving = [
            form.instance.pk
            for form in self.initial_forms
            if form.instance.pk is not None
            and (
                self._should_delete_form(form)  # type: ignore[attr-defined]
                or "position" in form.changed_data
            )
        ]
        if not moving:
            return
        taken: set[int | None] = set(
            Tier.objects.filter(campaign=self.instance).values_list("position", flat=True)
        )
        taken |= {form.cleaned_data.get("position") for form in self.forms if form.cleaned_data}
        spare = (p for p in range(32767, 0, -1) if p not in taken)
        for pk in moving:
            Tier.objects.filter(pk=pk).update(position=next(spare))


class CampaignSettingsForm(forms.ModelForm):
    class Meta:
        model = CampaignSettings
        fields = [
            "store", "email_from", "reply_to", "timezone", "cart_url", "email_legal_basis",
            "track_opens", "track_clicks", "gross_margin_percent", "onsite_codes_per_hour",
            "onsite_discount_per_day",
        ]  # fmt: skip

    # The on-site budget: left empty, the defaults (a form posted before these fields existed
    # keeps working).
    _BUDGET_FIELDS = ("onsite_codes_per_hour", "onsite_discount_per_day")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in self._BUDGET_FIELDS:
            if name in self.fields:
                self.fields[name].required = False

    def _budget(self, name: str) -> int:
        value = self.cleaned_data.get(name)
        if value is None:
            field = CampaignSettings._meta.get_field(name)
            assert isinstance(field, models.Field)
            return int(field.get_default())
        return int(value)

    def clean_onsite_codes_per_hour(self) -> int:
        return self._budget("onsite_codes_per_hour")

    def clean_onsite_discount_per_day(self) -> int:
        return self._budget("onsite_discount_per_day")

    def clean_timezone(self) -> str:
        name = self.cleaned_data["timezone"].strip()
        if name not in zoneinfo.available_timezones():
            raise ValidationError(
                f"“{name}” is not a time zone: use an IANA name such as Europe/Berlin or UTC."
            )
        return name

    def clean_email_from(self) -> str:
        value = self.cleaned_data["email_from"].strip()
        _name, address = parseaddr(value)
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError(
                "Enter a sender as Name <address@example.com> or address@example.com."
            ) from None
        return value

    def clean_cart_url(self) -> str:
        value = self.cleaned_data["cart_url"].strip()
        if not value:
            return value
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValidationError(
                f"Braces must enclose a placeholder ({exc}): use {{items}}, {{code}} or {{cart}}."
            ) from None
        unknown = sorted(fields - CART_URL_PLACEHOLDERS)
        if unknown:
            shown = ", ".join("{" + name + "}" for name in unknown)
            raise ValidationError(
                f"Unknown placeholder {shown}: the cart URL may use only {{items}}, {{code}} and "
                "{cart}."
            )
        sample = value.format(items="SKU-1:2,SKU-2:1", code="SAMPLE-CODE", cart="cart-token")
        try:
            URLValidator(schemes=["http", "https"])(sample)
        except ValidationError:
            raise ValidationError(
                "Enter a full http:// or https:// address, e.g. "
                "https://shop.example/cart?items={items}&code={code}."
            ) from None
        return value
