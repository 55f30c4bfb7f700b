"""Where an event came from (its provenance), recorded with every event by the append service.

Pure: no ORM, no settings. ``kind`` says who appended the event, ``ref`` which one of them:

- ``server``: the shop's server, with its secret key (ref: the key's prefix), or an import run by
  the merchant (ref: ``import:<name>``);
- ``browser``: a shopper's browser, with the publishable key (ref: the websocket session id);
- ``platform``: a platform webhook (ref: the platform and its delivery id);
- ``system``: this service itself (ref: the component: ``campaigns``, ``recovery``, ...);
- ``unknown``: events recorded before provenance existed (migration 0008). They were accepted
  under the old rules and keep counting as they did.

Trust follows the kind: only trusted sources may place or refund orders and give contact details
that a browser cannot replace (docs/api.md, "Sources").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    SERVER = "server"
    BROWSER = "browser"
    PLATFORM = "platform"
    SYSTEM = "system"
    UNKNOWN = "unknown"


# Sources whose orders, refunds and contact details are the shop's word.
TRUSTED = frozenset({Kind.SERVER, Kind.PLATFORM, Kind.SYSTEM, Kind.UNKNOWN})

REF_MAX = 128


@dataclass(frozen=True, slots=True)
class Source:
    kind: Kind
    ref: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "ref", str(self.ref)[:REF_MAX])

    @property
    def trusted(self) -> bool:
        return self.kind in TRUSTED

    @classmethod
    def server(cls, ref: str) -> Source:
        return cls(Kind.SERVER, ref)

    @classmethod
    def browser(cls, session: str) -> Source:
        return cls(Kind.BROWSER, session)

    @classmethod
    def platform(cls, ref: str) -> Source:
        return cls(Kind.PLATFORM, ref)

    @classmethod
    def system(cls, ref: str) -> Source:
        return cls(Kind.SYSTEM, ref)


def trusted(kind: str) -> bool:
    """Whether events of this source kind may convert a cart, refund it or set its contact."""
    return kind in TRUSTED


# A browser's event ids are its own: stored as uuid5(this, "<cart>:<id it sent>"). A browser
# cannot know (or take) an id the shop's server or the system will use, and its retries of the
# same event on the same cart stay duplicates.
BROWSER_EVENT_IDS = uuid.UUID("5d1f3a0e-8c47-4b8e-a7c2-3e9b6f1d2a40")


def browser_event_id(cart: str, client_id: uuid.UUID) -> uuid.UUID:
    """The id a browser's event is stored under (its cart scopes the id it chose)."""
    return uuid.uuid5(BROWSER_EVENT_IDS, f"{cart}:{client_id}")
