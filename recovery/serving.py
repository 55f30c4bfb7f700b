"""Serving the score: the active council per store, loaded once per process and swapped without a
restart, and the scorer the append service calls on every event (carts.services.CartScorer).

The cart's feature accumulator lives in ``CartState.features`` as
``{"v": FEATURES_VERSION, "acc": {...}, "history": {"key", "orders", "abandonments"}}``: the
accumulator is the pure incremental fold of recovery.features; the history is the shopper's past
orders and abandonments, looked up once when the shopper becomes known.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings

from carts import projections
from carts.services import CartScore
from recovery import features, selectors
from recovery.council import Council, Explanation

STOCK_MODEL_PATH = Path(__file__).with_name("stock_model.json")
TYPICAL_BASKET_TTL_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class LoadedModel:
    model_id: int | None  # None: the stock model
    version: str
    council: Council
    typical_basket: int | None


@cache
def stock_model() -> LoadedModel:
    """The model that ships with the project (recovery/stock_model.json)."""
    data = json.loads(STOCK_MODEL_PATH.read_text())
    council = Council.from_dict(data["artifact"])
    return LoadedModel(None, council.version, council, data.get("typical_basket"))


class ModelCache:
    """Active model per store. Each store's choice is re-checked with one indexed query at most
    every RECOVERY_MODEL_REFRESH_SECONDS; artifacts are parsed once per model id."""

    def __init__(self) -> None:
        self._by_store: dict[int, tuple[LoadedModel, float]] = {}
        self._by_id: dict[int, LoadedModel] = {}
        self._baskets: dict[int, tuple[int | None, float]] = {}
        self._lock = threading.Lock()

    def for_store(self, store_id: int) -> LoadedModel:
        now = time.monotonic()
        entry = self._by_store.get(store_id)
        refresh = settings.RECOVERY_MODEL_REFRESH_SECONDS
        if entry is not None and now - entry[1] < refresh:
            return entry[0]
        ref = selectors.active_model_ref(store_id=store_id)
        model = stock_model() if ref is None else self._by_id.get(ref[0]) or self._load(ref[0])
        self._by_store[store_id] = (model, now)
        return model

    def _load(self, model_id: int) -> LoadedModel:
        row = selectors.scoring_model_get(model_id=model_id)
        loaded = LoadedModel(
            row.pk, row.version, Council.from_dict(row.artifact), row.typical_basket
        )
        with self._lock:
            self._by_id[model_id] = loaded
        return loaded

    def typical_basket(self, store_id: int, model: LoadedModel) -> int | None:
        """The model's own figure (from its training window), else the store's live median."""
        if model.typical_basket is not None and model.model_id is not None:
            return model.typical_basket
        now = time.monotonic()
        entry = self._baskets.get(store_id)
        if entry is not None and now - entry[1] < TYPICAL_BASKET_TTL_SECONDS:
            return entry[0]
        value = selectors.store_typical_basket(store_id=store_id)
        if value is None:
            value = model.typical_basket  # the stock model's, until the store has orders
        self._baskets[store_id] = (value, now)
        return value

    def clear(self) -> None:
        """Forget everything (tests; a new process starts empty anyway)."""
        self._by_store.clear()
        self._by_id.clear()
        self._baskets.clear()


MODELS = ModelCache()


# The accumulator wrapper stored in CartState.features -----------------------------------------


def inner_accumulator(wrapper: dict[str, Any]) -> dict[str, Any]:
    """The features accumulator inside the stored wrapper (never mutated: no copy needed)."""
    inner = wrapper.get("acc")
    return features.accumulator_empty() if inner is None else inner


def context_for(wrapper: dict[str, Any], typical_basket: int | None) -> features.Context:
    history = wrapper.get("history")
    if history is None:
        return features.Context(typical_basket=typical_basket)
    return features.Context(
        typical_basket=typical_basket,
        past_orders=history["orders"],
        past_abandonments=history["abandonments"],
    )


def with_histories(
    *, store_id: int, carts: Mapping[str, tuple[projections.Cart, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Each cart's wrapper with its shopper's history (token -> wrapper). The history is looked
    up once per cart and shopper, for a whole batch in one query: the shopper's other carts that
    converted (past orders) and that hold items and did not (past abandonments)."""
    wrappers = {token: wrapper for token, (_, wrapper) in carts.items()}
    wanted: dict[str, str] = {}  # token -> key
    for token, (_, wrapper) in carts.items():
        key = features.shopper_key(inner_accumulator(wrapper))
        history = wrapper.get("history")
        if key is not None and (history is None or history.get("key") != key):
            wanted[token] = key
    if not wanted:
        return wrappers
    found = selectors.shopper_carts(
        store_id=store_id,
        shopper_ids={carts[t][0].shopper_id for t in wanted if carts[t][0].shopper_id},
        emails={carts[t][0].email for t in wanted if not carts[t][0].shopper_id},
    )
    for token, key in wanted.items():
        cart = carts[token][0]
        if cart.shopper_id:
            others = [r for r in found if r.shopper_id == cart.shopper_id and r.token != token]
        else:
            email = cart.email.lower()
            others = [r for r in found if r.email == email and r.token != token]
        history = {
            "key": key,
            "orders": sum(r.converted for r in others),
            "abandonments": sum(r.has_items and not r.converted for r in others),
        }
        wrappers[token] = {**wrappers[token], "history": history}
    return wrappers


