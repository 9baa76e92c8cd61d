"""What one worker did since it started."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorkerStats:
    """Counts of what one worker did since it started."""

    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    retried: int = 0
    orphans_failed: int = 0
    crashes_detected: int = 0
    unknown_failed: int = 0
    deleted: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.canceled
