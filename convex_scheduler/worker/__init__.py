"""The dispatch loop behind ``manage.py runscheduler``, one concern per module.

* :mod:`.process`: the :class:`Worker` — runner threads, heartbeats,
  wake-ups, ``--burst`` and ``--max-functions``, two-stage shutdown.
* :mod:`.execution`: claiming due rows of the functions this worker knows,
  and reporting what finished; :mod:`.mutations` runs a batch of mutations
  in savepoints (with retries of transient errors), :mod:`.actions` runs one
  action (sync or ``async def``); :mod:`.errors` makes error text storable.
* :mod:`.liveness`: registration and heartbeats, and what happens to a dead
  worker's work — orphaned actions, crashed mutations (poison isolation),
  functions no live worker knows. :mod:`.listeners` receives wake-ups.

The loop knows nothing of HTTP and talks to the database only through the
ORM on the alias the router picks for :class:`ScheduledFunction`.
"""

from .errors import format_error, storable
from .liveness import process_alive
from .process import Worker
from .stats import WorkerStats

__all__ = ["Worker", "WorkerStats", "format_error", "process_alive", "storable"]
