"""``manage.py simulate --shoppers N`` (or ``--forever --rate R``): simulated shoppers against a
running server, through its real API and websocket (dashboards/simulator)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from carts import keys, services
from carts.models import Store, StoreKey
from dashboards.simulator import Options, Simulator, catalogue_load, server_ready
from dashboards.simulator.catalogue import REES46_CATALOGUE
from dashboards.simulator.journeys import BROWSER_SHARE

DEFAULT_URL = "http://127.0.0.1:8000"
FOREVER_RATE = 20.0


def run_key_issue(*, store: Store) -> tuple[int, str]:
    """A secret key of the store for one run (revoke it with ``run_key_revoke``): the demo
    store's keys are shown once when it is made and never written to a file."""
    key = keys.new_key(keys.SECRET_PREFIX)
    row = StoreKey.objects.create(
        store=store, kind=StoreKey.Kind.SECRET, prefix=key[:10], key_hash=keys.hash_key(key)
    )
    return row.pk, key


def run_key_revoke(*, key_id: int) -> None:
    StoreKey.objects.filter(pk=key_id, revoked_at__isnull=True).update(revoked_at=timezone.now())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _money(amounts: dict[str, int]) -> str:
    return ", ".join(f"{c} {v / 100:,.2f}" for c, v in sorted(amounts.items())) or "0"