class CouncilScorer:
    """The scorer registered with carts.services: runs inside every append's transaction."""

    def accumulate(self, acc: dict[str, Any], event: projections.FoldEvent) -> dict[str, Any]:
        inner = features.accumulator_apply(inner_accumulator(acc), event)
        out = {**acc, "v": features.FEATURES_VERSION, "acc": inner}
        if event.type == "recovery.offer_decided" and event.data.get("decision") == "offer":
            # The on-site cooldown reads this (recovery/offers.py), without a query.
            count = (acc.get("offers") or {}).get("count", 0)
            out["offers"] = {"last_at": event.occurred_at.isoformat(), "count": count + 1}
        return out

    def score(
        self, *, store_id: int, carts: Mapping[str, tuple[projections.Cart, dict[str, Any]]]
    ) -> dict[str, tuple[dict[str, Any], CartScore]]:
        model = MODELS.for_store(store_id)
        wrappers = with_histories(store_id=store_id, carts=carts)
        typical = MODELS.typical_basket(store_id, model)
        scored: dict[str, tuple[dict[str, Any], CartScore]] = {}
        for token, (cart, _) in carts.items():
            wrapper = wrappers[token]
            now = cart.last_activity_at
            if now is None:
                scored[token] = (wrapper, CartScore(None, model.version, [], None))
            elif cart.status == projections.CONVERTED:
                # The outcome is known: nothing left to predict.
                scored[token] = (wrapper, CartScore(0.0, model.version, [], now))
            else:
                vector = features.features_at(
                    inner_accumulator(wrapper), cart, now, context_for(wrapper, typical)
                )
                probability, reasons = model.council.score(vector)
                scored[token] = (
                    wrapper,
                    CartScore(probability, model.version, [r.as_dict() for r in reasons], now),
                )
        return scored


def explain(
    *, store_id: int, cart: projections.Cart, wrapper: dict[str, Any], at: datetime
) -> tuple[LoadedModel, dict[str, Any], Explanation]:
    """The active model's explanation of a cart's score as of ``at``: (model, features, why)."""
    model = MODELS.for_store(store_id)
    vector = features.features_at(
        inner_accumulator(wrapper),
        cart,
        at,
        context_for(wrapper, MODELS.typical_basket(store_id, model)),
    )
    return model, vector, model.council.explain(vector)
