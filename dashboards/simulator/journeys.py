"""Simulated shopper journeys: pure and seeded (no clock, network, settings or ORM).

A journey is what one shopper does with one cart: the first visit's actions with their think times
(simulated seconds), and the chances that decide what happens where the server has a say (an offer
made or not, a campaign email received or not). Every chance is drawn up front from the journey's
own RNG, ``Random(f"{seed}:{index}")``, so a journey is the same whatever ran before it and
whatever the server answered; the runner (runner.py) plays it against a live server.

The shape follows the data we have and what e-commerce studies report:

- pages and think times: the UCI "online shoppers" sessions (a median of 29 s per product page,
  about 15% of sessions buying, returning visitors converting less than new ones but making most
  sessions);
- products, prices and categories: the REES46 multi-category store's catalogue (bench/data/rees46),
  weighted by how often each product was viewed there;
- abandonment: about 70% of carts with items are left without an order (Baymard's long-run
  average); checkout progress, a known customer and an accepted offer raise the odds of an order,
  shipping cost shock, removals, a rejected coupon code and mobile lower them (as in
  recovery/synthetic.py, the journeys the stock model is trained on);
- returns: some abandoned carts come back within three days, more after a campaign email and most
  after a discount code; a few orders are refunded later.

Real stores see 2-10% of sessions add to cart (the REES46 slice: 1.9%); the simulator
over-samples carts (80% of journeys add something) so a dashboard fills quickly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dashboards.simulator.catalogue import Catalogue, Product

SHOP_URL = "https://shop.example"
CURRENCY = "EUR"

BROWSER_SHARE = 0.7  # shoppers whose browser runs the snippet; the rest reach us server-side only
BROWSE_ONLY_SHARE = 0.2  # journeys that add nothing
KNOWN_SHOPPER_SHARE = 0.35  # logged-in customers (a shopper id; some have several carts)
CUSTOMERS = 500  # the pool known shoppers are drawn from
CONTACT_SHARE = 0.8  # of checkouts, those that leave an email
EMAIL_CONSENT_SHARE = 0.8  # of contacts, those that agree to emails
EXIT_INTENT_SHARE = 0.55  # browser shoppers with items whose visit shows an exit intent
EXIT_INTENT_EMPTY_SHARE = 0.25  # ...and without items
REFUND_SHARE = 0.06
RETURN_WINDOW = 3 * 86400.0  # seconds after leaving in which an abandoned cart may come back
MAIL_CHECK_GAP = 6 * 3600.0  # mean gap between two looks at the mailbox
# The chance an abandoned cart comes back, by the strongest touch its shopper saw while away.
RETURN_CHANCE: Mapping[str, float] = {"none": 0.12, "email": 0.3, "coupon": 0.45}
ORDER_ON_RETURN = 0.7
ORDER_ON_RETURN_WITH_CODE = 0.85

# (zone, locale, weight)
ZONES: tuple[tuple[str, str, float], ...] = (
    ("Europe/Paris", "fr-FR", 0.22),
    ("Europe/Berlin", "de-DE", 0.18),
    ("Europe/London", "en-GB", 0.14),
    ("Europe/Madrid", "es-ES", 0.08),
    ("America/New_York", "en-US", 0.14),
    ("America/Los_Angeles", "en-US", 0.08),
    ("America/Sao_Paulo", "pt-BR", 0.05),
    ("Asia/Tokyo", "ja-JP", 0.06),
    ("Australia/Sydney", "en-AU", 0.05),
)
DEVICES: tuple[tuple[str, float], ...] = (("desktop", 0.45), ("mobile", 0.45), ("tablet", 0.10))
# The snippet's exit-intent triggers by pointer (docs/snippet.md).
TRIGGERS: Mapping[str, tuple[str, ...]] = {
    "desktop": ("mouse_leave", "mouse_leave", "mouse_leave", "idle"),
    "mobile": ("tab_hidden", "tab_hidden", "back_button", "scroll_up", "idle"),
    "tablet": ("tab_hidden", "back_button", "scroll_up", "idle"),
}
SHIPPING = (0, 495, 695, 995, 1495)
FREE_SHIPPING_FROM = 10_000
REJECTED_CODES = ("WELCOME10", "FREESHIP", "SAVE20", "BLACKFRIDAY")
PAGE_SECONDS = 29.0  # median think time on a page (UCI: ProductRelated_Duration / ProductRelated)


@dataclass(frozen=True, slots=True)
class Action:
    wait: float  # simulated seconds of thinking before it
    type: str  # an event type (docs/api.md)
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    quantity: int
    unit_price: int


@dataclass(frozen=True, slots=True)
class Journey:
    index: int
    key: str  # seeds the journey's later draws (return visit)
    channel: Literal["browser", "server"]
    device: str
    shopper_id: str | None  # a known customer
    email: str
    timezone: str
    locale: str
    visit: tuple[Action, ...]  # the first visit, in order; an exit intent is its last action
    lines: tuple[Line, ...]  # the basket at the end of the first visit
    currency: str
    shipping: int | None  # quoted in the first visit
    checkout: bool  # the first visit started checkout
    contact: bool  # ...and left an email
    consent: bool  # ...agreeing to emails
    p_order: float  # chance of an order at the end of the first visit, without an accepted offer
    u_order: float
    u_shown: float
    u_accept: float
    p_accept: float
    u_dismiss: float
    offer_think: float  # simulated seconds spent on an offer before reacting
    u_return: float
    return_after: float  # an unaided return, simulated seconds after leaving
    mail_checks: tuple[float, ...]  # when the shopper looks at their mailbox, after leaving
    u_return_order: float
    u_refund: float
    refund_after: float
    refund_full: bool

    @property
    def value(self) -> int:
        return sum(line.quantity * line.unit_price for line in self.lines)

    @property
    def shopper(self) -> dict[str, str] | None:
        """The event envelope's shopper: known customers only (anonymous carts tell us who they
        are through checkout.contact_captured)."""
        if self.shopper_id is None:
            return None
        return {
            "id": self.shopper_id,
            "email": self.email,
            "timezone": self.timezone,
            "locale": self.locale,
        }

    def orders_now(self, *, accepted_offer: bool) -> bool:
        """Whether the first visit ends in an order. Accepting an offer (a discount in hand)
        removes more than half of the remaining hesitation."""
        p = 1 - (1 - self.p_order) * 0.45 if accepted_offer else self.p_order
        return bool(self.lines) and self.u_order < p

    def reaction(self) -> Literal["accepted", "dismissed", "ignored"]:
        """What the shopper does with an offer shown to them."""
        if self.u_accept < self.p_accept:
            return "accepted"
        return "dismissed" if self.u_dismiss < 0.85 else "ignored"

    def sees_offer(self) -> bool:
        """The dialog is shown (the tab may have gone, the page may have been left first)."""
        return self.u_shown < 0.95

    def returns(self, touch: str) -> bool:
        """Whether an abandoned cart comes back, given the strongest touch (``none``, ``email``,
        ``coupon``) seen so far."""
        return self.u_return < RETURN_CHANCE[touch]

    def orders_on_return(self, *, code: bool) -> bool:
        return self.u_return_order < (ORDER_ON_RETURN_WITH_CODE if code else ORDER_ON_RETURN)

    def refund(self, total: int) -> int | None:
        """The amount refunded some time after an order of ``total``, or None."""
        if self.u_refund >= REFUND_SHARE or total <= 0:
            return None
        if self.refund_full or len(self.lines) < 2:
            return total
        return min(total, self.lines[-1].quantity * self.lines[-1].unit_price)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _weighted(rng: random.Random, options: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([o for o, _ in options], [w for _, w in options])[0]


def _think(rng: random.Random, median: float, spread: float = 0.8) -> float:
    return round(rng.lognormvariate(math.log(median), spread), 3)


def journey(
    *,
    seed: int,
    index: int,
    catalogue: Catalogue,
    shop_url: str = SHOP_URL,
    currency: str = CURRENCY,
    browser_share: float = BROWSER_SHARE,
) -> Journey:
    """Journey number ``index`` of the run seeded ``seed``: the same arguments give the same
    journey."""
    key = f"{seed}:{index}"
    rng = random.Random(key)
    browser = rng.random() < browser_share
    device = _weighted(rng, DEVICES)
    zone, locale = _weighted(rng, [((z, loc), w) for z, loc, w in ZONES])
    known = rng.random() < KNOWN_SHOPPER_SHARE
    shopper_id = f"cust-{seed}-{int(CUSTOMERS * rng.random() ** 2)}" if known else None
    email = f"{shopper_id}@example.com" if shopper_id else f"guest-{seed}-{index}@example.com"
    engaged = rng.betavariate(2.0, 2.5)  # latent interest in buying
    browse_only = rng.random() < BROWSE_ONLY_SHARE

    actions: list[Action] = []

    def page(page_type: str, wait: float, product: Product | None = None) -> None:
        data: dict[str, Any] = {
            "url": f"{shop_url}/{page_type}" if product is None else f"{shop_url}/p/{product.sku}",
            "page_type": page_type,
            "device": device,
        }
        if product is not None:
            data["sku"] = product.sku
            data["dwell_ms"] = int(_think(rng, PAGE_SECONDS) * 1000)
        actions.append(Action(wait, "page.viewed", data))

    landing = _weighted(
        rng, [("home", 0.35), ("category", 0.3), ("search", 0.15), ("product", 0.2)]
    )
    page(landing, 0.0, catalogue.draw(rng) if landing == "product" else None)
    for _ in range(int(rng.expovariate(1 / (1.5 + 5 * engaged)))):
        product = catalogue.draw(rng) if rng.random() < 0.7 else None
        page("product" if product else "category", _think(rng, PAGE_SECONDS), product)

    lines: dict[str, Line] = {}
    adds = 0 if browse_only else min(6, 1 + int(rng.expovariate(1 / (0.3 + 1.5 * engaged))))
    for _ in range(adds):
        for _ in range(int(rng.expovariate(1 / 1.5))):
            page("category", _think(rng, PAGE_SECONDS))
        product = catalogue.draw(rng)
        page("product", _think(rng, PAGE_SECONDS), product)
        quantity = _weighted(rng, [(1, 0.85), (2, 0.12), (3, 0.03)])
        actions.append(
            Action(
                _think(rng, 8.0),
                "cart.item_added",
                {
                    "sku": product.sku,
                    "name": product.name,
                    "quantity": quantity,
                    "unit_price": product.unit_price,
                    "currency": currency,
                    "category": product.category,
                    "url": f"{shop_url}/p/{product.sku}",
                },
            )
        )
        held = lines.get(product.sku)
        lines[product.sku] = Line(
            product.sku, quantity + (held.quantity if held else 0), product.unit_price
        )

    logit = -2.9 + 2.6 * engaged + (0.4 if known else 0.0) - (0.4 if device == "mobile" else 0.0)
    if len(lines) > 1 and rng.random() < 0.2:
        sku = next(iter(lines))
        actions.append(Action(_think(rng, 10.0), "cart.item_removed", {"sku": sku}))
        del lines[sku]
        logit -= 0.3
    if lines and rng.random() < 0.1:
        last = list(lines.values())[-1]
        actions.append(
            Action(
                _think(rng, 6.0),
                "cart.item_quantity_changed",
                {"sku": last.sku, "quantity": last.quantity + 1},
            )
        )
        lines[last.sku] = Line(last.sku, last.quantity + 1, last.unit_price)
    value = sum(line.quantity * line.unit_price for line in lines.values())
    if lines:
        page("cart", _think(rng, 15.0))
        logit -= 0.25 * math.log(max(value, 100) / 20_000)  # dearer carts are thought over

    checkout = contact = consent = False
    shipping: int | None = None
    if lines and rng.random() < _sigmoid(-1.0 + 2.6 * engaged):
        checkout = True
        actions.append(Action(_think(rng, 10.0), "checkout.started", {}))
        page("checkout", _think(rng, 5.0))
        logit += 1.1
        if rng.random() < CONTACT_SHARE:
            contact = True
            consent = rng.random() < EMAIL_CONSENT_SHARE
            actions.append(
                Action(
                    _think(rng, 40.0),
                    "checkout.contact_captured",
                    {
                        "email": email,
                        "consent": {"email": consent},
                        "timezone": zone,
                        "locale": locale,
                    },
                )
            )
            logit += 0.7
            if rng.random() < 0.85:
                shipping = 0 if value >= FREE_SHIPPING_FROM else rng.choice(SHIPPING)
                actions.append(
                    Action(
                        _think(rng, 20.0),
                        "checkout.shipping_quoted",
                        {"amount": shipping, "currency": currency},
                    )
                )
                shock = shipping / max(value, 1)
                logit += 0.5 - 4.0 * shock
    if lines and rng.random() < 0.07:
        actions.append(
            Action(
                _think(rng, 15.0),
                "coupon.rejected",
                {"code": rng.choice(REJECTED_CODES), "reason": "unknown code"},
            )
        )
        logit -= 0.6
    if browser and rng.random() < (EXIT_INTENT_SHARE if lines else EXIT_INTENT_EMPTY_SHARE):
        trigger = rng.choice(TRIGGERS[device])
        actions.append(Action(_think(rng, 12.0), "shopper.exit_intent", {"trigger": trigger}))

    checks: list[float] = []
    at = rng.expovariate(1 / MAIL_CHECK_GAP)
    while at < RETURN_WINDOW and len(checks) < 24:
        checks.append(round(at, 3))
        at += rng.expovariate(1 / MAIL_CHECK_GAP)
    return Journey(
        index=index,
        key=key,
        channel="browser" if browser else "server",
        device=device,
        shopper_id=shopper_id,
        email=email,
        timezone=zone,
        locale=locale,
        visit=tuple(actions),
        lines=tuple(lines.values()),
        currency=currency,
        shipping=shipping,
        checkout=checkout,
        contact=contact,
        consent=consent,
        p_order=round(_sigmoid(logit), 6),
        u_order=rng.random(),
        u_shown=rng.random(),
        u_accept=rng.random(),
        p_accept=round(0.1 + 0.25 * engaged, 6),
        u_dismiss=rng.random(),
        offer_think=_think(rng, 6.0, 0.6),
        u_return=rng.random(),
        return_after=round(min(RETURN_WINDOW, rng.lognormvariate(math.log(5 * 3600), 1.2)), 3),
        mail_checks=tuple(checks),
        u_return_order=rng.random(),
        u_refund=rng.random(),
        refund_after=round(rng.lognormvariate(math.log(3 * 86400), 0.6), 3),
        refund_full=rng.random() < 0.7,
    )


def return_visit(j: Journey, *, shop_url: str = SHOP_URL) -> tuple[Action, ...]:
    """What a returning shopper does before deciding: back to the cart (from an email's link or
    on their own), then through checkout as far as the first visit did not get."""
    rng = random.Random(f"{j.key}:return")
    out = [
        Action(
            0.0, "page.viewed", {"url": f"{shop_url}/cart", "page_type": "cart", "device": j.device}
        )
    ]
    if not j.checkout:
        out.append(Action(_think(rng, 10.0), "checkout.started", {}))
    if not j.contact:
        out.append(
            Action(
                _think(rng, 40.0),
                "checkout.contact_captured",
                {
                    "email": j.email,
                    "consent": {"email": rng.random() < EMAIL_CONSENT_SHARE},
                    "timezone": j.timezone,
                    "locale": j.locale,
                },
            )
        )
    out.append(
        Action(
            _think(rng, 5.0),
            "page.viewed",
            {"url": f"{shop_url}/checkout", "page_type": "checkout", "device": j.device},
        )
    )
    return tuple(out)


def journeys(
    *, seed: int, count: int, catalogue: Catalogue, start: int = 0, **options: Any
) -> list[Journey]:
    """Journeys ``start`` to ``start + count - 1`` of the run seeded ``seed``."""
    return [
        journey(seed=seed, index=i, catalogue=catalogue, **options)
        for i in range(start, start + count)
    ]
