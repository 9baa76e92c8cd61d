"""django-tasks-db's side of the benchmark: the same no-op and probe as tasks."""

import asyncio
import time

from django_tasks import task


@task()
def noop() -> None:
    pass


@task()
def probe(sample: int) -> int:
    # Returned, so it is stored in the task's row as its return value.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@task()
async def sleep_async() -> None:
    # django-tasks runs an async task to completion before the next one.
    await asyncio.sleep(0.1)


@task()
def sleep_sync() -> None:
    time.sleep(0.1)
