"""Plays journeys (journeys.py) against a running server, through its real interfaces.

- The browser's side, for shoppers whose page runs the snippet: ``POST /api/v1/shopper-sessions``
  with the publishable key and an allowed ``Origin``, then the websocket ``/ws/v1/shopper/``
  (hello with the ticket, events one at a time, each answered by ``appended``); offers are
  acknowledged at once, then shown, accepted, dismissed or ignored (docs/websocket.md). An
  anonymous shopper's cart is minted by its first session; a logged-in customer's cart is named
  by the shop's server, which gets a grant for it (``POST /api/v1/carts/{cart}/browser-grant``)
  before each visit's session (docs/snippet.md).
- The shop server's side, with the secret key: orders, refunds, the contact details a checkout
  form posts, and every event of shoppers without the snippet go to ``POST /api/v1/events`` in
  batches (outbox.py); the browser sends only what a browser may (docs/api.md, "Sources"). A
  campaign's discount code is redeemed with ``POST /api/v1/coupons/redeem`` before the order that
  uses it.
- The shopper's mailbox: while an abandoned cart is away, a shopper who left an email with consent
  looks at it now and then. The simulator cannot read the emails, so it reads what the campaign
  recorded instead, the cart's ``campaign.step_sent`` (email or discount) and
  ``campaign.coupon_issued`` events (``GET /api/v1/carts/{cart}/events``): that is what reached
  the shopper.

Think times are simulated seconds divided by ``speed``, time away from the shop (before a return,
before a refund) by ``away_speed`` (``speed`` unless given); ``concurrency`` bounds the visits in
progress (a shopper away between visits holds no slot). Timestamps are the real time at sending,
so the server's clocks (abandonment, campaign delays, quiet hours) apply as they would to a shop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from dashboards.simulator import journeys as jm
from dashboards.simulator.client import Http, HttpError, ShopperSocket
from dashboards.simulator.outbox import Outbox, Stats, progress_line
from dashboards.simulator.storefront import Storefront, Visit, loopback_source

T = TypeVar("T")
REDEEM_PATH = "/api/v1/coupons/redeem"
EMAIL_CHANNELS = ("email", "discount")
REFUSED_CODES = frozenset({404, 409, 410, 422})
# What the shop's server records even for a shopper whose browser runs the snippet: the checkout
# form posts the contact to the shop, which passes it on (orders and refunds are always its own).
SERVER_TYPES = frozenset({"checkout.contact_captured"})


@dataclass(frozen=True, slots=True)
class Options:
    url: str  # the server, e.g. http://127.0.0.1:8000
    secret_key: str
    publishable_key: str
    origin: str  # an origin the store allows (the storefront's)
    seed: int = 0
    shoppers: int | None = 10  # None: until stopped
    rate: float | None = None  # new shoppers per (real) minute; None: as fast as slots free up
    speed: float = 1.0
    away_speed: float | None = None  # None: speed
    concurrency: int = 20
    currency: str = jm.CURRENCY
    browser_share: float = jm.BROWSER_SHARE
    horizon: float | None = None  # simulated seconds after which a journey is not followed
    batch_size: int = 100
    timeout: float = 30.0
    progress_every: float = 0.0  # real seconds between progress lines (0: none)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Simulator:
    def __init__(
        self,
        options: Options,
        catalogue: jm.Catalogue,
        *,
        say: Callable[[str], None] = print,
    ) -> None:
        self.o = options
        self.catalogue = catalogue
        self.say = say
        self.stats = Stats()
        self.run_id = secrets.token_hex(3)
        self.stop = asyncio.Event()
        self._slots = asyncio.Semaphore(max(1, options.concurrency))
        self._http = Http(options.url, size=max(4, min(options.concurrency, 32)))
        self._outbox = Outbox(
            self._http,
            options.secret_key,
            self.stats,
            size=options.batch_size,
        )
        self._auth = {"Authorization": f"Bearer {options.secret_key}"}
        self._shop = options.origin.rstrip("/")
        self._storefront = Storefront(
            self._http,
            self.stats,
            url=options.url,
            origin=self._shop,
            publishable_key=options.publishable_key,
            timeout=options.timeout,
            think=self._think,
        )

    # The run -----------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Start journeys until ``shoppers`` have started (then let them finish) or until
        ``stop`` is set (then abandon those in progress); the summary."""
        self.stats.started = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        arrivals = random.Random(f"{self.o.seed}:arrivals")
        progress = asyncio.create_task(self._progress()) if self.o.progress_every > 0 else None
        index = 0
        try:
            while self.o.shoppers is None or index < self.o.shoppers:
                if self.o.rate:
                    gap = arrivals.expovariate(self.o.rate / 60.0)
                    if not await self._unless_stopped(asyncio.sleep(gap)):
                        break
                if not await self._unless_stopped(self._slots.acquire()):
                    break
                journey = jm.journey(
                    seed=self.o.seed,
                    index=index,
                    catalogue=self.catalogue,
                    shop_url=self._shop,
                    currency=self.o.currency,
                    browser_share=self.o.browser_share,
                )
                task = asyncio.create_task(self._shopper(journey))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
            if tasks:
                await self._unless_stopped(asyncio.wait(set(tasks)))
        finally:
            for task in list(tasks):
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if progress is not None:
                progress.cancel()
            await self._outbox.close()
            await self._http.close()
        return self.stats.as_dict()

    async def _unless_stopped(self, awaitable: Awaitable[Any]) -> bool:
        """Await it unless ``stop`` comes first (then it is cancelled); whether it completed."""
        task = asyncio.ensure_future(awaitable)
        if self.stop.is_set():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.o.progress_every)
            self.say(progress_line(self.stats.as_dict()))

    async def _think(self, simulated_seconds: float) -> None:
        await asyncio.sleep(max(0.0, simulated_seconds) / self.o.speed)

    async def _away_for(self, simulated_seconds: float) -> None:
        await asyncio.sleep(max(0.0, simulated_seconds) / (self.o.away_speed or self.o.speed))

    def _within_horizon(self, simulated_seconds: float) -> bool:
        return self.o.horizon is None or simulated_seconds <= self.o.horizon

    # A shopper ---------------------------------------------------------------------------------

    async def _shopper(self, j: jm.Journey) -> None:
        """One journey: the first visit (holding a slot), then, for an abandoned cart, the time
        away and perhaps a return; a refund some time after an order."""
        self.stats.count("shoppers")
        try:
            visit, total, order_id = await self._first_visit(j)
        finally:
            self._slots.release()
        elapsed = sum(a.wait for a in j.visit)
        if visit.cart is None or visit.version == 0:
            return  # nothing of it was stored
        if order_id is None and j.lines:
            self.stats.count("abandoned")
            back = await self._away(j, visit, elapsed)
            if back is not None:
                touch, code, at = back
                async with self._slots:
                    total, order_id = await self._return(j, visit, touch, code)
                elapsed += at
        if order_id is not None and total is not None:
            await self._refund(j, visit.cart, order_id, total, elapsed)
        self.stats.count("finished")

    def _event(self, j: jm.Journey, action: jm.Action, *, browser: bool = False) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": action.type,
            "occurred_at": _now(),
            "data": dict(action.data),
        }
        if j.shopper is not None:
            # Only the shop's server names the customer; the page tells what a page knows.
            shopper = {k: v for k, v in j.shopper.items() if k != "id" or not browser}
            event["shopper"] = shopper
        return event

    async def _first_visit(self, j: jm.Journey) -> tuple[Visit, int | None, str | None]:
        """(the visit, the order's total, the order's id); no order: None, None."""
        visit = Visit(
            source=loopback_source(
                self.o.url, random.Random(f"{self.o.seed}:{self.run_id}:{j.index}")
            )
        )
        if j.channel == "browser":
            if j.shopper_id is not None:  # a logged-in customer: the shop's server names the cart
                visit.cart = f"sim-{self.run_id}-{j.index}"
            socket = await self._browser_open(visit)
            if socket is None:
                return visit, None, None
            try:
                for action in j.visit:
                    await self._think(action.wait)
                    if action.type in SERVER_TYPES:
                        await self._server_event(j, visit, action)
                        continue
                    socket = await self._storefront.event(
                        visit, socket, self._event(j, action, browser=True)
                    )
                    if socket is None:
                        return visit, None, None
                    if action.type == "shopper.exit_intent":
                        await self._storefront.offers(j, visit, socket)
                await self._storefront.offers(j, visit, socket)  # anything pushed meanwhile
            finally:
                if socket is not None:
                    await socket.close()
        else:
            visit.cart = f"sim-{self.run_id}-{j.index}"
            for action in j.visit:
                await self._think(action.wait)
                await self._server_event(j, visit, action)
        if not j.orders_now(accepted_offer=visit.accepted):
            return visit, None, None
        await self._think(60.0)  # paying
        total, order_id = await self._order(j, visit, code=visit.code, redeem=False)
        return visit, total, order_id

    async def _return(
        self, j: jm.Journey, visit: Visit, touch: str, code: str | None
    ) -> tuple[int | None, str | None]:
        self.stats.count("returned")
        if touch != "none":
            self.stats.count("returned_after_email")
        if code:
            self.stats.count("returned_with_code")
        visit.accepted, visit.code, visit.discount = False, None, 0
        actions = jm.return_visit(j, shop_url=self._shop)
        if j.channel == "browser":
            socket = await self._browser_open(visit)
            if socket is None:
                return None, None
            try:
                for action in actions:
                    await self._think(action.wait)
                    if action.type in SERVER_TYPES:
                        await self._server_event(j, visit, action)
                        continue
                    socket = await self._storefront.event(
                        visit, socket, self._event(j, action, browser=True)
                    )
                    if socket is None:
                        return None, None
                    await self._storefront.offers(j, visit, socket)  # a campaign's nudge, pending
            finally:
                if socket is not None:
                    await socket.close()
        else:
            for action in actions:
                await self._think(action.wait)
                await self._server_event(j, visit, action)
        if not j.orders_on_return(code=bool(code or visit.code)):
            return None, None
        await self._think(60.0)
        if code:
            total, order_id = await self._order(j, visit, code=code, redeem=True)
        else:
            total, order_id = await self._order(j, visit, code=visit.code, redeem=False)
        if order_id is not None:
            self.stats.count("orders_on_return")
        return total, order_id

    # The shop server's side --------------------------------------------------------------------

    async def _browser_open(self, visit: Visit) -> ShopperSocket | None:
        """The visit's session: a cart the shop's server named gets a fresh grant first."""
        if visit.cart is not None and visit.cart.startswith("sim-"):
            visit.grant = await self._grant(visit.cart)
            if visit.grant is None:
                return None
        return await self._storefront.open(visit)

    async def _grant(self, cart: str) -> str | None:
        path = f"/api/v1/carts/{quote(cart, safe='')}/browser-grant"
        try:
            response = await self._http.post(path, None, headers=self._auth)
        except HttpError as exc:
            self.stats.error("browser-grant: unreachable", str(exc))
            return None
        answer = response.json()
        if response.status != 200 or not isinstance(answer, dict) or "grant" not in answer:
            self.stats.error(
                f"browser-grant {response.status}", response.body.decode(errors="replace")
            )
            return None
        self.stats.count("grants")
        return str(answer["grant"])

    async def _server_event(self, j: jm.Journey, visit: Visit, action: jm.Action) -> bool:
        assert visit.cart is not None
        result = await self._outbox.submit({**self._event(j, action), "cart": visit.cart})
        if result is not None:
            visit.version = max(visit.version, int(result.get("version") or 0))
        return result is not None

    async def _order(
        self, j: jm.Journey, visit: Visit, *, code: str | None, redeem: bool
    ) -> tuple[int | None, str | None]:
        """Place the order server-side; a campaign's code is redeemed first (an on-site offer's
        code is the shop's own and only named in the order). (total, order id) or (None, None)."""
        order_id = f"SIM-{self.run_id}-{j.index}"
        discount = visit.discount if code and not redeem else 0
        if code and redeem:
            discount_or_none = await self._redeem(j, code, order_id)
            if discount_or_none is None:
                code = None
            discount = discount_or_none or 0
        total = max(0, j.value - discount) + (j.shipping or 0)
        data: dict[str, Any] = {"order_id": order_id, "total": total, "currency": j.currency}
        if code:
            data["coupon"] = code
        placed = await self._server_event(j, visit, jm.Action(0.0, "order.placed", data))
        if not placed:
            return None, None
        self.stats.count("orders")
        self.stats.money["revenue"][j.currency] += total
        if discount:
            self.stats.money["discount"][j.currency] += discount
        return total, order_id

    async def _redeem(self, j: jm.Journey, code: str, order_id: str) -> int | None:
        """The discount a campaign code takes off, or None when it cannot be used."""
        body = {"code": code, "order_id": order_id, "cart_value": j.value, "currency": j.currency}
        try:
            response = await self._http.post(REDEEM_PATH, body, headers=self._auth)
        except HttpError as exc:
            self.stats.error("coupons/redeem: unreachable", str(exc))
            return None
        answer = response.json()
        if response.status == 200 and isinstance(answer, dict):
            self.stats.count("codes_redeemed")
            return int(answer.get("discount_applied") or 0)
        if response.status in REFUSED_CODES:
            self.stats.count("codes_refused")
            return None
        self.stats.error(
            f"coupons/redeem {response.status}", response.body.decode(errors="replace")
        )
        return None

    async def _refund(
        self, j: jm.Journey, cart: str, order_id: str, total: int, elapsed: float
    ) -> None:
        amount = j.refund(total)
        if amount is None or not self._within_horizon(elapsed + j.refund_after):
            return
        await self._away_for(j.refund_after)
        data = {"order_id": order_id, "amount": amount, "currency": j.currency}
        visit = Visit(cart=cart)
        if await self._server_event(j, visit, jm.Action(0.0, "order.refunded", data)):
            self.stats.count("refunds")
            self.stats.money["refunded"][j.currency] += amount

    # Away --------------------------------------------------------------------------------------

    async def _away(
        self, j: jm.Journey, visit: Visit, elapsed: float
    ) -> tuple[str, str | None, float] | None:
        """Time away from an abandoned cart: looks at the mailbox (shoppers who can be emailed),
        and comes back on their own or after a campaign's email. (touch, code, simulated seconds
        after leaving) of the return, or None."""
        moments: list[tuple[float, str]] = []
        if j.contact and j.consent:
            moments.extend((t, "mail") for t in j.mail_checks)
        if j.returns("none"):
            moments.append((j.return_after, "return"))
        moments.sort()
        touch, code, waited = "none", None, 0.0
        for at, what in moments:
            if not self._within_horizon(elapsed + at):
                return None
            await self._away_for(at - waited)
            waited = at
            if what == "return":
                return touch, code, at
            seen = await self._mailbox(visit)
            if seen is None:
                continue
            if seen[1] and not code:
                code = seen[1]
                self.stats.count("codes_seen")
            strongest = "coupon" if code else seen[0]
            if strongest != touch and jm.RETURN_CHANCE[strongest] > jm.RETURN_CHANCE[touch]:
                if touch == "none":
                    self.stats.count("emails_seen")
                touch = strongest
                if j.returns(touch):
                    await self._think(600.0)  # reads it, clicks through
                    return touch, code, at + 600.0
        return None

    async def _mailbox(self, visit: Visit) -> tuple[str, str | None] | None:
        """What the campaign sent the cart since the last look: (``none`` or ``email``, a
        discount code or None); None when the server could not be asked."""
        assert visit.cart is not None
        self.stats.count("mailbox_checks")
        path = f"/api/v1/carts/{quote(visit.cart, safe='')}/events?after={visit.version}"
        try:
            response = await self._http.get(path, headers=self._auth)
        except HttpError as exc:
            self.stats.error("carts/events: unreachable", str(exc))
            return None
        answer = response.json()
        if response.status != 200 or not isinstance(answer, dict):
            self.stats.error(f"carts/events {response.status}", response.body.decode("latin-1"))
            return None
        touch, code = "none", None
        for event in answer.get("events") or []:
            visit.version = max(visit.version, int(event.get("version") or 0))
            data = event.get("data") or {}
            # The email's own code (a discount step's step_sent names it); a code issued for an
            # on-site offer reaches the browser, not the mailbox.
            if event.get("type") == "campaign.step_sent" and data.get("channel") in EMAIL_CHANNELS:
                touch = "email"
                code = code or data.get("coupon")
        return touch, code
