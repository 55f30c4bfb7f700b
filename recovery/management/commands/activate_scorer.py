"""``manage.py activate_scorer --store ID (--model VERSION | --stock)``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from carts.models import Store
from recovery import selectors, services
from recovery.errors import ModelNotFound


class Command(BaseCommand):
    help = (
        "Activate one of a store's scoring models (or go back to the stock model). Running "
        "processes switch within seconds, without a restart."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--store", type=int, required=True, help="The store's id.")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--model", help="The version of the model to activate.")
        which.add_argument("--stock", action="store_true", help="Use the stock model again.")

    def handle(self, *args: Any, **options: Any) -> None:
        store_id = options["store"]
        if not Store.objects.filter(pk=store_id).exists():
            raise CommandError(f"No store with id {store_id}.")
        if options["stock"]:
            services.scorer_deactivate(store_id=store_id)
            self.stdout.write(f"Store {store_id} now scores with the stock model.")
            return
        if not options["model"]:
            models = selectors.scoring_models_list(store_id=store_id)
            for model in models:
                self.stdout.write(
                    f"{model.version}{'  (active)' if model.active else ''}  "
                    f"test ROC AUC {model.metrics.get('test', {}).get('roc_auc', 'n/a')}"
                )
            if not models:
                self.stdout.write("No trained models yet: run train_scorer.")
            return
        try:
            model = services.scoring_model_by_version(store_id=store_id, version=options["model"])
        except ModelNotFound as exc:
            raise CommandError(str(exc)) from exc
        services.scorer_activate(model=model, now=timezone.now())
        self.stdout.write(f"Activated {model.version} for store {store_id}.")
