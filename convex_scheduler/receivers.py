"""Log every lifecycle signal through the ``convex_scheduler`` logger.

Starts and successes are logged at DEBUG (``runscheduler -v 2``); a failure
is logged at WARNING with its name, id and first line, and its traceback
unless ``LOG_TRACEBACKS`` is off; retries at INFO; orphaned actions at
WARNING. Connected in ``AppConfig.ready``.
"""

import logging
from typing import Any

from django.dispatch import receiver

from .conf import scheduler_settings
from .signals import actions_orphaned, function_finished, function_retried, function_started

logger = logging.getLogger("convex_scheduler")


@receiver(function_started, dispatch_uid="convex_scheduler.log_started")
def log_started(
    *, scheduled_function_id: int, name: str, kind: str, attempt: int, **kwargs: Any
) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "started id=%s name=%s kind=%s attempt=%s", scheduled_function_id, name, kind, attempt
        )


@receiver(function_finished, dispatch_uid="convex_scheduler.log_finished")
def log_finished(
    *,
    scheduled_function_id: int,
    name: str,
    kind: str,
    state: str,
    error: str,
    duration: float,
    **kwargs: Any,
) -> None:
    first_line = error.splitlines()[0] if error else ""
    if state == "failed":
        detail = ""
        if scheduler_settings.LOG_TRACEBACKS and "\n" in error:
            detail = "\n" + error.split("\n", 1)[1].strip("\n")
        logger.warning(
            "function failed id=%s name=%s kind=%s duration=%.4fs error=%r%s",
            scheduled_function_id,
            name,
            kind,
            duration,
            first_line,
            detail,
        )
    elif logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "finished id=%s name=%s kind=%s state=%s duration=%.4fs%s",
            scheduled_function_id,
            name,
            kind,
            state,
            duration,
            f" error={first_line!r}" if first_line else "",
        )


@receiver(function_retried, dispatch_uid="convex_scheduler.log_retried")
def log_retried(
    *,
    scheduled_function_id: int,
    name: str,
    attempt: int,
    error: BaseException,
    delay: float,
    in_place: bool,
    **kwargs: Any,
) -> None:
    logger.info(
        "retrying id=%s name=%s attempt=%s delay=%.3fs in_place=%s error=%r",
        scheduled_function_id,
        name,
        attempt,
        delay,
        in_place,
        str(error),
    )


@receiver(actions_orphaned, dispatch_uid="convex_scheduler.log_orphaned")
def log_orphaned(*, count: int, worker_ids: list[str], **kwargs: Any) -> None:
    logger.warning(
        "marked %s action(s) failed whose worker is gone: workers=%s", count, ",".join(worker_ids)
    )
