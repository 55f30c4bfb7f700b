"""A guard on personal data in the log (issue 13, carts/pii.py): every field an event can carry,
in its payload (every event type's schema, old versions included), its shopper envelope, or a
platform's webhook as the adapters read it, is either sealed with the shopper's key or listed
here as not personal. A new field (a ``name``, an ``address``, an ``ip``) fails this test until
it is sealed (``pii.pii_fields_register``) or, having been judged not personal, listed below.

Pure: no database.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from typing_extensions import is_typeddict

from carts import event_types, pii
from carts.apis import ShopperIn
from integrations import facts

# Payload fields judged not personal, per event type ("a.b": field b of the object in field a).
# Free text among them is the shop's own: product names, categories, URLs, coupon codes, order ids.
NOT_PERSONAL: dict[str, set[str]] = {
    "cart.item_added": {
        "sku",
        "name",  # the product's name, not the shopper's
        "quantity",
        "unit_price",
        "price",  # v1
        "currency",
        "category",
        "url",
        "image_url",
    },
    "cart.item_removed": {"sku", "quantity"},
    "cart.item_quantity_changed": {"sku", "quantity"},
    "page.viewed": {"url", "page_type", "sku", "dwell_ms", "device"},
    "checkout.started": set(),
    "checkout.contact_captured": {
        "consent",
        "consent.email",
        "consent.sms",
        "timezone",
        "locale",
    },
    "checkout.shipping_quoted": {"amount", "currency"},
    "coupon.rejected": {"code", "reason"},
    "shopper.exit_intent": {"trigger"},
    "order.placed": {"order_id", "total", "currency", "coupon"},
    "order.refunded": {"order_id", "amount", "currency"},
}
# The shopper envelope (``shopper`` of every event): the shop's own pseudonym, the shopper's
# time zone and language.
ENVELOPE_NOT_PERSONAL = {"id", "timezone", "locale"}

# What the platforms' adapters read out of a webhook (integrations/facts.py), by class: the fields
# sealed once they are events (the contact's email and phone), and those judged not personal.
FACTS_SEALED = {"Contact": {"email", "phone"}}
FACTS_NOT_PERSONAL: dict[str, set[str]] = {
    "Line": {"sku", "name", "quantity", "unit_price", "url", "image_url"},
    "Contact": {"accepts_marketing", "locale"},
    "CheckoutSnapshot": {
        "refs",
        "updated_at",
        "currency",
        "lines",
        "contact",
        "checkout",
        "restore_url",
        "completed",
    },
    "CheckoutDeleted": {"refs"},
    "OrderPlaced": {
        "refs",
        "order_id",
        "total",
        "currency",
        "placed_at",
        "discount_codes",
        "contact",
        "lines",
    },
    "OrderRefunded": {"refs", "order_id", "amount", "currency", "refund_id", "refunded_at"},
    "Ignored": {"reason"},
    "Delivery": {"delivery_id", "topic", "facts", "recorded"},
}


def _fields(schema: type, prefix: str = "") -> set[str]:
    """Every field of a TypedDict, those of the objects in it as "field.subfield"."""
    hints = typing.get_type_hints(schema)  # Annotated and NotRequired stripped
    found: set[str] = set()
    for name in schema.__required_keys__ | schema.__optional_keys__:  # type: ignore[attr-defined]
        found.add(prefix + name)
        for nested in _typeddicts(hints[name]):
            found |= _fields(nested, f"{prefix}{name}.")
    return found


def _typeddicts(hint: Any) -> list[type]:
    """The TypedDicts a field's type holds: itself, or inside a list, a union, a dict's values."""
    if is_typeddict(hint):
        return [hint]
    return [t for arg in typing.get_args(hint) for t in _typeddicts(arg)]


def _schemas(event_type: event_types.EventType) -> list[type]:
    current = [] if event_type.schema is None else [event_type.schema]
    return current + list(event_type.old_schemas.values())


def _sealed(type_name: str) -> set[str]:
    spec = pii.PAYLOAD_FIELDS.get(type_name)
    return set() if spec is None else set(spec.fields)


def _unjudged() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(fields neither sealed nor listed, fields both sealed and listed), by event type."""
    unjudged: dict[str, set[str]] = {}
    both: dict[str, set[str]] = {}
    for name, event_type in event_types.REGISTRY.items():
        fields = {f for schema in _schemas(event_type) for f in _fields(schema)}
        sealed, listed = _sealed(name), NOT_PERSONAL.get(name, set())
        if fields - sealed - listed:
            unjudged[name] = fields - sealed - listed
        if sealed & listed:
            both[name] = sealed & listed
    return unjudged, both


