"""Tests of the chat's scheduled functions, as a user of convex_scheduler writes them.

Run with ``pytest --ds=example_project.settings example_project/chat/tests.py``.
``run_due()`` runs what is due in the test's own thread and transaction, and
``FakeClock`` moves time forward without sleeping.
"""

import pytest

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction
from convex_scheduler.testing import FakeClock, run_due
from example_project.chat.functions import remind, send
from example_project.chat.models import Message


@pytest.fixture
def clock(settings):
    settings.CHAT_NOTIFY_LATENCY = 0
    with FakeClock() as fake:
        yield fake


@pytest.mark.django_db
def test_message_self_destructs(clock):
    scheduler.run_after(0, send, {"author": "ann", "body": "hi @bob", "self_destruct_ms": 5000})

    stats = run_due()  # the message, then the notification it scheduled for now

    assert stats.succeeded == 2
    assert Message.objects.get().notified
    clock.advance(seconds=4)
    run_due()
    assert Message.objects.exists()
    clock.advance(seconds=1)
    run_due()
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_empty_message_fails_and_leaves_nothing(clock):
    sid = scheduler.run_after(0, send, {"author": "ann", "body": "  "})

    run_due()

    row = ScheduledFunction.objects.get(pk=sid)
    assert row.state == "failed"
    assert "A message cannot be empty" in row.error
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_notifying_dave_fails(clock):
    scheduler.run_after(0, send, {"author": "ann", "body": "@dave ping"})

    run_due()

    notification = ScheduledFunction.objects.get(name="chat:notify")
    assert notification.state == "failed"
    assert "no device answers for 'dave'" in notification.error
    assert not Message.objects.get().notified


@pytest.mark.django_db
def test_dismissed_reminder_never_runs(clock):
    sid = scheduler.run_at(
        clock.now().timestamp() * 1000 + 60_000, remind, {"author": "bob", "text": "stand-up"}
    )
    scheduler.cancel(sid)

    clock.advance(minutes=2)
    run_due()

    assert ScheduledFunction.objects.get(pk=sid).state == "canceled"
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_a_link_preview_is_retried_then_its_callback_posts_once(clock):
    scheduler.run_after(0, send, {"author": "ann", "body": "see https://example.com/plan"})

    run_due()  # the message; the preview's first attempt times out
    preview = ScheduledFunction.objects.get(name="chat:preview")
    assert (preview.state, preview.attempts) == ("pending", 1)
    assert preview.error.startswith("TimeoutError")

    clock.advance(seconds=1)  # past the backoff (0.5 s * uniform(0.5, 1.5) at most)
    run_due()  # the second attempt succeeds, then the callback runs
    preview.refresh_from_db()
    assert (preview.state, preview.attempts) == ("success", 2)
    (posted,) = Message.objects.filter(author="preview-bot")
    assert posted.body.endswith("'plan' (after 2 attempts)")
    assert run_due().finished == 0  # the callback ran once
