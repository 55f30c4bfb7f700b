"""Admin forms for campaigns: field-level checks a merchant can act on, in a merchant's units.

Merchants type money in the store's currency ("20.00", saved as 2000 minor units: MoneyField),
shares as percentages ("10" for 10%, saved as 0.10: PercentField) and durations with a unit
("90m", "2h", "1d 12h"; saved in the column's unit, minutes, hours or days, and a number alone is
in that unit: DurationField). The store's
currency is the one its carts use (store_currency), EUR until it has any.

Checks that span tiers (positions, increasing delays, a tier to activate) live in
``TierFormSet``; checks of one tier in ``TierForm`` (its templates through
``campaigns.emails.template_errors``, the renderer's own check); the store's messaging settings
in ``CampaignSettingsForm``. Messages name the field and the value that is wrong.
"""

from __future__ import annotations

import itertools
import re
import string
import zoneinfo
from decimal import Decimal
from email.utils import parseaddr
from typing import Any

from django import forms
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
    URLValidator,
    validate_email,
)
from django.db import models
from django.forms.models import BaseInlineFormSet
from django.utils.html import conditional_escape

from campaigns.models import YEAR_DAYS, YEAR_HOURS, Campaign, CampaignSettings, Tier
from carts import money
from carts.models import CartState, Store

EMAIL_CHANNELS = frozenset({Tier.Channel.EMAIL, Tier.Channel.DISCOUNT})
DISCOUNT_OFFER_KINDS = frozenset(
    {Tier.OfferKind.PERCENT_DISCOUNT, Tier.OfferKind.FIXED_DISCOUNT, Tier.OfferKind.FREE_SHIPPING}
)
MAX_PERCENT = 90
CART_URL_PLACEHOLDERS = frozenset({"items", "code", "cart"})


# Merchant units -----------------------------------------------------------------------------------

DEFAULT_CURRENCY = "EUR"  # a store's currency until its carts name one (store_currency)


def store_currency(store_id: int | None) -> str:
    """The currency a store's money settings are typed in: that of its latest open cart, else of
    any of its carts, else DEFAULT_CURRENCY. Campaigns compare these amounts with carts' values
    in minor units, so the store's carts' currency is the one they are in."""
    if store_id is None:
        return DEFAULT_CURRENCY
    carts = CartState.objects.filter(store_id=store_id).exclude(currency="")
    latest = (
        carts.filter(status__in=["active", "checkout"], item_count__gt=0)
        .order_by("-seen_at")
        .values_list("currency", flat=True)
        .first()
    )
    found = latest or carts.values_list("currency", flat=True).first()
    return found if found and money.is_currency(found) else DEFAULT_CURRENCY


def money_text(minor: int, currency: str) -> str:
    """``2000, "EUR"`` -> ``"20.00"``: minor units as the amount a merchant types."""
    places = money.exponent(currency)
    return f"{Decimal(int(minor)).scaleb(-places):.{places}f}"


def _bounds(db_field: Any) -> tuple[int | None, int | None]:
    """The (min, max) of a model field's value validators (including a database integer's
    range, which Django adds to the field's validators)."""
    low = high = None
    for validator in db_field.validators:
        if isinstance(validator, MinValueValidator):
            low = validator.limit_value if low is None else max(low, validator.limit_value)
        elif isinstance(validator, MaxValueValidator):
            high = validator.limit_value if high is None else min(high, validator.limit_value)
    return low, high


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_COMMA_DECIMALS = re.compile(r"[+-]?\d+,\d{1,4}")


def _places_text(places: int) -> str:
    return "no decimals" if places == 0 else f"{places} decimal{'s' if places > 1 else ''}"


