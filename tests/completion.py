"""Functions for retries, completion callbacks, results and pools (see tests/functions.py)."""

import json
import time
from pathlib import Path

from convex_scheduler import NonRetryableError, Retry, action, mutation

from .models import ActionRun, Counter

FAST = Retry(max_attempts=5, initial_backoff_ms=0, base=2)


@action(name="retry:flaky", retry=FAST)
def flaky(ctx, key: str, failures: int) -> str:
    """Fails ``failures`` times, then succeeds; every start leaves an ActionRun."""
    runs = ActionRun.objects.filter(scheduled_function_id=ctx.scheduled_function_id)
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label=key)
    if runs.count() <= failures:
        raise ConnectionError(f"flaky attempt {ctx.attempt}")
    return f"ok after {ctx.attempt}"


@action(name="retry:non_retryable", retry=True)
def non_retryable(ctx) -> None:
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label="nr")
    raise NonRetryableError("the card was declined")


@action(name="retry:at_most_once")
def at_most_once(ctx) -> None:
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label="once")
    raise ConnectionError("no retry without opting in")


@action(name="retry:blocking", retry=FAST)
def blocking(ctx, gate: str, entered: str) -> str:
    """Waits at ``gate`` on its first attempt (so a test can kill the worker), not after."""
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label="b")
    if ctx.attempt == 1:
        Path(entered).touch()
        while Path(gate).exists():
            time.sleep(0.01)
    return "done"


@mutation(name="result:mutation")
def returns_value(ctx, value: object = None) -> object:
    return value


@action(name="result:action")
def action_returns_value(ctx, value: object = None) -> object:
    return value


@mutation(name="callback:record")
def record_outcome(ctx, id: int, context: object, result: dict) -> None:
    ActionRun.objects.create(
        scheduled_function_id=id, label=json.dumps({"context": context, "result": result})[:100]
    )
    Counter.objects.create(name=f"callback-{id}-{ctx.scheduled_function_id}", value=1)


@action(name="pool:limited", pool="limited")
def limited(ctx, ms: int) -> None:
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label="pool")
    time.sleep(ms / 1000)
