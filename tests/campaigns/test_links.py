"""The links in campaign emails over HTTP: restore and click, open pixel, unsubscribe, stop."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core import signing
from django.test import Client
from django.urls import resolve

from campaigns import links, tracking, views
from campaigns.models import Campaign, CampaignSettings, Coupon, Step, Suppression, Tier
from carts import identity, services
from carts.models import CartEvent, Store
from tests.campaigns.conftest import T0
from tests.carts.threads import raise_first_error, run_in_threads

# The body a mail provider posts for an RFC 8058 one-click unsubscribe.
ONE_CLICK = ("List-Unsubscribe=One-Click", "application/x-www-form-urlencoded")


def _path(url: str) -> str:
    return urlsplit(url).path


def _campaign_events(store: Store) -> list[tuple[str, str, dict]]:
    return [
        (e.cart, e.type, e.data)
        for e in CartEvent.objects.filter(store=store, type__startswith="campaign.").order_by(
            "position"
        )
    ]


def _data(step: Step, **extra) -> dict:
    return {
        "step": step.pk,
        "campaign": step.tier.campaign_id,
        "tier": step.tier_id,
        "position": step.tier.position,
        "channel": step.channel,
        **extra,
    }


def _statuses(*steps: Step) -> list[tuple[str, str]]:
    return [
        (s.status, s.reason)
        for s in Step.objects.filter(pk__in=[s.pk for s in steps]).order_by("pk")
    ]


@pytest.fixture
def csrf_client() -> Client:
    """A client that enforces CSRF, as a mail provider's one-click POST does not carry a token."""
    return Client(enforce_csrf_checks=True)


LINK = uuid.UUID("0b5f9a3e-7c41-4d2a-9e1f-5a6b7c8d9e0f")
OTHER_LINK = uuid.UUID("0b5f9a3e-7c41-4d2a-9e1f-5a6b7c8d9e10")


def test_each_link_resolves_to_its_view():
    assert resolve(_path(links.restore_url(LINK))).func == views.restore
    assert resolve(_path(links.open_pixel_url(LINK))).func == views.open_pixel
    assert resolve(_path(links.unsubscribe_url(LINK))).func == views.unsubscribe
    assert resolve(_path(links.stop_url(LINK))).func == views.stop


def test_a_token_carries_its_link_id_for_its_purpose_only():
    token = _path(links.unsubscribe_url(LINK)).removeprefix("/u/")

    assert links.link_from_token(token, "unsubscribe") == LINK
    for other_token, purpose in (
        (token, "stop"),
        (token.replace(LINK.hex, OTHER_LINK.hex), "unsubscribe"),
    ):
        with pytest.raises(links.BadLink) as caught:
            links.link_from_token(other_token, purpose)
        assert (caught.value.message, caught.value.expired) == ("This link is not valid.", False)


def test_a_link_is_made_from_a_link_id_only_never_a_step_pk():
    with pytest.raises(TypeError):
        links.restore_url(42)  # type: ignore[arg-type]


def test_a_restore_token_expires_after_60_days_and_an_unsubscribe_token_never(monkeypatch):
    real = time.time()
    monkeypatch.setattr(time, "time", lambda: real - 61 * 86400)
    restore = _path(links.restore_url(LINK)).removeprefix("/r/")
    unsubscribe = _path(links.unsubscribe_url(LINK)).removeprefix("/u/")
    monkeypatch.setattr(time, "time", lambda: real)

    with pytest.raises(links.BadLink) as caught:
        links.link_from_token(restore, "restore")
    assert (caught.value.message, caught.value.expired) == ("This link has expired.", True)
    assert links.link_from_token(unsubscribe, "unsubscribe") == LINK


# Restore and click ------------------------------------------------------------------------------


