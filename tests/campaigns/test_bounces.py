"""Bounces and complaints from an email provider: Postmark's tracking webhook, posted as Postmark
posts it (JSON with HTTP basic auth; the payloads are Postmark's documented bounce and spam
complaint webhooks), through anymail's view mounted at /webhooks/email/ (campaigns/webhooks.py,
campaigns/bounces.py)."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from campaigns import bounces, rules, steps
from campaigns.models import Step, Suppression
from carts import identity
from carts.models import CartEvent
from tests.campaigns.conftest import T0

URL = "/webhooks/email/postmark/tracking/"
SECRET = "postmark-hook:8Jx2pQv9LmZt"

# https://postmarkapp.com/developer/webhooks/bounce-webhook (the example payload), for a message
# sent with the step's metadata.
HARD_BOUNCE: dict[str, Any] = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "Invitation",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {},
    "ServerID": 23,
    "Description": (
        "The server was unable to deliver your message (ex: unknown user, mailbox not found)."
    ),
    "Details": "Test bounce details",
    "Email": "jane.doe@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2019-11-05T16:33:54.9070259Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Test subject",
    "Content": "<Full dump of bounce>",
}
SOFT_BOUNCE = {
    **HARD_BOUNCE,
    "ID": 4323372036854775808,
    "Type": "SoftBounce",
    "TypeCode": 4096,
    "Name": "Soft bounce/Undeliverable",
    "Description": "Unable to temporarily deliver this email.",
    "Inactive": False,
}
# https://postmarkapp.com/developer/webhooks/spam-complaint-webhook
COMPLAINT: dict[str, Any] = {
    **HARD_BOUNCE,
    "RecordType": "SpamComplaint",
    "ID": 42,
    "Type": "SpamComplaint",
    "TypeCode": 512,
    "Name": "Spam complaint",
    "Description": "",
    "Details": "Test spam complaint details",
    "CanActivate": False,
    "Content": "<Abuse report dump>",
}

JANE = identity.shopper_key(
    shopper_id=None, email_sha256=identity.email_digest("jane.doe@example.com")
)


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": [SECRET]}


def _about(payload: dict[str, Any], step: Step) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    out["Metadata"] = {"campaign_link": str(step.link_id)}
    return out


def _post(client, payload: dict[str, Any], auth: str | None = SECRET):
    headers = {}
    if auth is not None:
        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return client.post(URL, data=json.dumps(payload), content_type="application/json", **headers)


def _campaign_events(store) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.cart, e.type, e.data)
        for e in CartEvent.objects.filter(store=store, type__startswith="campaign.").order_by(
            "position"
        )
    ]


def _suppressions(store) -> list[tuple[str, str]]:
    return sorted(Suppression.objects.filter(store=store).values_list("shopper", "kind"))


def test_a_hard_bounce_suppresses_the_address_and_skips_its_open_email_steps(
    client, store, shop_cart, campaign_step
):
    # given a step whose email went out, and another open email step to the same address
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)
    later = campaign_step(shop_cart(store.pk, "cart-2"), status=Step.Status.PENDING)

    # when Postmark posts the hard bounce of the sent one
    response = _post(client, _about(HARD_BOUNCE, sent))

    # then the address is suppressed, the event is on the step's cart, the open step skipped
    assert response.status_code == 200
    assert _suppressions(store) == [(JANE, "bounced")]
    [bounced, skipped] = _campaign_events(store)
    assert bounced[:2] == ("cart-1", "campaign.email_bounced")
    assert bounced[2]["step"] == sent.pk
    assert bounced[2]["permanent"] is True
    assert bounced[2]["provider"] == "Postmark"
    assert bounced[2]["response"] == "Test bounce details"
    assert skipped[:2] == ("cart-2", "campaign.step_skipped")
    assert (skipped[2]["step"], skipped[2]["reason"]) == (later.pk, "bounced")
    later.refresh_from_db()
    assert (later.status, later.reason) == (Step.Status.SKIPPED, "bounced")


def test_after_a_hard_bounce_a_later_step_to_that_address_is_skipped_when_it_runs(
    client, store, shop_cart, campaign_step
):
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)
    assert _post(client, _about(HARD_BOUNCE, sent)).status_code == 200
    # a cart enrolled after the bounce, its step due and handed to a worker
    step = campaign_step(shop_cart(store.pk, "cart-3"), status=Step.Status.ENQUEUED)

    steps.steps_execute(step_ids=[step.pk], now=lambda: T0 + timedelta(hours=2))

    step.refresh_from_db()
    assert (step.status, step.reason) == (Step.Status.SKIPPED, "bounced")
    assert step.message_id == ""


def test_a_complaint_suppresses_the_address(client, store, shop_cart, campaign_step):
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)
    later = campaign_step(shop_cart(store.pk, "cart-2"), status=Step.Status.PENDING)

    assert _post(client, _about(COMPLAINT, sent)).status_code == 200

    assert _suppressions(store) == [(JANE, "complained")]
    assert [(cart, type_) for cart, type_, _ in _campaign_events(store)] == [
        ("cart-1", "campaign.email_complained"),
        ("cart-2", "campaign.step_skipped"),
    ]
    later.refresh_from_db()
    assert (later.status, later.reason) == (Step.Status.SKIPPED, "complained")


def test_a_soft_bounce_is_recorded_and_suppresses_nothing(client, store, shop_cart, campaign_step):
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)
    later = campaign_step(shop_cart(store.pk, "cart-2"), status=Step.Status.PENDING)

    assert _post(client, _about(SOFT_BOUNCE, sent)).status_code == 200

    assert _suppressions(store) == []
    [(cart, type_, data)] = _campaign_events(store)
    assert (cart, type_, data["permanent"]) == ("cart-1", "campaign.email_bounced", False)
    later.refresh_from_db()
    assert later.status == Step.Status.PENDING


@pytest.mark.parametrize(
    "auth", [None, "postmark-hook:wrong", "someone:8Jx2pQv9LmZt"], ids=["none", "bad", "user"]
)
def test_a_post_without_the_right_basic_auth_stores_nothing(
    client, store, shop_cart, campaign_step, auth
):
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)

    response = _post(client, _about(HARD_BOUNCE, sent), auth=auth)

    assert response.status_code == 400  # anymail: SuspiciousOperation
    assert _suppressions(store) == []
    assert _campaign_events(store) == []


def test_without_a_webhook_secret_the_webhooks_are_off(
    client, settings, store, shop_cart, campaign_step
):
    settings.ANYMAIL = {"WEBHOOK_SECRET": []}
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)

    assert _post(client, _about(HARD_BOUNCE, sent), auth=None).status_code == 404
    assert _post(client, _about(HARD_BOUNCE, sent)).status_code == 404
    assert _suppressions(store) == []


def test_a_retried_webhook_is_recorded_once(client, store, shop_cart, campaign_step):
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)
    soft = campaign_step(shop_cart(store.pk, "cart-2"), status=Step.Status.SENT)

    for _ in range(2):
        assert _post(client, _about(HARD_BOUNCE, sent)).status_code == 200
        assert _post(client, _about(SOFT_BOUNCE, soft)).status_code == 200

    assert _suppressions(store) == [(JANE, "bounced")]
    assert sorted((cart, type_) for cart, type_, _ in _campaign_events(store)) == [
        ("cart-1", "campaign.email_bounced"),
        ("cart-2", "campaign.email_bounced"),
    ]


def test_a_report_about_a_message_not_ours_stores_nothing(client, store, shop_cart, campaign_step):
    campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)

    assert _post(client, HARD_BOUNCE).status_code == 200  # no metadata: someone else's mail
    unknown = {**HARD_BOUNCE, "Metadata": {"campaign_link": "4f1e3c1e-0000-4000-8000-000000000000"}}
    assert _post(client, unknown).status_code == 200

    assert _suppressions(store) == []
    assert _campaign_events(store) == []


def test_a_report_names_its_step_by_metadata_or_by_our_message_id(store, shop_cart, campaign_step):
    step = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)

    def report(**fields: Any) -> bounces.ProviderReport:
        return bounces.ProviderReport(esp="Mailgun", event_type="bounced", **fields)

    assert bounces.report_step(report(metadata={"campaign_link": str(step.link_id)})) == step
    assert bounces.report_step(report(message_id=f"<step-{step.pk}.{store.pk}@shop>")) == step
    assert bounces.report_step(report(message_id=f"step-{step.pk}.{store.pk}@shop")) == step
    assert bounces.report_step(report(message_id=f"<step-{step.pk}.{store.pk + 1}@x>")) is None
    assert bounces.report_step(report(metadata={"campaign_link": "not-a-uuid"})) is None
    assert bounces.report_step(report(message_id="<20261127.abc@mailgun.org>")) is None


@pytest.mark.parametrize(
    ("esp", "raw", "expected"),
    [
        ("Postmark", {"Type": "HardBounce", "Inactive": True}, bounces.HARD),
        ("Postmark", {"Type": "SoftBounce", "Inactive": False}, bounces.SOFT),
        ("Postmark", {"Type": "SoftBounce", "Inactive": True}, bounces.HARD),
        ("Amazon SES", {"bounce": {"bounceType": "Permanent"}}, bounces.HARD),
        ("Amazon SES", {"bounce": {"bounceType": "Transient"}}, bounces.SOFT),
        ("SendGrid", {"event": "bounce", "type": "bounce"}, bounces.HARD),
        ("SendGrid", {"event": "bounce", "type": "blocked"}, bounces.SOFT),
        ("Mailgun", {"event": "failed", "severity": "permanent"}, bounces.HARD),
    ],
)
def test_bounce_severity(esp, raw, expected):
    report = bounces.ProviderReport(esp=esp, event_type="bounced", raw=raw)
    assert bounces.bounce_severity(report) == expected


@pytest.mark.parametrize("kind", [rules.BOUNCED, rules.COMPLAINED])
def test_a_bounced_or_complained_address_gets_no_email_but_the_onsite_nudge_still_runs(kind):
    from tests.campaigns.test_rules import FACTS, NOW  # the rule tests' eligible email step

    suppressed = replace(FACTS, suppressions=frozenset({kind}))
    assert rules.step_decide(suppressed, NOW) == rules.Outcome(rules.SKIP, kind)
    onsite = replace(suppressed, channel="onsite")
    assert rules.step_decide(onsite, NOW) == rules.Outcome(rules.SEND, "eligible")


def test_a_report_that_cannot_be_recorded_is_logged_and_the_post_still_answers_200(
    client, store, shop_cart, campaign_step, monkeypatch, caplog
):
    # A provider batches many reports in one post: one that cannot be recorded (the database
    # refusing it, a bug) must not make the provider retry or drop the others.
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)

    def broken(**kwargs):
        raise RuntimeError("cannot record")

    monkeypatch.setattr(bounces, "provider_report_record", broken)
    response = _post(client, _about(HARD_BOUNCE, sent))

    assert response.status_code == 200
    assert "recording Postmark's bounced report failed" in caplog.text
    assert _suppressions(store) == []


def test_the_providers_texts_are_stored_without_the_recipients_address(
    client, store, shop_cart, campaign_step
):
    sent = campaign_step(shop_cart(store.pk, "cart-1"), status=Step.Status.SENT)
    payload = _about(HARD_BOUNCE, sent)
    payload["Details"] = "smtp;550 5.1.1 <jane.doe@example.com>: Recipient address rejected"
    payload["Description"] = "Mailbox jane.doe@example.com not found"

    assert _post(client, payload).status_code == 200

    [bounced, *_] = _campaign_events(store)
    assert bounced[2]["response"] == "smtp;550 5.1.1 <<address>>: Recipient address rejected"
    assert "@" not in json.dumps(bounced[2])
