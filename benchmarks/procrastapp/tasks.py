"""Procrastinate's side of the benchmark: the no-op and the I/O-bound functions as tasks.

Written the way Procrastinate's Django how-to says: tasks in an app's
``tasks`` module (autodiscovered), on the app from ``procrastinate.contrib.django``.
"""

import asyncio
import time

from procrastinate.contrib.django import app


@app.task
def noop() -> None:
    pass


@app.task
async def sleep_async() -> None:
    await asyncio.sleep(0.1)


@app.task
def sleep_sync() -> None:
    time.sleep(0.1)