def test_a_restore_click_records_one_event_and_redirects_to_the_cart_with_items_and_code(
    client, store, shop_cart, campaign_step
):
    # given a discount step whose cart holds two items and an unused code
    CampaignSettings.objects.create(
        store=store, cart_url="https://shop.example/cart/{items}?discount={code}"
    )
    cart = shop_cart(store.pk, "cart-1")
    step = campaign_step(cart, channel=Tier.Channel.DISCOUNT)
    Coupon.objects.create(
        store=store,
        cart=cart.token,
        code="SAVE10-7K2M9Q",
        step=step,
        kind=Coupon.Kind.PERCENT,
        amount=10,
        issued_at=T0,
        expires_at=datetime(2099, 1, 1, tzinfo=UTC),
    )

    # when the shopper follows the restore link
    response = client.get(_path(links.restore_url(step.link_id)))

    # then they land on the store's cart with the items and the code, and the click is recorded
    assert response.status_code == 302
    assert response["Location"] == (
        "https://shop.example/cart/MUG-01:2,POUR%2F02:1?discount=SAVE10-7K2M9Q"
    )
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"
    assert _campaign_events(store) == [("cart-1", "campaign.link_clicked", _data(step))]


def test_a_used_code_is_not_put_in_the_cart_url(client, store, shop_cart, campaign_step):
    cart = shop_cart(store.pk, "cart-1")
    step = campaign_step(cart, channel=Tier.Channel.DISCOUNT)
    Coupon.objects.create(
        store=store,
        cart=cart.token,
        code="USED-1",
        kind=Coupon.Kind.PERCENT,
        amount=10,
        issued_at=T0,
        expires_at=datetime(2099, 1, 1, tzinfo=UTC),
        redeemed_at=T0 + timedelta(hours=1),
    )

    response = client.get(_path(links.restore_url(step.link_id)))

    assert (response.status_code, response["Location"]) == (302, "https://shop.example/cart")


def _tampered(url: str) -> str:
    """The link's path with the last character of its token changed."""
    parts = _path(url).split("/")
    parts[2] = parts[2][:-1] + ("B" if parts[2].endswith("A") else "A")
    return "/".join(parts)


TAMPERED = {
    "restore, signature changed": lambda step: _tampered(links.restore_url(step.link_id)),
    "restore, another step": lambda step: _path(links.restore_url(step.link_id)).replace(
        f"/r/{step.link_id.hex}.", f"/r/{OTHER_LINK.hex}."
    ),
    "restore, a stop token": lambda step: _path(links.stop_url(step.link_id)).removesuffix("/stop"),
    "pixel, signature changed": lambda step: _tampered(links.open_pixel_url(step.link_id)),
    "unsubscribe, signature changed": lambda step: _tampered(links.unsubscribe_url(step.link_id)),
    "unsubscribe, a restore token": lambda step: _path(links.restore_url(step.link_id)).replace(
        "/r/", "/u/"
    ),
    "stop, signature changed": lambda step: _tampered(links.stop_url(step.link_id)),
}


@pytest.mark.parametrize("url", list(TAMPERED.values()), ids=list(TAMPERED))
def test_a_tampered_link_is_a_404_page_and_stores_nothing(
    client, store, shop_cart, campaign_step, url
):
    step = campaign_step(shop_cart(store.pk, "cart-1"))
    events_before = CartEvent.objects.filter(store=store).count()

    get = client.get(url(step))
    post = client.post(url(step), *ONE_CLICK)

    assert get.status_code == 404
    assert "This link is not valid." in get.content.decode()
    assert post.status_code in (404, 405)  # restore and pixel links take GET only
    assert CartEvent.objects.filter(store=store).count() == events_before
    assert Suppression.objects.filter(store=store).count() == 0
    assert _statuses(step) == [("pending", "")]


# Keys (issue 11, security review 2 finding 4) -----------------------------------------------------

# The key every instance signed with before issue 11 (base.py's fallback): public.
OLD_PUBLIC_KEY = "dev-insecure-change-me-" + "x" * 32


def _signed_with(key: str, value: str, purpose: str, *, timestamped: bool) -> str:
    signer_class = signing.TimestampSigner if timestamped else signing.Signer
    return signer_class(key=key, salt=f"campaigns.links.{purpose}", sep=".").sign(value)


