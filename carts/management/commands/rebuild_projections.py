from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from carts import projectors
from carts.models import DeadLetter


class Command(BaseCommand):
    help = (
        "Rebuild read models from position zero of the event log (all, or the one named). "
        "Events that still cannot apply are dead-lettered; those that now apply are resolved."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help=f"One of: {', '.join(projectors.names())}")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        if name and name not in projectors.names():
            raise CommandError(
                f"Unknown projection {name!r}. Known: {', '.join(projectors.names())}."
            )
        for each in [name] if name else projectors.names():
            started = time.monotonic()
            count = projectors.rebuild(each)
            unit = "carts" if each in projectors.REBUILDERS else "events"
            dead = DeadLetter.objects.filter(projector=each, resolved_at__isnull=True).count()
            self.stdout.write(
                f"{each}: rebuilt from {count} {unit} in {time.monotonic() - started:.2f}s"
                + (f"; {dead} events dead-lettered (docs/operations.md)" if dead else "")
            )
