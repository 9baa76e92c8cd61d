"""What a claim hands the runners: the row's fields, and how the claim went."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Outcome(enum.Enum):
    RAN = "ran"
    IDLE = "idle"
    BACKOFF = "backoff"
    #: Every slot was taken when the claim was to start.
    FULL = "full"


@dataclass
class Claimed:
    id: int
    name: str
    kind: str
    args: dict[str, Any]
    attempts: int
    crashes: int
    #: An action's opt-in retry policy (JSON), or None.
    retry: dict[str, Any] | None
    #: The completion callback's name, "" for none.
    on_complete: str


CLAIM_FIELDS = ("id", "name", "kind", "args", "attempts", "crashes", "retry", "on_complete")