def test_links_carry_the_steps_random_link_id_not_its_pk(db, store, shop_cart, campaign_step):
    steps = [campaign_step(shop_cart(store.pk, f"cart-{i}")) for i in (1, 2)]

    for step in steps:
        for url in (
            links.restore_url(step.link_id),
            links.open_pixel_url(step.link_id),
            links.unsubscribe_url(step.link_id),
            links.stop_url(step.link_id),
        ):
            signed_value = _path(url).split("/")[2].split(".")[0]
            assert signed_value == step.link_id.hex
    assert steps[0].link_id.version == 4
    assert steps[0].link_id != steps[1].link_id


@pytest.mark.parametrize(
    "forge",
    [
        # the old format (the step's pk), as the review forged it
        lambda step: (
            "/r/" + _signed_with(OLD_PUBLIC_KEY, str(step.pk), "restore", timestamped=True)
        ),
        lambda step: (
            "/u/" + _signed_with(OLD_PUBLIC_KEY, str(step.pk), "unsubscribe", timestamped=False)
        ),
        # the new format, knowing the link id
        lambda step: (
            "/r/" + _signed_with(OLD_PUBLIC_KEY, step.link_id.hex, "restore", timestamped=True)
        ),
        lambda step: (
            "/u/" + _signed_with(OLD_PUBLIC_KEY, step.link_id.hex, "unsubscribe", timestamped=False)
        ),
        lambda step: (
            "/r/"
            + _signed_with(OLD_PUBLIC_KEY, step.link_id.hex, "stop", timestamped=False)
            + "/stop"
        ),
        # nor does the Django SECRET_KEY sign links: they have keys of their own
        lambda step: (
            "/u/"
            + _signed_with(settings.SECRET_KEY, step.link_id.hex, "unsubscribe", timestamped=False)
        ),
    ],
    ids=["restore-pk", "unsubscribe-pk", "restore", "unsubscribe", "stop", "django-key"],
)
def test_a_link_signed_with_the_old_public_key_is_refused_and_stores_nothing(
    client, store, shop_cart, campaign_step, forge
):
    step = campaign_step(shop_cart(store.pk, "cart-1"))
    url = forge(step)

    got = client.get(url)
    posted = client.post(url, *ONE_CLICK)

    assert got.status_code == 404
    assert "This link is not valid." in got.content.decode()
    assert posted.status_code in (404, 405)  # restore links take GET only
    assert _campaign_events(store) == []
    assert Suppression.objects.count() == 0
    assert _statuses(step) == [("pending", "")]


def test_a_link_key_rotated_out_but_listed_still_works_and_one_dropped_does_not(
    csrf_client, client, store, shop_cart, campaign_step, settings
):
    old, new = "link-key-old-" + "o" * 40, "link-key-new-" + "n" * 40
    step = campaign_step(shop_cart(store.pk, "cart-1"))
    settings.CAMPAIGNS_LINK_KEYS = [old]
    unsubscribe = _path(links.unsubscribe_url(step.link_id))
    restore = _path(links.restore_url(step.link_id))

    # when the key is rotated (the new one first, the old one still listed)
    settings.CAMPAIGNS_LINK_KEYS = [new, old]
    # then new links are signed with the new key, and old links still work
    assert links.unsubscribe_url(step.link_id) != f"{settings.CAMPAIGNS_PUBLIC_URL}{unsubscribe}"
    assert client.get(restore).status_code == 302
    assert client.get(unsubscribe).status_code == 200

    # when the old key is dropped, its links stop working
    settings.CAMPAIGNS_LINK_KEYS = [new]
    dropped = csrf_client.post(unsubscribe, *ONE_CLICK)
    assert dropped.status_code == 404
    assert "This link is not valid." in dropped.content.decode()
    assert client.get(restore).status_code == 404
    assert Suppression.objects.count() == 0
    assert [t for _, t, _ in _campaign_events(store)] == ["campaign.link_clicked"]
    # and links signed with the new key work
    assert (
        csrf_client.post(_path(links.unsubscribe_url(step.link_id)), *ONE_CLICK).status_code == 200
    )


