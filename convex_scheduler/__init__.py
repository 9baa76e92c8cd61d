"""Convex-style scheduled functions for Django.

Importing this package does not require Django to be set up: the names below
are plain Python until a function is scheduled or run.
"""

from .exceptions import SchedulingError
from .registry import action, internal_action, internal_mutation, mutation
from .retries import NonRetryableError, Retry
from .scheduler import scheduler

__all__ = [
    "NonRetryableError",
    "Retry",
    "SchedulingError",
    "action",
    "internal_action",
    "internal_mutation",
    "mutation",
    "scheduler",
]

__version__ = "0.1.0"
