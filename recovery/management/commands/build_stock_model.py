"""``manage.py build_stock_model [--carts N] [--seed S]``: regenerate recovery/stock_model.json."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from recovery import services
from recovery.serving import STOCK_MODEL_PATH


class Command(BaseCommand):
    help = (
        "Train the stock scoring model on synthetic journeys and write recovery/stock_model.json."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--carts", type=int, default=20_000)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--output", default=str(STOCK_MODEL_PATH))

    def handle(self, *args: Any, **options: Any) -> None:
        document = services.stock_model_build(carts=options["carts"], seed=options["seed"])
        with open(options["output"], "w") as out:
            json.dump(document, out, indent=1, sort_keys=True)
            out.write("\n")
        test = document["metrics"]["test"]
        self.stdout.write(
            f"Wrote {options['output']}: {document['version']}, held-out ROC AUC "
            f"{test.get('roc_auc')}, Brier {test.get('brier')} on {test.get('carts')} carts."
        )
