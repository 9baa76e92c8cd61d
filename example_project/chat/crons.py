"""The chat's crons, declared at start-up by convex_scheduler (like ``functions``).

- ``sweep expired messages`` runs ``chat:sweep`` at the start of every minute:
  a safety net that deletes messages whose self-destruct time has passed, had
  their ``chat:destroy`` been canceled or failed. Watch it under Crons in the
  admin: its next run, and its last runs, each a link to its scheduled function.
"""

from __future__ import annotations

import logging

from convex_scheduler import crons, internal_mutation

from .models import Message

logger = logging.getLogger("example_project.chat")


@internal_mutation(name="chat:sweep")
def sweep(ctx) -> int:
    """Delete the messages whose self-destruct time has passed; return how many."""
    deleted, _ = Message.objects.filter(destroy_at__lte=ctx.now).delete()
    if deleted:
        logger.info("swept %s expired message(s)", deleted)
    return deleted


crons.cron("sweep expired messages", sweep, "* * * * *", timezone="UTC")
