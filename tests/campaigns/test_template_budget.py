"""Merchants' email templates cannot exhaust the workers (security review 2, finding 10): an
allow-list of tags and filters, loops over ``items`` only and at most two deep, and a budget of
output and time for every render, at save (a clear admin error) and at send (the step fails)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from campaigns import clock, emails, enrolment, steps
from campaigns.models import Campaign, Step
from carts import services
from carts.models import CartEvent
from carts.sources import Source
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned
from tests.campaigns.test_admin import (
    CHANGELIST,
    logged_in,
    make_campaign,
    make_store,
    make_user,
    post_add,
    tier_errors,
)
from tests.conftest import item, new_event

LOREM = "{% lorem 300000 w random %}"
SIX_LOOPS = "".join(f"{{% for {v} in '0123456789' %}}" for v in "abcdef") + "x" + "{% endfor %}" * 6
# 40 characters for each pair of the cart's lines
PAIRS = "{% for a in items %}{% for b in items %}" + "0123456789" * 4 + "{% endfor %}{% endfor %}"
SAMPLE = emails._sample_contexts()[0]  # the admin check's sample cart (two items, a code)


def _errors(body: str, subject: str = "Hi", channel: str = "discount") -> dict[str, list[str]]:
    """The check of a discount tier's templates (every variable known, a sample code)."""
    return emails.template_errors(subject_template=subject, body_template=body, channel=channel)


# Refused at save, at once -------------------------------------------------------------------------


def test_the_reviews_payloads_are_refused_by_the_check_well_under_a_second():
    started = time.monotonic()
    lorem, loops = _errors(LOREM), _errors(SIX_LOOPS)
    elapsed = time.monotonic() - started

    assert lorem == {
        "body_template": [
            "This template does not compile: The {% lorem %} tag on line 1 is not allowed in "
            "emails."
        ]
    }
    assert loops == {
        "body_template": [
            "This template does not compile: {% for %} loops nest at most 2 deep in emails "
            "(line 1)."
        ]
    }
    assert elapsed < 0.5  # the review measured 0.29 s and 12.3 s per render, four renders each


def test_the_admin_refuses_the_reviews_payloads_with_a_message_on_the_field(db):
    shop = make_store("Shop")
    merchant = logged_in(make_user("merchant", store=shop))
    tiers = [
        {"position": "1", "channel": "email", "delay_minutes": "60", "body_template": LOREM},
        {"position": "2", "channel": "email", "delay_minutes": "120", "body_template": SIX_LOOPS},
    ]

    started = time.monotonic()
    response = post_add(merchant, shop, tiers)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert tier_errors(response) == [_errors(LOREM), _errors(SIX_LOOPS)]
    assert elapsed < 2  # the whole admin request, where one render used to take 12 s
    assert not Campaign.objects.filter(store=shop).exists()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{% url 'admin:index' %}", "The {% url %} tag on line 1 is not allowed in emails."),
        ("\n{% now 'Y' %}", "The {% now %} tag on line 2 is not allowed in emails."),
        ("{% csrf_token %}", "The {% csrf_token %} tag on line 1 is not allowed in emails."),
        ("{% cycle 'a' 'b' %}", "The {% cycle %} tag on line 1 is not allowed in emails."),
        ("{% ssi '/etc/passwd' %}", "The {% ssi %} tag on line 1 is not allowed in emails."),
        ("{% widthratio 1 2 3 %}", "The {% widthratio %} tag on line 1 is not allowed in emails."),
        (
            "{% autoescape off %}{{ x }}{% endautoescape %}",
            "The {% autoescape %} tag on line 1 is not allowed in emails: item names come from "
            "shoppers and stay escaped.",
        ),
        ("{% nosuchtag %}", "Invalid block tag on line 1: 'nosuchtag'."),
        (
            "{{ items.0.name|safe }}",
            "The |safe filter is not allowed in emails: item names come from shoppers and stay "
            "escaped.",
        ),
        ("{{ code|ljust:'1000000000' }}", "The |ljust filter is not allowed in emails."),
        (
            "{{ code|stringformat:'999999999s' }}",
            "The |stringformat filter is not allowed in emails.",
        ),
        ("{{ items|join:', ' }}", "The |join filter is not allowed in emails."),
        (
            "{% for a in items %}{% for b in items %}{% for c in items %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "{% for %} loops nest at most 2 deep in emails (line 1).",
        ),
        (
            "{% for c in code %}{{ c }}{% endfor %}",
            "{% for %} loops go over items only in emails (the one on line 1 goes over 'code').",
        ),
        (
            "{% for c in items|first %}{{ c }}{% endfor %}",
            "{% for %} loops go over items only in emails (the one on line 1 goes over "
            "'items|first').",
        ),
        (
            "{% with items=code %}{% for c in items %}{% endfor %}{% endwith %}",
            "{{ items }} cannot be given another value in emails.",
        ),
        ("{% firstof code as items %}", "{{ items }} cannot be given another value in emails."),
        ("{% if a %}" * 9 + "{% endif %}" * 9, "Tags nest at most 8 deep in emails (line 1)."),
        # Deeper than Python's recursion limit could go, refused before it is reached.
        ("{% if a %}" * 400 + "{% endif %}" * 400, "Tags nest at most 8 deep in emails (line 1)."),
    ],
)
def test_what_emails_do_not_allow_is_refused_naming_the_tag_or_filter(body, problem):
    assert _errors(body) == {"body_template": [f"This template does not compile: {problem}"]}


