"""Functions that misbehave in every way a user's function can (imported by tests/functions.py).

Each is something a real function does sooner or later: raise an error whose
text a database cannot store, call ``sys.exit``, kill its own process, be
``async``, or return a coroutine by mistake. None may stop the queue.
"""

import asyncio
import os
import time
from pathlib import Path

from convex_scheduler import action, mutation

from .models import Counter


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("__str__ itself fails")


def _raise(how: str) -> None:
    if how == "nul":
        raise ValueError("before\x00after")
    if how == "surrogate":
        raise ValueError("lone \ud800 surrogate")
    if how == "unprintable":
        raise UnprintableError()
    if how == "system_exit":
        raise SystemExit(2)  # what argparse does on bad input
    if how == "keyboard_interrupt":
        raise KeyboardInterrupt
    raise ValueError(f"unknown way to fail: {how}")


@mutation(name="poison:raise")
def raise_in_mutation(ctx, how: str) -> None:
    Counter.objects.create(name=f"poison-ran-{ctx.scheduled_function_id}", value=1)
    _raise(how)


@action(name="poison:raise_action")
def raise_in_action(ctx, how: str) -> None:
    _raise(how)


@mutation(name="poison:exit_process")
def exit_process(ctx) -> None:
    """Dies like a segfault or the OOM killer would take it: no cleanup at all."""
    os._exit(13)


def _trace(path: str, sid: int) -> None:
    """One line per start in a file shared by every worker: a second start shows."""
    if path:
        with open(path, "a") as out:
            out.write(f"{sid}\n")


@action(name="poison:sleep")
def sleep_action(ctx, ms: int, trace: str = "") -> None:
    _trace(trace, ctx.scheduled_function_id)
    time.sleep(ms / 1000)


@action(name="poison:async_action")
async def async_action(ctx, marker: str, ms: int = 0) -> None:
    await asyncio.sleep(ms / 1000)
    Path(marker).write_text(str(ctx.scheduled_function_id))


@action(name="poison:async_trace")
async def async_trace(ctx, trace: str, ms: int = 0) -> None:
    """The fault campaign's async action: its start is counted in ``trace``."""
    _trace(trace, ctx.scheduled_function_id)
    await asyncio.sleep(ms / 1000)


@mutation(name="poison:returns_coroutine")
def returns_coroutine(ctx):
    async def later():
        return None

    return later()


if os.environ.get("CONVEX_TEST_NEWER_DEPLOY"):
    # Only workers started with this variable know the function: a rolling
    # deploy, where older workers still run beside newer ones.
    @mutation(name="deploy:new_feature")
    def new_feature(ctx, name: str) -> None:
        Counter.objects.create(name=name, value=1)
