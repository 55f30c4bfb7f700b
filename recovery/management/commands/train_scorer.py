"""``manage.py train_scorer --store ID [--horizon 24h] [--activate] [--json]``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from carts.models import Store
from recovery import services
from recovery.durations import parse_duration
from recovery.errors import TrainingError


class Command(BaseCommand):
    help = (
        "Train an abandonment-scoring council on a store's event log, store it with its metrics "
        "(held-out carts), and optionally activate it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--store", type=int, required=True, help="The store's id.")
        parser.add_argument(
            "--horizon",
            default="24h",
            help="A cart is abandoned when no order follows within this (default 24h).",
        )
        parser.add_argument("--activate", action="store_true", help="Activate the new model.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--now", help="ISO time to train as of (default: now); carts inside the horizon wait."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not Store.objects.filter(pk=options["store"]).exists():
            raise CommandError(f"No store with id {options['store']}.")
        try:
            horizon = parse_duration(options["horizon"])
        except ValueError as exc:
            raise CommandError(f"--horizon: {exc}") from exc
        now = timezone.now()
        if options["now"]:
            try:
                now = datetime.fromisoformat(options["now"])
            except ValueError as exc:
                raise CommandError(f"--now: {exc}") from exc
            if timezone.is_naive(now):
                raise CommandError("--now: give a time zone, e.g. 2026-11-27T12:00:00+00:00.")
        try:
            model = services.scorer_train(
                store_id=options["store"],
                horizon=horizon,
                now=now,
                seed=options["seed"],
                activate=options["activate"],
            )
        except TrainingError as exc:
            raise CommandError(str(exc)) from exc
        summary = {
            "version": model.version,
            "active": model.active,
            "horizon_seconds": model.horizon_seconds,
            "window_start": model.window_start.isoformat() if model.window_start else None,
            "window_end": model.window_end.isoformat() if model.window_end else None,
            "split_at": model.split_at.isoformat() if model.split_at else None,
            "metrics": model.metrics,
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        test = model.metrics["test"]
        self.stdout.write(
            f"Trained {model.version} ({'active' if model.active else 'not active'}).\n"
            f"Held-out carts: {test.get('carts')} ({test.get('n')} snapshots): "
            f"ROC AUC {test.get('roc_auc', 'n/a')}, PR AUC {test.get('pr_auc', 'n/a')}, "
            f"Brier {test.get('brier', 'n/a')}."
        )
        if not model.active:
            self.stdout.write(
                f"Activate it with: manage.py activate_scorer --store {options['store']} "
                f"--model {model.version}"
            )