def test_every_payload_field_is_sealed_or_judged_not_personal():
    unjudged, both = _unjudged()
    assert unjudged == {}, "seal these (pii.pii_fields_register) or list them as not personal"
    assert both == {}, "a field is either sealed or not personal"


def test_the_allow_list_names_only_fields_that_exist():
    stale = {
        name: listed - {f for s in _schemas(event_types.REGISTRY[name]) for f in _fields(s)}
        for name, listed in NOT_PERSONAL.items()
    }
    assert {name: extra for name, extra in stale.items() if extra} == {}


def test_every_event_type_a_client_may_post_has_a_schema_to_check():
    # A payload without a schema is stored as it came: it could carry anything. Only what the
    # system appends itself may go without (its data is made by our code, never a client's).
    unchecked = [name for name, t in event_types.REGISTRY.items() if t.schema is None]
    # the system's own types are registered (campaign.*, recovery.*)
    assert {n.partition(".")[0] for n in unchecked} >= {"campaign", "recovery", "shopper"}
    for name in unchecked:
        assert not event_types.REGISTRY[name].client_may_post, name
        assert name.startswith(event_types.SYSTEM_NAMESPACES) or name == "shopper.erased", name
    assert set(NOT_PERSONAL) == {n for n, t in event_types.REGISTRY.items() if t.schema}


def test_the_sealed_fields_are_the_contacts_email_and_phone_and_the_envelopes_email():
    assert pii.PAYLOAD_FIELDS["checkout.contact_captured"].fields == ("email", "phone")
    assert pii.PAYLOAD_FIELDS["checkout.contact_captured"].subject == "email"
    assert "email" in pii.SHOPPER_FIELDS
    # every sealed field is a field of its type's schema (a renamed field is not left in clear)
    for name, spec in pii.PAYLOAD_FIELDS.items():
        schema_fields = {f for s in _schemas(event_types.REGISTRY[name]) for f in _fields(s)}
        assert set(spec.fields) <= schema_fields, name


def test_every_envelope_field_is_sealed_or_judged_not_personal():
    fields = _fields(ShopperIn)
    assert fields - set(pii.SHOPPER_FIELDS) - ENVELOPE_NOT_PERSONAL == set()
    assert set(pii.SHOPPER_FIELDS) <= fields
    assert fields >= ENVELOPE_NOT_PERSONAL
    assert not set(pii.SHOPPER_FIELDS) & ENVELOPE_NOT_PERSONAL


def test_every_field_the_platform_adapters_read_is_sealed_or_judged_not_personal():
    classes = {
        name: cls
        for name, cls in vars(facts).items()
        if dataclasses.is_dataclass(cls) and cls.__module__ == facts.__name__
    }
    assert {"Contact", "Line", "CheckoutSnapshot", "OrderPlaced"} <= set(classes)
    found = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in classes.items()}
    judged = {
        name: FACTS_SEALED.get(name, set()) | FACTS_NOT_PERSONAL.get(name, set()) for name in found
    }
    assert {name: found[name] - judged[name] for name in found if found[name] - judged[name]} == {}
    assert {name: judged[name] - found[name] for name in found if judged[name] - found[name]} == {}
    # a contact's sealed fields become the sealed fields of checkout.contact_captured
    assert FACTS_SEALED["Contact"] <= _sealed("checkout.contact_captured")


def test_a_new_personal_field_fails_the_guard_until_it_is_sealed(monkeypatch):
    # The guard itself: a contact given a ``name`` and an ``ip`` is caught, and passes once
    # they are sealed.
    class WithName(typing.TypedDict):
        email: str
        name: str
        ip: str

    contact = event_types.REGISTRY["checkout.contact_captured"]
    monkeypatch.setitem(
        event_types.REGISTRY,
        contact.name,
        dataclasses.replace(contact, schema=WithName),
    )
    assert _unjudged() == ({contact.name: {"name", "ip"}}, {})
    monkeypatch.setitem(
        pii.PAYLOAD_FIELDS, contact.name, pii.PiiFields(("email", "name", "ip"), "email")
    )
    assert _unjudged() == ({}, {})
