"""The carts app's services, in one place for callers: stores and keys (carts/stores.py), the
append (carts/append.py, with its statements in carts/append_sql.py), what is appended
(carts/new_events.py), and the extension points later apps plug into (carts/extensions.py)."""

from __future__ import annotations

from carts.append import (
    CART_STATE_FIELDS,
    EVENTS_HINT_CHANNEL,
    Scored,
    cart_from_row,
    cart_states_update,
    carts_score,
    events_append,
    fold_event,
)
from carts.errors import EventIdConflict, EventRejected, VersionConflict
from carts.extensions import (
    CartScore,
    CartScorer,
    Reacting,
    Reaction,
    append_reaction_register,
    cart_scorer_get,
    cart_scorer_set,
    store_demo_hook_register,
)
from carts.new_events import Appended, NewEvent
from carts.stores import (
    DEMO_STORE_LOCK,
    DEMO_STORE_NAME,
    StoreCredentials,
    store_create,
    store_demo_ensure,
    store_keys_rotate,
    store_origins_add,
    store_publishable_key_issue,
    store_webhook_secret,
)

__all__ = [
    "CART_STATE_FIELDS",
    "DEMO_STORE_LOCK",
    "DEMO_STORE_NAME",
    "EVENTS_HINT_CHANNEL",
    "Appended",
    "CartScore",
    "CartScorer",
    "EventIdConflict",
    "EventRejected",
    "NewEvent",
    "Reacting",
    "Reaction",
    "Scored",
    "StoreCredentials",
    "VersionConflict",
    "append_reaction_register",
    "cart_from_row",
    "cart_scorer_get",
    "cart_scorer_set",
    "cart_states_update",
    "carts_score",
    "events_append",
    "fold_event",
    "store_create",
    "store_demo_ensure",
    "store_demo_hook_register",
    "store_keys_rotate",
    "store_origins_add",
    "store_publishable_key_issue",
    "store_webhook_secret",
]
