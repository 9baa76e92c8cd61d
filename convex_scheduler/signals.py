"""Lifecycle signals of scheduled functions, sent by the worker.

All are sent with ``sender=ScheduledFunction`` after the transition has
committed, so a receiver never sees a state that is later rolled back.
"""

from django.dispatch import Signal

#: A worker started running a function. Keyword arguments:
#: ``scheduled_function_id``, ``name``, ``kind``, ``attempt``, ``worker_id``.
function_started = Signal()

#: A function reached a final state. Keyword arguments: ``scheduled_function_id``,
#: ``name``, ``kind``, ``state``, ``error``, ``attempt``, ``duration`` (seconds).
function_finished = Signal()

#: A mutation hit a transient database error and will be retried. Keyword
#: arguments: ``scheduled_function_id``, ``name``, ``attempt``, ``error``,
#: ``delay`` (seconds until the retry), ``in_place`` (False when its due time moved).
function_retried = Signal()

#: An action was found running on a worker that is gone and was marked
#: failed. Keyword arguments: ``count``, ``worker_ids``.
actions_orphaned = Signal()