def test_a_precision_no_email_needs_fails_for_the_sample_cart():
    assert _errors("{{ items|length|floatformat:'999999999' }}") == {
        "body_template": [
            "This template fails for a sample cart: floatformat shows at most 10 decimal places "
            "in emails."
        ]
    }


# Allowed ------------------------------------------------------------------------------------------


def test_the_allowed_tags_and_filters_render_as_django_renders_them():
    body = (  # ``nothing`` is bound empty: a name outside the context would be refused
        "{% with nothing='' %}"
        "{% for item in items|dictsort:'name' %}{% if forloop.first %}First: "
        "{% elif forloop.last %} Last: {% endif %}{{ item.name|upper|truncatechars:8 }}"
        "{% empty %}none{% endfor %}\n"
        "{% with n=items|length %}{{ n }} item{{ n|pluralize }}{% endwith %}, "
        "{% firstof nothing code %}, {% filter lower %}SHOUT{% endfilter %}, "
        "{% spaceless %}<p> <b>x</b> </p>{% endspaceless %}, "
        "{% verbatim %}{{ raw }}{% endverbatim %}{% templatetag openblock %}"
        "{% comment %}{% lorem %}{% endcomment %}\n"
        "{{ 2|add:3 }}|{{ code|add:code }}|{{ nothing|default:'friend' }}|"
        "{{ cart_value|cut:'€' }}|{{ items.0.name|yesno:'y,n' }}|{{ items.1.name }}"
        "{% endwith %}"
    )

    assert _errors(body) == {}
    assert emails._render(body, SAMPLE, autoescape=True, field="body") == (
        "First: POUR-OV… Last: STONEWA…\n"
        "2 items, SAMPLE-7K2M9Q, shout, <p><b>x</b></p>, {{ raw }}{%\n"
        "5||friend|60.48|y|Pour-over coffee kit"
    )


def test_the_default_templates_pass_the_check():
    from campaigns.models import Tier

    # on both channels that send email: an email tier's default body tests {% if code %}
    for channel in (Tier.Channel.EMAIL, Tier.Channel.DISCOUNT):
        assert _errors(Tier().body_template, Tier().subject_template, channel) == {}


# The budget ---------------------------------------------------------------------------------------


def test_a_subject_over_its_budget_for_the_sample_cart_is_refused_by_the_admin(db):
    # given a subject of 71 characters that writes each item's details for each item: four
    # times about 300 characters for the sample cart, past a subject's 1,000
    shop = make_store("Shop")
    merchant = logged_in(make_user("merchant", store=shop))
    subject = "{% for a in items %}{% for b in items %}{{ a }}{% endfor %}{% endfor %}"
    tier = {"position": "1", "channel": "email", "delay_minutes": "60", "subject_template": subject}

    response = post_add(merchant, shop, [tier])

    assert response.status_code == 200
    assert tier_errors(response) == [
        {
            "subject_template": [
                "This template is refused: for a sample cart, it writes more than 1,000 "
                "characters (a subject's limit)."
            ]
        }
    ]
    assert not Campaign.objects.filter(store=shop).exists()


def test_a_render_stops_at_its_time_budget_even_when_it_writes_nothing():
    # given a check-passing template that loops over every pair of a 3,000-line cart (nine
    # million iterations: seconds of a worker without a budget), writing nothing
    body = "{% for a in items %}{% for b in items %}{% endfor %}{% endfor %}"
    assert _errors(body) == {}
    context = {**SAMPLE, "items": [{"name": f"Item {i}"} for i in range(3000)]}

    started = time.monotonic()
    with pytest.raises(emails.TemplateOverBudget) as raised:
        emails._render(body, context, autoescape=True, field="body")
    elapsed = time.monotonic() - started

    assert (
        str(raised.value)
        == "The body template is over budget: it takes more than 200 ms to render."
    )
    assert emails.RENDER_SECONDS <= elapsed < 1


