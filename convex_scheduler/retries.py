"""Opt-in retries for actions: :class:`Retry` and :class:`NonRetryableError`.

Actions run at most once unless they opt in: ``@action(retry=True)`` (the
defaults), ``@action(retry=Retry(max_attempts=5, initial_backoff_ms=250,
base=2))``, or per call ``scheduler.run_after(ms, fn, args, retry=Retry(...))``.
A failed attempt (an exception, or the worker dying mid-action) runs again
after ``initial_backoff_ms * base ** (attempt - 1) * uniform(0.5, 1.5)``; an
action that raises :class:`NonRetryableError`, or whose attempts are spent,
fails with its last error. Only opt in for idempotent actions.
"""

from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext

from .exceptions import SchedulingError

__all__ = ["NonRetryableError", "Retry"]

MAX_ATTEMPTS_LIMIT = 100
MAX_BACKOFF_MS = 24 * 60 * 60 * 1000.0


class NonRetryableError(Exception):
    """Raised by an action to fail now, without the retries it opted into."""


@dataclass(frozen=True)
class Retry:
    """How often and how far apart a failed action is retried."""

    max_attempts: int = 5
    initial_backoff_ms: float = 250
    base: float = 2

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise SchedulingError(
                gettext("Retry max_attempts must be a whole number, not %(type)s.")
                % {"type": type(attempts).__name__},
                field="retry",
            )
        if not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
            raise SchedulingError(
                gettext("Retry max_attempts must be between 1 and %(max)d, not %(value)d.")
                % {"max": MAX_ATTEMPTS_LIMIT, "value": attempts},
                field="retry",
            )
        for name, low in (("initial_backoff_ms", 0.0), ("base", 1.0)):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(float(value))
                or not low <= float(value) <= MAX_BACKOFF_MS
            ):
                raise SchedulingError(
                    gettext(
                        "Retry %(name)s must be a finite number from %(low)g to %(high)g, "
                        "not %(value)s."
                    )
                    % {"name": name, "low": low, "high": MAX_BACKOFF_MS, "value": repr(value)},
                    field="retry",
                )

    def backoff_ms(self, attempt: int) -> float:
        """Milliseconds to wait after failed attempt number ``attempt`` (1-based)."""
        growth = float(self.base) ** min(max(attempt - 1, 0), 64)
        return min(MAX_BACKOFF_MS, self.initial_backoff_ms * growth * random.uniform(0.5, 1.5))

    def as_json(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial_backoff_ms": self.initial_backoff_ms,
            "base": self.base,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Retry:
        return cls(**value)


def as_retry(value: Any) -> Retry | None:
    """``retry=`` as given to a decorator or a scheduling call: True, a Retry, or None/False."""
    if value is None or value is False:
        return None
    if value is True:
        return Retry()
    if isinstance(value, Retry):
        return value
    raise SchedulingError(
        gettext("retry must be True, False, None or a Retry(...), not %(type)s.")
        % {"type": type(value).__name__},
        field="retry",
    )
