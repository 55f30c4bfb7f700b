"""``manage.py erase_shopper --store ID (--email E | --shopper-id X) [--export]``: a shopper's
erasure (their data keys destroyed, their carts given shopper.erased), or with ``--export`` their
data as JSON instead (docs/security.md, "Erasure and export")."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from pydantic import TypeAdapter, ValidationError

from carts import privacy
from carts.apis import ShopperId
from carts.models import Store
from carts.validation import Email, message


class Command(BaseCommand):
    help = "Erase a shopper of a store (crypto-shredding), or print their data with --export."
    stealth_options = ("stdin",)  # call_command(..., stdin=...): where --email - reads from

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--store", type=int, required=True, help="The store's id.")
        parser.add_argument(
            "--email",
            default=None,
            help="The shopper's email address; '-' reads it from standard input (so that it "
            "shows in no process list or shell history).",
        )
        parser.add_argument(
            "--shopper-id", default=None, help="The shop's shopper id (shopper.id in events)."
        )
        parser.add_argument(
            "--export",
            action="store_true",
            help="Print everything the store holds about the shopper as JSON; erase nothing.",
        )

    def execute(self, *args: Any, **options: Any) -> Any:
        self.stdin = options.pop("stdin", sys.stdin)
        return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> None:
        store = Store.objects.filter(pk=options["store"]).first()
        if store is None:
            raise CommandError(f"No store with id {options['store']}.")
        email, shopper_id = options["email"], options["shopper_id"]
        if email == "-":
            email = self.stdin.readline().strip()
        if (email is None) == (shopper_id is None):
            raise CommandError("Name the shopper by --email or by --shopper-id (one of them).")
        shopper = privacy.Shopper(
            email=_valid("--email", _EMAIL, email) if email is not None else "",
            shopper_id=_valid("--shopper-id", _SHOPPER_ID, shopper_id)
            if shopper_id is not None
            else "",
        )
        if options["export"]:
            export = privacy.shopper_export(store_id=store.pk, shopper=shopper)
            self.stdout.write(json.dumps(export, indent=2, ensure_ascii=False))
            return
        erasure = privacy.shopper_erase(store_id=store.pk, shopper=shopper)
        self.stdout.write(json.dumps(erasure.as_dict()))


_EMAIL: TypeAdapter[str] = TypeAdapter(Email)
_SHOPPER_ID: TypeAdapter[str] = TypeAdapter(ShopperId)


def _valid(option: str, adapter: TypeAdapter[str], value: str) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise CommandError(f"{option}: {' '.join(message(e) for e in exc.errors())}") from None
