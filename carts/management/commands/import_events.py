from __future__ import annotations

import time
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from carts import importers, money
from carts.errors import StoreNotFound
from carts.importers import replay


class Command(BaseCommand):
    help = (
        "Replay an exported event log into a store's cart event log. Event ids derive from the "
        "rows, so running it again stores nothing twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The export (CSV).")
        parser.add_argument("--store", type=int, required=True, help="Store id.")
        parser.add_argument("--format", required=True, choices=sorted(importers.FORMATS))
        parser.add_argument(
            "--currency", default="USD", help="ISO 4217 currency of the prices (default USD)."
        )
        parser.add_argument(
            "--batch-size", type=int, default=replay.BATCH_SIZE, help="Events per append."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        currency = options["currency"].upper()
        if not money.is_currency(currency):
            raise CommandError(f"'{options['currency']}' is not an ISO 4217 currency code.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        fmt = importers.FORMATS[options["format"]]
        started = time.monotonic()
        try:
            with open(options["file"], newline="", encoding="utf-8") as file:
                try:  # the header is read here, and an unusable file refused before any append
                    rows = importers.RowCounter(fmt.read_rows(file))
                except ValueError as exc:
                    raise CommandError(f"{options['file']}: {exc}") from exc
                report = replay.replay(
                    fmt.map_rows(rows, currency=currency),
                    store_id=options["store"],
                    batch_size=options["batch_size"],
                )
        # Rows appended before a decoding error stay appended; a re-run counts them as duplicates.
        except (OSError, UnicodeDecodeError, StoreNotFound) as exc:
            raise CommandError(str(exc)) from exc
        self._summary(options, rows.count, report, time.monotonic() - started)

    def _summary(
        self, options: dict[str, Any], rows: int, report: replay.ReplayReport, seconds: float
    ) -> None:
        skipped = sum(report.skipped.values())
        merged = rows - skipped - report.events_mapped
        lines = [
            f"Imported {options['file']} ({options['format']}) into store {options['store']} "
            f"in {seconds:.2f}s",
            f"  rows read        {rows}",
            f"  events mapped    {report.events_mapped}"
            + (
                f" ({merged} more purchase rows merged into their session's order)"
                if merged
                else ""
            ),
            f"  events appended  {report.appended.total()}{_by_type(report.appended)}",
            f"  duplicates       {report.duplicates.total()}{_by_type(report.duplicates)}",
            f"  rejected events  {report.rejected.total()}",
            *_reasons(report.rejected, report.examples),
            f"  carts created    {report.carts_created}",
            f"  skipped rows     {skipped}",
            *_reasons(report.skipped, report.examples),
        ]
        self.stdout.write("\n".join(lines))


def _by_type(counts: Counter[str]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) + ")"


def _reasons(counts: Counter[str], examples: dict[str, list[str]]) -> list[str]:
    return [
        f"    {reason}: {n}  e.g. " + "; ".join(examples.get(reason, []))
        for reason, n in counts.most_common()
    ]
