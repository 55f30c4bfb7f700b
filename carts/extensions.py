"""The carts app's extension points: what later apps plug into, registered from their
``AppConfig.ready()`` (carts imports no other app).

- the scorer: recovery's live abandonment score, computed in every append (``cart_scorer_set``);
- reactions: system events decided inside an append, under its cart locks
  (``append_reaction_register``, or ``react=`` on one call of ``events_append``);
- demo-store hooks: what other apps add to the demo store (``store_demo_hook_register``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from carts import projections
from carts.new_events import NewEvent
from carts.sources import Source

if TYPE_CHECKING:
    from carts.models import Store


# Scoring hook --------------------------------------------------------------------------------
# The score is part of the cart-state projection, but scoring lives in ``recovery`` (which may
# import carts, never the other way). recovery registers its scorer when the app is ready; the
# append service then folds every event into the cart's feature accumulator and rescores each
# changed cart in the same transaction as the append.


@dataclass(frozen=True, slots=True)
class CartScore:
    score: float | None
    model_version: str
    reasons: list[dict[str, Any]]
    scored_at: datetime | None


class CartScorer(Protocol):
    def accumulate(
        self, acc: dict[str, Any], event: projections.FoldEvent
    ) -> dict[str, Any]:  # pure: the new accumulator
        ...

    def score(
        self, *, store_id: int, carts: Mapping[str, tuple[projections.Cart, dict[str, Any]]]
    ) -> dict[str, tuple[dict[str, Any], CartScore]]:
        """Score each cart (token -> (state, accumulator)) as of its last activity; may read in
        the caller's transaction (once for the whole batch) and return enriched accumulators
        (e.g. with the shopper's history, looked up once)."""
        ...


_scorer: CartScorer | None = None


def cart_scorer_set(scorer: CartScorer | None) -> None:
    """Register the scorer every append uses (None: carts are not scored)."""
    global _scorer
    _scorer = scorer


def cart_scorer_get() -> CartScorer | None:
    return _scorer


# Reactions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reacting:
    """What a reaction sees: the request's carts after its events, and their scores."""

    store_id: int
    states: Mapping[str, projections.Cart]
    scores: Mapping[str, CartScore | None]
    accumulators: Mapping[str, dict[str, Any]]  # the scorer's, per cart ({} without a scorer)
    appended: Sequence[NewEvent]  # the request's new events (duplicates left out), in order
    source: Source  # who appended them (a reaction's own events are the system's)


# A reaction returns system events (recovery.*, campaign.*) for the request's carts, appended in
# the same transaction, under the same cart locks; e.g. the exit-intent offer decision.
Reaction = Callable[[Reacting], Sequence[NewEvent]]

# Standing reactions, registered by later apps for every append that carries one of their event
# types (campaigns: an order cancels the cart's pending steps in the order's own transaction).
_standing_reactions: list[tuple[frozenset[str], Reaction]] = []


def append_reaction_register(*, types: Sequence[str], reaction: Reaction) -> None:
    """Run ``reaction`` inside every append that carries an event of one of ``types``."""
    if any(r is reaction for _, r in _standing_reactions):
        return
    _standing_reactions.append((frozenset(types), reaction))


def standing_reactions() -> list[tuple[frozenset[str], Reaction]]:
    return list(_standing_reactions)


# Demo-store hooks ----------------------------------------------------------------------------
# What other apps add to the demo store (e.g. campaigns: an active demo campaign).
_DEMO_STORE_HOOKS: list[Callable[[Store], None]] = []


def store_demo_hook_register(hook: Callable[[Store], None]) -> None:
    """Run ``hook(store)`` whenever the demo store is ensured (carts.stores.store_demo_ensure)."""
    if hook not in _DEMO_STORE_HOOKS:
        _DEMO_STORE_HOOKS.append(hook)


def demo_store_hooks() -> list[Callable[[Store], None]]:
    return list(_DEMO_STORE_HOOKS)
