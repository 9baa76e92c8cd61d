"""Lifecycle signals of scheduled functions, sent by the worker.

All are sent with ``sender=ScheduledFunction``. Each is sent after the
transition it reports has committed, so a receiver never sees a state that is
later rolled back, with one exception: a mutation has no committed "started"
state (it goes from pending to its outcome in one transaction), so
``function_started`` for a mutation is sent inside that transaction, just
before the function is called. If the transaction then rolls back (a
transient error), the same row is reported started again when it is retried.
"""

from django.dispatch import Signal

#: A worker started running a function: for an action after ``inProgress``
#: committed, for a mutation inside its transaction just before the call.
#: Keyword arguments: ``scheduled_function_id``, ``name``, ``kind``,
#: ``attempt``, ``worker_id``.
function_started = Signal()

#: A function reached a final state. Keyword arguments: ``scheduled_function_id``,
#: ``name``, ``kind``, ``state``, ``error``, ``attempt``, ``duration`` (seconds).
function_finished = Signal()

#: A mutation hit a transient database error and will be retried; sent after
#: its transaction rolled back and, when its due time moved, after that
#: move committed. Keyword
#: arguments: ``scheduled_function_id``, ``name``, ``attempt``, ``error``,
#: ``delay`` (seconds until the retry), ``in_place`` (False when its due time moved).
function_retried = Signal()

#: An action was found running on a worker that is gone and was marked
#: failed. Keyword arguments: ``count``, ``worker_ids``.
actions_orphaned = Signal()