class MoneyField(forms.Field):
    """An amount in the store's currency as a merchant types it ("20.00", "20", "20.00 EUR"),
    cleaned to integer minor units (2000). More decimals than the currency has are refused
    ("EUR has 2 decimals: 20.005"); bounds are in minor units and shown in the currency."""

    widget = forms.TextInput(attrs={"inputmode": "decimal", "size": 14})

    def __init__(
        self,
        *,
        title: str,
        min_minor: int | None = None,
        max_minor: int | None = None,
        empty_hint: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.min_minor, self.max_minor, self.empty_hint = min_minor, max_minor, empty_hint
        self.set_currency(DEFAULT_CURRENCY)

    @classmethod
    def for_model(cls, db_field: Any, *, title: str, **kwargs: Any) -> MoneyField:
        low, high = _bounds(db_field)
        kwargs.setdefault("required", not db_field.blank)
        return cls(title=title, min_minor=low, max_minor=high, **kwargs)

    def set_currency(self, currency: str) -> None:
        self.currency = currency
        self.label = f"{self.title} ({currency})"

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return money_text(value, self.currency)
        return value

    def _range_error(self, *, below: bool) -> ValidationError:
        bound = self.min_minor if below else self.max_minor
        assert bound is not None
        side = "at least" if below else "at most"
        return ValidationError(
            f"Enter {side} {money_text(bound, self.currency)} {self.currency}{self.empty_hint}.",
            code="min" if below else "max",
        )

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raw = str(value).strip()
        text = raw
        for affix in (self.currency, self.currency.lower()):
            text = text.removeprefix(affix).removesuffix(affix).strip()
        places = money.exponent(self.currency)
        example = money_text(2050 * 10 ** max(places - 2, 0), self.currency)
        if _COMMA_DECIMALS.fullmatch(text):
            raise ValidationError(
                f"Use a point for decimals: {text.replace(',', '.')} (not {raw}).", code="comma"
            )
        if len(text) > 40 or not _NUMBER.fullmatch(text):
            raise ValidationError(
                f"Enter an amount in {self.currency} such as {example}, without thousands "
                "separators.",
                code="invalid",
            )
        amount = Decimal(text)
        step = Decimal(1).scaleb(-places)
        if amount != amount.quantize(step):
            raise ValidationError(
                f"{self.currency} has {_places_text(places)}: {raw}.", code="decimals"
            )
        low = None if self.min_minor is None else Decimal(self.min_minor).scaleb(-places)
        high = None if self.max_minor is None else Decimal(self.max_minor).scaleb(-places)
        if low is not None and amount < low:
            raise self._range_error(below=True)
        if high is not None and amount > high:
            raise self._range_error(below=False)
        return int(amount.scaleb(places))


class PercentField(forms.Field):
    """A share typed as a percentage ("10" or "10%" for 10%), cleaned to a share (0.10): a
    ``Decimal`` with ``places`` decimals for a DecimalField, else a float. A value between 0 and
    1 is refused with the percentage it probably meant ("0.15 is less than 1%: for 15% enter
    15"), since shares used to be typed that way."""

    widget = forms.TextInput(attrs={"inputmode": "decimal", "size": 8})

    def __init__(
        self, *, low: int, high: int, share_places: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.low, self.high, self.share_places = low, high, share_places

    def _message(self) -> str:
        whole = "whole " if self.share_places is not None and self.share_places <= 2 else ""
        example = min(10, self.high)
        return (
            f"Enter a {whole}percentage from {self.low} to {self.high}, e.g. {example} for "
            f"{example}%."
        )

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (Decimal, float)) and not isinstance(value, bool):
            percent = (Decimal(repr(value)) if isinstance(value, float) else value) * 100
            text = f"{percent.normalize():f}"
            return text
        return value

    def to_python(self, value: Any) -> Decimal | float | None:
        if value in self.empty_values:
            return None
        if isinstance(value, (Decimal, float)):
            return value
        raw = str(value).strip()
        text = raw.removesuffix("%").strip()
        if len(text) > 20 or not _NUMBER.fullmatch(text):
            raise ValidationError(self._message(), code="invalid")
        percent = Decimal(text)
        if percent < self.low or percent > self.high:
            raise ValidationError(self._message(), code="range")
        if 0 < percent < 1:
            meant = f"{(percent * 100).normalize():f}"
            raise ValidationError(
                f"{self._message()} {raw} is less than 1%: for {meant}% enter {meant}.",
                code="share",
            )
        share = percent / 100
        if self.share_places is None:
            return float(share)
        step = Decimal(1).scaleb(-self.share_places)
        if share != share.quantize(step):
            raise ValidationError(self._message(), code="places")
        return share.quantize(step)


_UNIT_MINUTES = {"d": 1440, "h": 60, "m": 1}
_DURATION_PART = re.compile(
    r"\s*(\d+(?:\.\d+)?)\s*(days?|d|hours?|hrs?|h|minutes?|mins?|m)\s*", re.IGNORECASE | re.ASCII
)


def duration_text(minutes: int) -> str:
    """``1440`` -> ``"1d"``, ``90`` -> ``"1h 30m"``, ``0`` -> ``"0m"``: minutes as a merchant
    types them (DurationField reads it back)."""
    parts = []
    rest = int(minutes)
    for unit, size in _UNIT_MINUTES.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0m"


def minutes_words(minutes: int) -> str:
    """``10`` -> ``"10 minutes"``, ``1440`` -> ``"1 day"``, ``90`` -> ``"1 hour 30 minutes"``."""
    parts = []
    rest = int(minutes)
    for word, size in (("day", 1440), ("hour", 60), ("minute", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {word}{'s' if count != 1 else ''}")
    return " ".join(parts) or "0 minutes"


def parse_duration(text: str, *, unit: int = 1) -> int | None:
    """Minutes from ``"90m"``, ``"2h"``, ``"1d"``, ``"1.5h"``, ``"1d 12h"`` or ``"2 hours"``, or a
    number alone in ``unit`` minutes (``"90"`` is 90 minutes with the default unit, 90 hours with
    ``unit=60``); None if it is not a duration or not a whole number of minutes."""
    text = text.strip()
    if len(text) > 60 or not text:
        return None
    if text.isascii() and text.isdigit():
        return int(text) * unit
    if _DURATION_PART.sub("", text):
        return None
    total = Decimal(0)
    for number, part in _DURATION_PART.findall(text):
        total += Decimal(number) * _UNIT_MINUTES[part[0].lower()]
    return int(total) if total == total.to_integral_value() else None


# A stored duration's unit, in minutes: its name, and examples of what to type.
_UNITS = {
    1: ("minutes", "90m, 2h, 1d or 1d 12h"),
    60: ("hours", "12h, 2d or 1d 12h"),
    1440: ("days", "7d or 30d"),
}


class DurationField(forms.Field):
    """A duration typed with a unit ("90m", "2h", "1d", "1d 12h"), cleaned to whole ``unit``s of
    the column it is stored in (``unit`` minutes: 1 for minutes, 60 for hours, 1440 for days); a
    number alone is in that unit. Bounds are in the column's unit and shown as durations ("at
    most 366d")."""

    widget = forms.TextInput(attrs={"size": 10})

    def __init__(self, *, low: int | None, high: int | None, unit: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert unit in _UNITS, unit
        self.low, self.high, self.unit = low, high, unit

    @classmethod
    def for_model(
        cls, db_field: Any, *, unit: int = 1, longest: int | None = None, **kwargs: Any
    ) -> DurationField:
        """Bounds from the model field's validators (the column's range included), at most
        ``longest`` when given (a field whose model names no maximum)."""
        low, high = _bounds(db_field)
        if longest is not None:
            high = longest if high is None else min(high, longest)
        return cls(low=low, high=high, unit=unit, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return duration_text(value * self.unit)
        return value

    def _bound_text(self, bound: int) -> str:
        minutes = bound * self.unit
        return f"{duration_text(minutes)} ({minutes_words(minutes)})"

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        name, examples = _UNITS[self.unit]
        minutes = parse_duration(str(value), unit=self.unit)
        if minutes is None:
            whole = "" if self.unit == 1 else f"in whole {name} "
            raise ValidationError(
                f"Enter a duration {whole}such as {examples} (a number alone is {name}).",
                code="invalid",
            )
        count, rest = divmod(minutes, self.unit)
        if rest:
            raise ValidationError(
                f"Enter whole {name}, such as {examples}: {str(value).strip()} is "
                f"{minutes_words(minutes)}.",
                code="whole",
            )
        if self.low is not None and count < self.low:
            raise ValidationError(f"Enter at least {self._bound_text(self.low)}.", code="min")
        if self.high is not None and count > self.high:
            raise ValidationError(f"Enter at most {self._bound_text(self.high)}.", code="max")
        return count


_DURATION_HELP = "e.g. 30m, 2h, 1d or 1d 12h; a number alone is minutes."
_HOURS_HELP = "a number alone is hours."
_DAYS_HELP = "a number alone is days."


def _field(model: Any, name: str) -> Any:
    return model._meta.get_field(name)


class MerchantUnitsForm(forms.ModelForm):
    """Money fields labelled and typed in ``currency``; help texts escaped (the admin renders
    them as HTML, so "Name <address>" would lose its address)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A declared field gets no initial value from the model's default (Django takes it from
        # the model field's own form field): an add form would show these empty.
        for name, field in self.fields.items():
            if name in self.declared_fields and field.initial is None:
                try:
                    db_field = self._meta.model._meta.get_field(name)
                except FieldDoesNotExist:
                    continue
                if db_field.has_default():
                    field.initial = db_field.get_default()

    def set_currency(self, currency: str) -> None:
        self.currency = currency
        for field in self.fields.values():
            if isinstance(field, MoneyField):
                field.set_currency(currency)

    def _escape_help_texts(self) -> None:
        for field in self.fields.values():
            if field.help_text:
                field.help_text = conditional_escape(field.help_text)

    def _posted_store_id(self) -> int | None:
        """The store the form is about: the posted one when the user may pick it, else the
        instance's, else the initial one."""
        field = self.fields.get("store")
        candidates = []
        if self.is_bound:
            candidates.append(self.data.get(self.add_prefix("store")))
        candidates += [getattr(self.instance, "store_id", None), self.initial.get("store")]
        for candidate in candidates:
            try:
                store_id = int(candidate)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            queryset = getattr(field, "queryset", None)
            if queryset is None or queryset.filter(pk=store_id).exists():
                return store_id
        return None


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


class CampaignForm(MerchantUnitsForm):
    only_skus = LinesField(
        required=False, help_text="One SKU per line. Empty: carts with any products."
    )
    only_categories = LinesField(
        required=False, help_text="One category per line. Empty: carts with any products."
    )
    holdout_share = PercentField(
        low=0,
        high=50,
        share_places=2,
        label="Holdout (%)",
        help_text="Percentage of shoppers (0 to 50) who get nothing, the lift baseline: e.g. 10 "
        "for 10%.",
    )
    inactivity_minutes = DurationField.for_model(
        _field(Campaign, "inactivity_minutes"),
        label="Inactivity",
        help_text=f"A cart is abandoned after this long without shopper activity: {_DURATION_HELP}",
    )
    min_score = PercentField(
        low=0,
        high=100,
        label="Min score (%)",
        help_text="Enrol only carts at least this likely to be abandoned, as a percentage: e.g. "
        "30 for 30%.",
    )
    min_cart_value = MoneyField.for_model(
        _field(Campaign, "min_cart_value"),
        title="Min cart value",
        help_text="Enrol only carts worth at least this much, e.g. 20.00 (0: any).",
    )
    max_age_days = DurationField.for_model(
        _field(Campaign, "max_age_days"),
        unit=1440,
        label="Max age",
        help_text="Carts whose last activity is older than this when they qualify are recorded as "
        f"skipped (too old), never contacted: e.g. 7d; {_DAYS_HELP}",
    )
    shopper_cap_hours = DurationField.for_model(
        _field(Campaign, "shopper_cap_hours"),
        unit=60,
        label="One email per shopper in",
        help_text="At most one email per shopper in this long, across campaigns (0: no cap): "
        f"e.g. 12h or 1d; {_HOURS_HELP}",
    )
    attribution_hours = DurationField.for_model(
        _field(Campaign, "attribution_hours"),
        unit=60,
        label="Attribution window",
        help_text="An order this soon after a touch counts as recovered: e.g. 72h or 3d; "
        + _HOURS_HELP,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_currency(store_currency(self._posted_store_id()))
        self._escape_help_texts()

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


class DiscountAmountField(forms.CharField):
    """A discount's smallest or largest amount: percent points for a percentage discount, the
    store's currency for a fixed amount off; TierForm.clean converts it once the kind is known."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, max_length=40, **kwargs)
        self.widget.attrs.update({"inputmode": "decimal", "size": 10})


class TierForm(MerchantUnitsForm):
    delay_minutes = DurationField.for_model(
        _field(Tier, "delay_minutes"),
        label="Delay",
        help_text="After the cart is abandoned (each tier later than the last): " + _DURATION_HELP,
    )
    offer_ttl_minutes = DurationField.for_model(
        _field(Tier, "offer_ttl_minutes"),
        label="Offer valid for",
        help_text="How long an offer stays valid: " + _DURATION_HELP,
    )
    cooldown_hours = DurationField.for_model(
        _field(Tier, "cooldown_hours"),
        unit=60,
        label="Cooldown",
        help_text="At most one offer per cart in this long (0: no limit), e.g. 1h or 1d; "
        f"{_HOURS_HELP} An offer with a code waits at least an hour, and also per shopper and per "
        "client address.",
    )
    code_expiry_hours = DurationField.for_model(
        _field(Tier, "code_expiry_hours"),
        unit=60,
        longest=YEAR_HOURS,
        label="Code valid for",
        help_text=f"How long a code stays valid: e.g. 48h or 2d; {_HOURS_HELP}",
    )
    recent_code_days = DurationField.for_model(
        _field(Tier, "recent_code_days"),
        unit=1440,
        longest=YEAR_DAYS,
        label="Recent code window",
        help_text="A shopper who got a code this recently and abandons again gets the recent-code "
        f"policy: e.g. 30d; {_DAYS_HELP}",
    )
    min_score = PercentField(
        low=0,
        high=100,
        label="Min score (%)",
        help_text="Act only on carts at least this likely to be abandoned, as a percentage: e.g. "
        "50 for 50%.",
    )
    min_cart_value = MoneyField.for_model(
        _field(Tier, "min_cart_value"),
        title="Min cart value",
        help_text="Act only on carts worth at least this much, e.g. 20.00 (0: any).",
    )
    discount_cap = MoneyField.for_model(
        _field(Tier, "discount_cap"),
        title="Discount cap",
        empty_hint=", or leave it empty for no cap",
        help_text="Percentage discounts: the most one takes off, e.g. 20.00; fixed amounts: the "
        "largest allowed. Empty: no cap.",
    )
    discount_min = DiscountAmountField(
        label="Smallest discount",
        help_text="Percent for a percentage discount (e.g. 5), an amount for a fixed amount off "
        "(e.g. 5.00). 0: none.",
    )
    discount_max = DiscountAmountField(
        label="Largest discount",
        help_text="Percent for a percentage discount (e.g. 15), an amount for a fixed amount off "
        "(e.g. 10.00).",
    )

    def __init__(self, *args: Any, currency: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if currency is None:
            campaign = (
                getattr(self.instance, "campaign", None) if self.instance.campaign_id else None
            )
            currency = store_currency(campaign.store_id if campaign is not None else None)
        self.set_currency(currency)
        self._keep_stored_durations()
        for name in ("discount_min", "discount_max"):
            value = self.initial.get(name)
            if self.instance.offer_kind == Tier.OfferKind.FIXED_DISCOUNT and isinstance(value, int):
                self.initial[name] = money_text(value, currency)
        self._escape_help_texts()

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

    # What the template check reads: a saved tier none of them changed in is not checked again,
    # so a tier saved under older, looser rules never stops its campaign's save (pausing it
    # included); the worker renders it under the budget as before.
    _TEMPLATE_INPUTS = frozenset({"channel", "subject_template", "body_template"})

    def _keep_stored_durations(self) -> None:
        """A saved tier's duration beyond today's bound (saved before the bound existed) is kept
        as long as it is not changed: the bound widens to it, never further."""
        if self.instance.pk is None:
            return
        for name in ("code_expiry_hours", "recent_code_days"):
            field = self.fields.get(name)
            stored = getattr(self.instance, name, None)
            if (
                isinstance(field, DurationField)
                and isinstance(stored, int)
                and field.high is not None
                and stored > field.high
            ):
                field.high = stored

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        channel = cleaned.get("channel")
        self._clean_discount_amounts(cleaned)
        unchanged = self.instance.pk is not None and not (
            self._TEMPLATE_INPUTS & set(self.changed_data)
        )
        if channel in EMAIL_CHANNELS and not unchanged:
            # The checks of the code that sends: its engine (no {% load %}, {% include %} or
            # {% debug %}) and its sample carts, so what saves here also renders when it is due;
            # the discount's variables only where there is a discount.
            from campaigns.emails import template_errors

            errors = template_errors(
                subject_template=cleaned.get("subject_template") or "",
                body_template=cleaned.get("body_template") or "",
                channel=channel,
            )
            for name, problems in errors.items():
                for problem in problems:
                    self.add_error(name, problem)
        if channel == Tier.Channel.DISCOUNT:
            self._clean_discount(cleaned)
        return cleaned

    def set_currency(self, currency: str) -> None:
        super().set_currency(currency)
        for name, title in (("discount_min", "Smallest"), ("discount_max", "Largest")):
            if name in self.fields:
                self.fields[name].label = f"{title} discount (% or {currency})"

    def _clean_discount_amounts(self, cleaned: dict[str, Any]) -> None:
        """The smallest and largest discount in their kind's unit: money for a fixed amount off
        (to minor units), whole percent points otherwise."""
        fixed = cleaned.get("offer_kind") == Tier.OfferKind.FIXED_DISCOUNT
        for name in ("discount_min", "discount_max"):
            raw = cleaned.get(name)
            if raw in (None, ""):
                cleaned[name] = None
                continue
            low, high = _bounds(_field(Tier, name))
            try:
                if fixed:
                    field = MoneyField(title="", min_minor=low, max_minor=high)
                    field.set_currency(self.currency)
                    cleaned[name] = field.to_python(raw)
                else:
                    text = str(raw).strip().removesuffix("%").strip()
                    if not text.isdigit() or (high is not None and int(text) > high):
                        raise ValidationError(
                            f"Enter a whole percentage such as 10 (not {raw}); for a fixed "
                            f"amount off, choose that kind and enter an amount in {self.currency}."
                        )
                    cleaned[name] = int(text)
            except ValidationError as exc:
                self.add_error(name, exc)

    def _amount(self, value: int, kind: str) -> str:
        if kind == Tier.OfferKind.PERCENT_DISCOUNT:
            return f"{value} percent"
        return f"{money_text(value, self.currency)} {self.currency}"

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
        for name, value in (("discount_min", low), ("discount_max", high)):
            if value is None and name not in self.errors:
                self.add_error(name, f"Required for a {Tier.OfferKind(kind).label}.")
        if low is not None and high is not None and low > high:
            self.add_error(
                "discount_min",
                f"The smallest discount ({self._amount(low, kind)}) must not exceed the largest "
                f"({self._amount(high, kind)}).",
            )
        if kind == Tier.OfferKind.PERCENT_DISCOUNT:
            if high is not None and high > MAX_PERCENT:
                self.add_error(
                    "discount_max", f"A percentage discount is at most {MAX_PERCENT}% (not {high})."
                )
        elif cap is not None and high is not None and high > cap:
            self.add_error(
                "discount_max",
                "A fixed discount must not exceed the cap: the largest discount "
                f"({self._amount(high, kind)}) is more than the cap ({self._amount(cap, kind)}).",
            )


class TierFormSet(BaseInlineFormSet):
    """The campaign's tiers: unique positions, delays increasing with position, and at least one
    tier when the campaign is active."""

    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        # Every tier's money is in the campaign's store's currency (store_currency).
        if not hasattr(self, "_currency"):
            self._currency = store_currency(getattr(self.instance, "store_id", None))
        return {**super().get_form_kwargs(index), "currency": self._currency}

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
                f"Tier {pos} must come after tier {prev_pos}: its delay ({minutes_words(delay)}) "
                f"must be more than tier {prev_pos}'s ({minutes_words(prev_delay)}).",
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


class CampaignSettingsForm(MerchantUnitsForm):
    onsite_discount_per_day = MoneyField.for_model(
        _field(CampaignSettings, "onsite_discount_per_day"),
        title="On-site discount per day",
        required=False,
        help_text="At most this much discount in new on-site codes in any 24 hours, e.g. "
        "1000.00 (each code counts what it takes off the cart it was made for; free shipping "
        "counts 0). Empty: the default.",
    )

    store_locale = forms.CharField(
        required=False,
        max_length=_field(Store, "locale").max_length,
        validators=[money.locale_validate],
        label="Money format (locale)",
        help_text="How money is written for this store, e.g. en-GB, de-DE or fr-FR: 1.238,01 € "
        "in de-DE. Empty: English, €1,238.01.",
    )

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
        store_id = self._posted_store_id()
        self.set_currency(store_currency(store_id))
        # The store's own setting (Store.locale), which the admin saves when it changed: shown
        # for the store the page is about; once posted, compared with the saved store's (an add
        # form's with nothing, so that there an empty field keeps the store's locale).
        shown = self.instance.store_id if self.is_bound else store_id
        if shown is not None:
            locale = Store.objects.filter(pk=shown).values_list("locale", flat=True).first()
            self.initial.setdefault("store_locale", locale or "")
        self._escape_help_texts()

    def clean_store_locale(self) -> str:
        return money.locale_tag(self.cleaned_data.get("store_locale") or "")

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