def test_output_is_counted_as_it_is_written_not_after(monkeypatch):
    # given a budget of a minute, and a loop that writes 40 characters per pair of lines
    monkeypatch.setattr(emails, "RENDER_SECONDS", 60)
    body = PAIRS
    context = {**SAMPLE, "items": [{}] * 3000}  # 360 MB if written in full

    started = time.monotonic()
    with pytest.raises(emails.TemplateOverBudget) as raised:
        emails._render(body, context, autoescape=False, field="body")

    assert raised.value.reason == "it writes more than 100,000 characters (a body's limit)"
    assert time.monotonic() - started < 1


# At send time ---------------------------------------------------------------------------------


T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ACTIVATED = T - timedelta(days=1)


def _cart_of_lines(store_id: int, token: str, lines: int) -> None:
    events = [
        new_event("cart.item_added", token, item(sku=f"SKU-{i}"), at=T - timedelta(minutes=2))
        for i in range(lines)
    ]
    contact = {"email": f"{token}@example.com", "consent": {"email": True}}
    events.append(new_event("checkout.contact_captured", token, contact, at=T))
    services.events_append(
        store_id=store_id, events=events, source=Source.server("test"), now=clock.server(T)
    )


def test_a_template_over_its_budget_at_send_time_fails_its_step_alone(
    store, mailoutbox, django_capture_on_commit_callbacks
):
    # given a tier whose body writes 40 characters for each pair of the cart's lines: 160 for
    # the check's two-line sample cart, 144,000 for a cart of 60 lines
    body = PAIRS
    assert _errors(body) == {}
    tier = {"channel": "email", "delay_minutes": 0, "body_template": body}
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, tiers=[tier])
    cart_abandoned(store.pk, at=T, token="a-small", email="small@example.com")
    _cart_of_lines(store.pk, "b-large", 60)
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30)) == 2
    run_at = T + timedelta(minutes=31)
    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        steps.due_steps_enqueue(now=run_at, publish=published.append)
    [batch] = published

    # when the batch runs
    started = time.monotonic()
    result = steps.steps_execute(step_ids=batch, now=lambda: run_at)

    # then the small cart's email went out; the large cart's step failed for good, with the
    # budget named, and quickly
    assert time.monotonic() - started < 5
    assert result == {"sent": 1, "failed": 1}
    assert [m.to for m in mailoutbox] == [["small@example.com"]]
    assert dict(Step.objects.filter(store=store).values_list("cart", "status")) == {
        "a-small": "sent",
        "b-large": "failed",
    }
    [failure] = CartEvent.objects.filter(
        store=store, cart="b-large", type="campaign.step_failed"
    ).values_list("data", flat=True)
    assert failure["final"] is True
    assert failure["error"] == (
        "TemplateOverBudget: The body template is over budget: it writes more than 100,000 "
        "characters (a body's limit)."
    )


def test_a_template_refused_since_it_was_saved_fails_its_step(
    store, mailoutbox, django_capture_on_commit_callbacks
):
    # given a tier saved with {% lorem %} before templates were checked against the allow-list
    tier = {"channel": "email", "delay_minutes": 0, "body_template": LOREM}
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, tiers=[tier])
    cart_abandoned(store.pk, at=T, token="a-cart", email="ana@example.com")
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30)) == 1
    run_at = T + timedelta(minutes=31)
    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        steps.due_steps_enqueue(now=run_at, publish=published.append)

    # when it runs, then nothing is sent and the step fails with the refusal
    assert steps.steps_execute(step_ids=published[0], now=lambda: run_at) == {"failed": 1}
    assert mailoutbox == []
    [failure] = CartEvent.objects.filter(
        store=store, cart="a-cart", type="campaign.step_failed"
    ).values_list("data", flat=True)
    assert failure["error"] == (
        "TemplateRefused: The {% lorem %} tag on line 1 is not allowed in emails."
    )


def test_the_preview_shows_a_template_over_budget_for_this_store_as_refused(db):
    # given a subject that writes the store's name eight times for the sample cart: 88
    # characters for the check's sample store, 1,600 for this store's 200-character name
    shop = make_store("S" * 200)
    merchant = logged_in(make_user("merchant", store=shop))
    campaign = make_campaign(shop, "Long name")
    tier = campaign.tiers.get()
    subject = (
        "{% for a in items %}{% for b in items %}{{ store_name }}{{ store_name }}"
        "{% endfor %}{% endfor %}"
    )
    assert _errors("Hi", subject) == {}
    tier.subject_template = subject
    tier.save(update_fields=["subject_template"])

    page = merchant.get(f"{CHANGELIST}{campaign.pk}/preview/{tier.pk}/")

    assert page.status_code == 200
    assert page.context["preview"] is None
    assert page.context["problems"] == {
        "subject_template": [
            "This template is refused: it writes more than 1,000 characters (a subject's limit)."
        ]
    }
