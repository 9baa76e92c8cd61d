"""What a running scheduled function receives as its first argument."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import connections, router, transaction
from django.utils.translation import gettext

from . import clock, retry
from .conf import scheduler_settings
from .exceptions import SchedulingError, Transience, classify_error
from .registry import FunctionKind, registry
from .scheduler import Scheduler, validate_args
from .transactions import write_transaction

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from .models import ScheduledFunction

logger = logging.getLogger("convex_scheduler")

__all__ = ["ActionContext", "MutationContext"]


class FunctionContext:
    """The context of one run of a scheduled function.

    ``ctx.scheduler`` schedules on the function's behalf: what it schedules
    records this function as its parent, and counts against the per-function
    limits.
    """

    kind: FunctionKind

    def __init__(
        self,
        scheduled_function_id: int,
        name: str,
        attempt: int = 1,
        *,
        on_behalf_of_action: bool = False,
    ) -> None:
        #: The id of the running :class:`~convex_scheduler.models.ScheduledFunction`
        #: (for a mutation run by ``ctx.run_mutation``, the calling action's).
        self.scheduled_function_id = scheduled_function_id
        #: The registered name of the running function.
        self.name = name
        #: 1 for the first run; higher when a mutation is retried.
        self.attempt = attempt
        acts_for_action = self.kind == FunctionKind.ACTION or on_behalf_of_action
        self.scheduler = Scheduler.for_running_function(
            # A mutation run for an action has no row of its own to cancel.
            running_id=0 if on_behalf_of_action else scheduled_function_id,
            kind=self.kind,
            parent_id=scheduled_function_id,
            parent_cancelable=acts_for_action,
        )

    @property
    def now(self) -> datetime:
        """The scheduler's clock (replaced in tests by :mod:`convex_scheduler.testing`)."""
        return clock.now()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} #{self.scheduled_function_id}>"


class MutationContext(FunctionContext):
    """Passed to a mutation. Everything it does runs in the mutation's transaction."""

    kind = FunctionKind.MUTATION


class ActionContext(FunctionContext):
    """Passed to an action, which runs outside any transaction."""

    kind = FunctionKind.ACTION

    def run_mutation(
        self, function: Callable[..., Any] | str, args: dict[str, Any] | None = None
    ) -> Any:
        """Run a registered mutation now, in its own transaction, and return its result.

        Transient database errors are retried as for a scheduled mutation; a
        developer error is raised here. What the mutation schedules has this
        action as its parent, so it is born canceled once the action is.
        """
        entry = registry.resolve(function)
        if entry.kind != FunctionKind.MUTATION:
            raise SchedulingError(
                gettext("%(name)s is an action; run_mutation runs mutations only.")
                % {"name": repr(entry.name)}
            )
        args = {} if args is None else args
        validate_args(entry, args)
        return run_with_retries(
            lambda attempt: _call_mutation(self, entry.func, entry.name, args, attempt),
            using=router.db_for_write(_scheduled_function_model()),
        )


    async def arun_mutation(
        self, function: Callable[..., Any] | str, args: dict[str, Any] | None = None
    ) -> Any:
        """:meth:`run_mutation` for ``async def`` actions: ``await ctx.arun_mutation(fn, args)``.

        The mutation runs on the thread Django keeps for thread-sensitive
        code, so async actions in flight share its one database connection
        instead of holding one each.
        """
        return await sync_to_async(self.run_mutation)(function, args)


def _scheduled_function_model() -> type[ScheduledFunction]:
    from .models import ScheduledFunction

    return ScheduledFunction


def _call_mutation(
    action: ActionContext, func: Callable[..., Any], name: str, args: dict[str, Any], attempt: int
) -> Any:
    ctx = MutationContext(action.scheduled_function_id, name, attempt, on_behalf_of_action=True)
    with write_transaction(router.db_for_write(_scheduled_function_model())):
        return func(ctx, **args)


def run_with_retries(body: Callable[[int], Any], using: str) -> Any:
    """Run ``body(attempt)`` until it does not fail with a transient database error.

    Used by ``ctx.run_mutation``, which has no row whose due time could be
    moved, so every transient error is retried in place with full-jitter
    backoff: conflicts from ``CONFLICT_BACKOFF_INITIAL``, lost connections from
    ``UNAVAILABLE_BACKOFF_INITIAL``. A forced worker stop ends the wait, and
    the last error is raised.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return body(attempt)
        except Exception as exc:
            transience = classify_error(exc)
            if transience is Transience.PERMANENT:
                raise
            if transience is Transience.CONFLICT:
                delay = retry.full_jitter(
                    attempt,
                    scheduler_settings.CONFLICT_BACKOFF_INITIAL,
                    scheduler_settings.CONFLICT_BACKOFF_MAX,
                )
            else:
                _drop_connection_unless_in_transaction(using)
                delay = retry.full_jitter(
                    attempt,
                    scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL,
                    scheduler_settings.UNAVAILABLE_BACKOFF_MAX,
                )
            logger.info("transient error, retrying in %.3fs: %s", delay, exc)
            if retry.wait(delay):
                raise


def _drop_connection_unless_in_transaction(using: str) -> None:
    connection = connections[using]
    try:
        inside = not transaction.get_autocommit(using=using)
    except Exception:
        inside = False
    if not inside:
        connection.close()
