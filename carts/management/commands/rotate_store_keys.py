"""``manage.py rotate_store_keys --store ID [--json]``: new keys now, the old ones stop working."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from carts import services
from carts.management.commands.create_store import print_credentials
from carts.models import Store


class Command(BaseCommand):
    help = "Revoke every key of a store, replace its webhook secret, and print the new keys (once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--store", type=int, required=True, help="The store's id.")
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one JSON object: store_id, secret_key, publishable_key, webhook_secret.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        store = Store.objects.filter(pk=options["store"]).first()
        if store is None:
            raise CommandError(f"No store with id {options['store']}.")
        creds = services.store_keys_rotate(store=store, now=timezone.now())
        print_credentials(
            self,
            creds,
            as_json=options["json"],
            heading=f"Rotated the keys of store #{store.pk} {store.name!r}; the old keys no "
            "longer work.",
        )