def test_a_link_to_a_step_that_does_not_exist_is_a_404(client, db):
    for url in (links.restore_url(LINK), links.open_pixel_url(LINK), links.stop_url(LINK)):
        response = client.get(_path(url))
        assert response.status_code == 404
        assert "This link does not belong to any email we sent." in response.content.decode()
    response = client.post(_path(links.unsubscribe_url(LINK)))
    assert response.status_code == 404
    assert Suppression.objects.count() == 0


# Opens --------------------------------------------------------------------------------------------


def test_the_open_pixel_is_a_gif_not_cached_and_records_the_first_open_only(
    client, store, shop_cart, campaign_step
):
    step = campaign_step(shop_cart(store.pk, "cart-1"))
    pixel = _path(links.open_pixel_url(step.link_id))

    first = client.get(pixel)
    second = client.get(pixel)

    for response in (first, second):
        assert response.status_code == 200
        assert response["Content-Type"] == "image/gif"
        assert response["Cache-Control"] == "no-store"
        assert response.content == views.PIXEL_GIF
    assert views.PIXEL_GIF[:6] == b"GIF89a"
    assert _campaign_events(store) == [("cart-1", "campaign.email_opened", _data(step))]


# Unsubscribe and "don't remind me" ------------------------------------------------------------


@pytest.fixture
def shoppers(store, shop_cart, campaign_step):
    """Jane's steps in two campaigns of the store (an email and an on-site nudge still open, one
    email already sent), her guest cart under her email key, and a stranger's step elsewhere."""
    jane = shop_cart(store.pk, "jane-1", shopper_id="cust-7")
    first = Campaign.objects.create(store=store, name="First", active=True)
    email = campaign_step(jane, campaign=first, status=Step.Status.ENQUEUED)
    sent = campaign_step(jane, campaign=first, status=Step.Status.SENT)
    guest = shop_cart(store.pk, "jane-guest")
    second = Campaign.objects.create(store=store, name="Second", active=True)
    guest_discount = campaign_step(guest, campaign=second, channel=Tier.Channel.DISCOUNT)
    guest_nudge = campaign_step(guest, campaign=second, channel=Tier.Channel.ONSITE)
    other_creds = services.store_create(name="Another shop")
    other = shop_cart(other_creds.store_id, "jane-elsewhere", shopper_id="cust-7")
    elsewhere = campaign_step(other)
    return {
        "email": email,
        "sent": sent,
        "guest_discount": guest_discount,
        "guest_nudge": guest_nudge,
        "elsewhere": elsewhere,
    }


JANE_ID = "id:cust-7"
JANE_EMAIL = f"email:{identity.email_digest('jane.doe@example.com')}"


def test_unsubscribe_on_get_asks_and_stores_nothing(client, store, shoppers):
    response = client.get(_path(links.unsubscribe_url(shoppers["email"].link_id)))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Unsubscribe from Test shop's cart emails?" in page
    assert '<form method="post">' in page
    assert Suppression.objects.count() == 0
    assert _campaign_events(store) == []
    assert _statuses(shoppers["email"]) == [("enqueued", "")]


def test_one_click_unsubscribe_suppresses_the_shopper_and_skips_their_open_emails_in_the_store(
    csrf_client, store, shoppers
):
    s = shoppers
    url = _path(links.unsubscribe_url(s["email"].link_id))

    # when the mail provider posts the one-click unsubscribe (RFC 8058), without a CSRF token
    response = csrf_client.post(url, *ONE_CLICK)

    # then both of Jane's keys are suppressed in this store
    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert sorted(Suppression.objects.values_list("store_id", "shopper", "kind", "cart")) == sorted(
        [
            (store.pk, JANE_ID, "unsubscribed", "jane-1"),
            (store.pk, JANE_EMAIL, "unsubscribed", "jane-1"),
        ]
    )
    # her open email and discount steps in both campaigns are skipped; the nudge, the sent email
    # and the other store's step are untouched
    assert _statuses(
        s["email"], s["sent"], s["guest_discount"], s["guest_nudge"], s["elsewhere"]
    ) == [
        ("skipped", "unsubscribed"),
        ("sent", ""),
        ("skipped", "unsubscribed"),
        ("pending", ""),
        ("pending", ""),
    ]
    assert _campaign_events(store) == [
        (
            "jane-1",
            "campaign.unsubscribed",
            _data(s["email"], shopper=JANE_ID, shoppers=sorted([JANE_EMAIL, JANE_ID])),
        ),
        ("jane-1", "campaign.step_skipped", _data(s["email"], reason="unsubscribed")),
        ("jane-guest", "campaign.step_skipped", _data(s["guest_discount"], reason="unsubscribed")),
    ]
    other_store = s["elsewhere"].store
    assert _campaign_events(other_store) == []

    # when it is posted again (providers retry), nothing more is stored
    again = csrf_client.post(url, *ONE_CLICK)
    assert again.status_code == 200
    assert Suppression.objects.count() == 2
    assert len(_campaign_events(store)) == 3