class Command(BaseCommand):
    help = (
        "Simulated shoppers (seeded journeys: browsing, carts, checkout, exit intents and offers, "
        "orders, abandonment, returns after campaign emails, discount codes, refunds) against a "
        "running server, through its API and websocket. Prints a summary, its last line JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        how_many = parser.add_mutually_exclusive_group()
        how_many.add_argument("--shoppers", type=int, help="Shoppers in all (default 10).")
        how_many.add_argument(
            "--forever", action="store_true", help="New shoppers until stopped (SIGINT/SIGTERM)."
        )
        parser.add_argument(
            "--rate",
            type=float,
            help=f"New shoppers per minute (Poisson arrivals; default {FOREVER_RATE:g} with "
            "--forever, else as fast as --concurrency allows).",
        )
        parser.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="Simulated seconds per real second for a shopper's think times (default 1).",
        )
        parser.add_argument(
            "--away-speed",
            type=float,
            help="The same for time away from the shop, before a return or a refund (default: "
            "--speed). The server's campaigns run in real time: a lower speed here lets "
            "shoppers still be around when a campaign's email comes.",
        )
        parser.add_argument(
            "--concurrency", type=int, default=20, help="Visits in progress at once (default 20)."
        )
        parser.add_argument("--seed", type=int, default=0, help="Seeds the journeys (default 0).")
        parser.add_argument(
            "--url", default=DEFAULT_URL, help=f"The server (default {DEFAULT_URL})."
        )
        parser.add_argument(
            "--store-file",
            type=Path,
            default=getattr(settings, "DEMO_STORE_FILE", None),
            help="JSON with store_id and publishable_key (create_store --demo writes it; default "
            "var/demo-store.json). Without --secret-key, a key of the store's is issued for the "
            "run and revoked at its end.",
        )
        parser.add_argument("--secret-key", help="The store's secret key (sk_...).")
        parser.add_argument("--publishable-key", help="The store's publishable key (pk_...).")
        parser.add_argument(
            "--origin", help="An origin the store allows (default: the --url's origin)."
        )
        parser.add_argument("--currency", default="EUR", help="ISO 4217 (default EUR).")
        parser.add_argument(
            "--browser-share",
            type=float,
            default=BROWSER_SHARE,
            help=f"Share of shoppers whose page runs the snippet (default {BROWSER_SHARE}); the "
            "others reach the server only through the shop's backend.",
        )
        parser.add_argument(
            "--horizon-hours",
            type=float,
            help="Follow each journey this many simulated hours at most (returns and refunds "
            "due later are left out; default: no limit).",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help="Seconds to wait for /healthz to answer 200 before starting anyway (default 60); "
            "while nothing answers at all, --forever keeps waiting and otherwise it gives up.",
        )
        parser.add_argument(
            "--catalogue",
            type=Path,
            default=REES46_CATALOGUE,
            help="A REES46 CSV export to take products from (default: bench/data/rees46).",
        )
        parser.add_argument(
            "--progress",
            type=float,
            help="Seconds between progress lines (default 60 with --forever, else none).",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        forever: bool = opts["forever"]
        shoppers = None if forever else (opts["shoppers"] if opts["shoppers"] is not None else 10)
        if shoppers is not None and shoppers < 0:
            raise CommandError("--shoppers must be 0 or more.")
        away = opts["away_speed"]
        if opts["speed"] <= 0 or (away is not None and away <= 0) or opts["concurrency"] < 1:
            raise CommandError("--speed and --away-speed must be above 0, --concurrency 1 or more.")
        rate = opts["rate"] if opts["rate"] is not None else (FOREVER_RATE if forever else None)
        if rate is not None and rate <= 0:
            raise CommandError("--rate must be above 0.")
        if not 0 <= opts["browser_share"] <= 1:
            raise CommandError("--browser-share is between 0 and 1.")
        url: str = opts["url"].rstrip("/")
        if urlsplit(url).scheme not in ("http", "https"):
            raise CommandError("--url must be an http(s) URL, e.g. http://127.0.0.1:8000.")

        secret_key, publishable_key, run_key = self._keys(opts)
        horizon = opts["horizon_hours"]
        progress = opts["progress"] if opts["progress"] is not None else (60.0 if forever else 0)
        options = Options(
            url=url,
            secret_key=secret_key,
            publishable_key=publishable_key,
            origin=(opts["origin"] or _origin(url)).rstrip("/"),
            seed=opts["seed"],
            shoppers=shoppers,
            rate=rate,
            speed=opts["speed"],
            away_speed=opts["away_speed"],
            concurrency=opts["concurrency"],
            currency=opts["currency"].upper(),
            browser_share=opts["browser_share"],
            horizon=None if horizon is None else horizon * 3600.0,
            progress_every=progress,
        )
        catalogue = catalogue_load(opts["catalogue"])
        self._say(
            f"simulating {'shoppers until stopped' if forever else f'{shoppers} shoppers'} "
            f"against {url} (seed {options.seed}, speed {options.speed:g}x"
            f"{f', away {options.away_speed:g}x' if options.away_speed else ''}, "
            f"{f'{rate:g}/min, ' if rate else ''}concurrency {options.concurrency}, "
            f"{len(catalogue.products)} products)"
        )
        try:
            summary = asyncio.run(self._run(options, catalogue, wait=opts["wait"]))
        finally:
            if run_key is not None:
                run_key_revoke(key_id=run_key)
        self._print_summary(summary, options)

    def _keys(self, opts: dict[str, Any]) -> tuple[str, str, int | None]:
        """(secret key, publishable key, the id of a key issued for this run or None)."""
        secret, publishable = opts["secret_key"], opts["publishable_key"]
        if secret and publishable:
            return secret, publishable, None
        path: Path | None = opts["store_file"]
        if path is None:
            raise CommandError("Pass --secret-key and --publishable-key, or --store-file.")
        try:
            stored = json.loads(path.read_text())
            store_id = int(stored["store_id"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CommandError(
                f"Cannot read the store file {path} ({exc}): run `manage.py create_store --demo` "
                "(make run does), or pass --secret-key and --publishable-key."
            ) from exc
        store = Store.objects.filter(pk=store_id).first()
        if store is None:
            raise CommandError(f"The store file {path} names store #{store_id}, which is not here.")
        publishable = publishable or stored.get("publishable_key")
        if not publishable:
            publishable = services.store_publishable_key_issue(store=store)
        run_key = None
        if not secret:
            run_key, secret = run_key_issue(store=store)
        return secret, publishable, run_key

    async def _run(self, options: Options, catalogue: Any, *, wait: float) -> dict[str, Any]:
        simulator = Simulator(options, catalogue, say=self._say)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, simulator.stop.set)
        stop = simulator.stop
        status = await server_ready(options.url, timeout=wait, say=self._say, stop=stop)
        while status == 0 and options.shoppers is None and not stop.is_set():
            status = await server_ready(options.url, timeout=wait, say=self._say, stop=stop)
        if status == 0 and not stop.is_set():
            raise CommandError(f"Nothing answers at {options.url}/healthz.")
        if status not in (0, 200):
            self._say(f"{options.url}/healthz answers {status}; starting anyway")
        return await simulator.run()

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _print_summary(self, s: dict[str, Any], options: Options) -> None:
        lines = [
            f"simulated {s['shoppers']} shoppers in {s['seconds']:.1f} s "
            f"(seed {options.seed}, speed {options.speed:g}x); "
            f"{s['journeys_finished']} journeys finished",
            f"  carts {s['carts']}, websocket sessions {s['sessions']}, events {s['events']} "
            f"({s['events_per_second']:g}/s), {s['batches']} batches to /api/v1/events",
            f"  exit intents {s['exit_intents']}; offers received {s['offers_received']}, shown "
            f"{s['offers_shown']}, accepted {s['offers_accepted']}, dismissed "
            f"{s['offers_dismissed']}",
            f"  abandoned {s['abandoned']}; mailbox checks {s['mailbox_checks']} (emails seen "
            f"{s['emails_seen']}, codes seen {s['codes_seen']}); came back {s['returned']} "
            f"({s['returned_after_email']} after an email, {s['returned_with_code']} with a code)",
            f"  orders {s['orders']} ({s['orders_on_return']} on a return), revenue "
            f"{_money(s['revenue'])}, discounts {_money(s['discount'])}; refunds {s['refunds']} "
            f"({_money(s['refunded'])}); codes redeemed {s['codes_redeemed']}, refused "
            f"{s['codes_refused']}",
            f"  errors {s['errors']}",
        ]
        examples = s["error_examples"]
        for kind, n in s["errors_by_kind"].items():
            lines.append(f"    {n} x {kind}" + (f": {examples[kind]}" if kind in examples else ""))
        for line in lines:
            self._say(line)
        self._say(json.dumps(s, sort_keys=True))
