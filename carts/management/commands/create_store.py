"""``manage.py create_store --name NAME [--domain D] [--json]`` or ``create_store --demo``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from carts import services
from carts.models import Store
from carts.origins import origin_normalise

DEMO_STORE_NAME = services.DEMO_STORE_NAME


def _write_demo_file(store: Store, creds: services.StoreCredentials | None) -> None:
    """Keep the demo store's publishable key where the demo storefront (/demo/) reads it.
    Publishable keys are public by design; secret keys never go to a file."""
    path: Path | None = getattr(settings, "DEMO_STORE_FILE", None)
    if path is None:
        return
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = None
    if creds is None and current is not None and current.get("store_id") == store.pk:
        return
    key = creds.publishable_key if creds else services.store_publishable_key_issue(store=store)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"store_id": store.pk, "publishable_key": key}))


def print_credentials(
    command: BaseCommand, creds: services.StoreCredentials, *, as_json: bool, heading: str
) -> None:
    """Print a store's keys, the one time they are shown (shared with rotate_store_keys)."""
    if as_json:
        command.stdout.write(json.dumps(dataclasses.asdict(creds)))
        return
    command.stdout.write(
        f"{heading}\n"
        "Copy these keys now: they are stored hashed and cannot be shown again.\n"
        f"  secret key       {creds.secret_key}\n"
        "                   server to server: 'Authorization: Bearer <secret key>'\n"
        f"  publishable key  {creds.publishable_key}\n"
        "                   in the browser snippet\n"
        f"  webhook secret   {creds.webhook_secret}\n"
        "                   signs webhooks\n"
    )


class Command(BaseCommand):
    help = "Create a store and print its secret key, publishable key and webhook secret (once)."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--name", help="The store's name.")
        which.add_argument(
            "--demo",
            action="store_true",
            help=f"Create the store named {DEMO_STORE_NAME!r} unless it already exists.",
        )
        parser.add_argument("--domain", default="", help="The storefront's domain.")
        parser.add_argument(
            "--origin",
            action="append",
            default=[],
            help="Allow this storefront origin (scheme://host[:port]) for the browser snippet; "
            "repeatable.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one JSON object: store_id, secret_key, publishable_key, webhook_secret.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        as_json: bool = options["json"]
        domain: str = options["domain"].strip()
        if len(domain) > Store._meta.get_field("domain").max_length:  # type: ignore[operator]
            raise CommandError("--domain is too long (253 characters at most).")

        origins: list[str] = options["origin"]
        for origin in origins:
            try:
                origin_normalise(origin)
            except ValueError as exc:
                raise CommandError(f"--origin: {exc}") from exc

        if options["demo"]:
            self._demo(domain=domain, origins=origins, as_json=as_json)
            return

        name: str = options["name"].strip()
        if not name:
            raise CommandError("--name must not be blank.")
        if len(name) > Store._meta.get_field("name").max_length:  # type: ignore[operator]
            raise CommandError("--name is too long (200 characters at most).")
        creds = services.store_create(name=name, domain=domain)
        if origins:
            services.store_origins_add(store=Store.objects.get(pk=creds.store_id), origins=origins)
        print_credentials(
            self, creds, as_json=as_json, heading=f"Created store #{creds.store_id} {name!r}."
        )

    def _demo(self, *, domain: str, origins: list[str], as_json: bool) -> None:
        existing, creds = services.store_demo_ensure(domain=domain, origins=origins)
        _write_demo_file(existing, creds)
        if creds is not None:
            print_credentials(
                self,
                creds,
                as_json=as_json,
                heading=f"Created store #{creds.store_id} {DEMO_STORE_NAME!r}.",
            )
            return

        message = (
            f"Store #{existing.pk} {DEMO_STORE_NAME!r} already exists; its keys were shown when "
            f"it was created and are never shown again. New keys: "
            f"manage.py rotate_store_keys --store {existing.pk}"
        )
        if as_json:
            # Same shape as a creation, so a script can tell the cases apart by the null keys.
            self.stdout.write(
                json.dumps(
                    {
                        "store_id": existing.pk,
                        "secret_key": None,
                        "publishable_key": None,
                        "webhook_secret": None,
                    }
                )
            )
            self.stderr.write(message)
        else:
            self.stdout.write(message)