def test_dont_remind_me_asks_on_get_then_skips_every_open_step_of_the_shopper_in_the_store(
    client, csrf_client, store, shoppers
):
    s = shoppers
    url = _path(links.stop_url(s["guest_nudge"].link_id))

    asked = client.get(url)
    assert asked.status_code == 200
    assert "Stop reminders from Test shop?" in asked.content.decode()
    assert Suppression.objects.count() == 0
    assert _campaign_events(store) == []

    done = csrf_client.post(url)
    again = csrf_client.post(url)

    assert (done.status_code, again.status_code) == (200, 200)
    assert "You won't be reminded" in done.content.decode()
    # a guest cart knows only the email key
    assert list(Suppression.objects.values_list("store_id", "shopper", "kind", "cart")) == [
        (store.pk, JANE_EMAIL, "dont_remind", "jane-guest")
    ]
    assert _statuses(
        s["email"], s["sent"], s["guest_discount"], s["guest_nudge"], s["elsewhere"]
    ) == [
        ("enqueued", ""),  # under her customer id: this guest cart does not know it
        ("sent", ""),
        ("skipped", "dont_remind"),
        ("skipped", "dont_remind"),
        ("pending", ""),
    ]
    assert _campaign_events(store) == [
        (
            "jane-guest",
            "campaign.reminders_declined",
            _data(s["guest_nudge"], shopper=JANE_EMAIL, shoppers=[JANE_EMAIL]),
        ),
        ("jane-guest", "campaign.step_skipped", _data(s["guest_discount"], reason="dont_remind")),
        ("jane-guest", "campaign.step_skipped", _data(s["guest_nudge"], reason="dont_remind")),
    ]


def test_parallel_unsubscribes_from_two_carts_of_one_shopper_store_each_suppression_once(
    committed_store, shop_cart, campaign_step
):
    # given Jane's signed-in cart (id and email keys) and her guest cart (email key), each with
    # an open email step, in a store whose rows are committed
    store, _ = committed_store
    signed_in = shop_cart(store.pk, "jane-1", shopper_id="cust-7")
    guest = shop_cart(store.pk, "jane-guest")
    steps = [campaign_step(signed_in), campaign_step(guest)]
    barrier = threading.Barrier(8)

    def unsubscribe(step_id: int) -> bool:
        barrier.wait()
        return tracking.shopper_unsubscribe(step_id=step_id, now=T0 + timedelta(hours=3))

    # when eight requests race, four from each email
    outcomes = run_in_threads(unsubscribe, [(steps[i % 2].pk,) for i in range(8)])

    # then none failed, each key is suppressed once, and each step is skipped once
    raise_first_error(outcomes)
    assert sorted(
        Suppression.objects.filter(store=store).values_list("shopper", flat=True)
    ) == sorted([JANE_ID, JANE_EMAIL])
    assert _statuses(*steps) == [("skipped", "unsubscribed"), ("skipped", "unsubscribed")]
    types = [t for _, t, _ in _campaign_events(store)]
    assert types.count("campaign.unsubscribed") == outcomes.count(True)
    assert outcomes.count(True) in (1, 2)
    assert types.count("campaign.step_skipped") == 2
