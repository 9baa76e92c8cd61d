"""The chat's scheduled functions, registered at start-up by convex_scheduler.

- ``chat:send`` (mutation) posts a message, schedules its self-destruction
  with ``run_after`` and a notification for everyone it mentions. An empty or
  over-long message fails the mutation: nothing it wrote or scheduled remains.
- ``chat:notify`` (internal action) "sends" a push notification. It is slow,
  and fails on purpose for ``dave``, whose phone is never reachable.
- ``chat:remind`` (mutation) posts a reminder, scheduled with ``run_at``; the
  demo dismisses (cancels) some of them before they are due.
- ``chat:digest`` (action) takes a few seconds to summarise the room, then
  schedules a message. Cancel it while it runs: it finishes ``canceled`` and
  the message it schedules is born ``canceled``.
- ``chat:preview`` (action, ``retry=Retry(...)``) fetches a preview of a link
  in a message. The "link server" times out on the first attempt, so every
  preview is retried once with backoff; its completion callback
  ``chat:preview_done`` (scheduled with ``on_complete``) posts the outcome,
  exactly once.
"""

from __future__ import annotations

import logging
import random
import re
import time
from datetime import timedelta

from django.conf import settings

from convex_scheduler import Retry, action, internal_action, internal_mutation, mutation

from .models import Message

logger = logging.getLogger("example_project.chat")

#: The longest message ``chat:send`` accepts.
MAX_BODY = 280
#: People whose phones never answer: notifying them fails.
UNREACHABLE = frozenset({"dave"})
MENTION = re.compile(r"@(\w+)")
LINK = re.compile(r"https?://\S+")


@mutation(name="chat:send")
def send(ctx, author: str, body: str, self_destruct_ms: int | None = None) -> int:
    """Post a message and return its id."""
    body = body.strip()
    if not body:
        raise ValueError("A message cannot be empty.")
    if len(body) > MAX_BODY:
        raise ValueError(f"A message has at most {MAX_BODY} characters, not {len(body)}.")
    message = Message.objects.create(author=author, body=body)
    if self_destruct_ms is not None:
        message.destroy_at = ctx.now + timedelta(milliseconds=self_destruct_ms)
        message.save(update_fields=["destroy_at"])
        ctx.scheduler.run_after(self_destruct_ms, destroy, {"message_id": message.pk})
    for recipient in sorted(set(MENTION.findall(body)) - {author}):
        ctx.scheduler.run_after(0, notify, {"message_id": message.pk, "recipient": recipient})
    for url in LINK.findall(body)[:1]:
        ctx.scheduler.run_after(
            0, preview, {"url": url}, on_complete=preview_done, context={"message_id": message.pk}
        )
    return message.pk


@internal_mutation(name="chat:destroy")
def destroy(ctx, message_id: int) -> None:
    """Delete a message whose time is up (a no-op if it is already gone)."""
    deleted, _ = Message.objects.filter(pk=message_id).delete()
    if deleted:
        logger.info("message %s self-destructed", message_id)


@internal_mutation(name="chat:mark_notified")
def mark_notified(ctx, message_id: int) -> None:
    Message.objects.filter(pk=message_id).update(notified=True)


@internal_action(name="chat:notify")
def notify(ctx, message_id: int, recipient: str) -> None:
    """Send a push notification about a message (only logged here)."""
    # A real push service takes a while: long enough to see ``inProgress``.
    time.sleep(random.uniform(0, settings.CHAT_NOTIFY_LATENCY))
    if recipient in UNREACHABLE:
        raise ConnectionError(f"push service: no device answers for {recipient!r}")
    logger.info("notified %s about message %s", recipient, message_id)
    # An action runs outside any transaction; its writes go through mutations.
    ctx.run_mutation(mark_notified, {"message_id": message_id})


@mutation(name="chat:remind")
def remind(ctx, author: str, text: str) -> int:
    """Post a reminder for ``author``; schedule it with ``run_at``."""
    return send(ctx, author="reminder-bot", body=f"@{author} reminder: {text}")


@action(name="chat:digest")
def digest(ctx, minutes: int = 1) -> None:
    """Summarise the last minutes of the room and post the summary."""
    time.sleep(settings.CHAT_DIGEST_SECONDS)  # pretend to call a language model
    since = ctx.now - timedelta(minutes=minutes)
    count = Message.objects.filter(created__gte=since).count()
    # If this action was canceled meanwhile, the message is born canceled.
    ctx.scheduler.run_after(
        0, send, {"author": "digest-bot", "body": f"{count} message(s) in the last {minutes} min"}
    )


@action(name="chat:preview", retry=Retry(max_attempts=3, initial_backoff_ms=500))
def preview(ctx, url: str) -> dict:
    """Fetch a title for ``url`` (pretend): the first attempt always times out."""
    if ctx.attempt == 1:
        raise TimeoutError(f"link server did not answer for {url}")
    return {"url": url, "title": url.rsplit("/", 1)[-1] or url, "attempts": ctx.attempt}


@internal_mutation(name="chat:preview_done")
def preview_done(ctx, id: int, context: dict, result: dict) -> None:
    """The completion callback of ``chat:preview``: runs exactly once, whatever happened."""
    if result["kind"] == "success":
        preview = result["return_value"]
        body = f"preview of message {context['message_id']}: {preview['title']!r} "
        body += f"(after {preview['attempts']} attempts)"
    else:
        body = f"no preview for message {context['message_id']} ({result['kind']})"
    Message.objects.create(author="preview-bot", body=body[:MAX_BODY])
