"""Crons the tests declare in code, discovered like any app's ``crons`` module.

Only ones that never fire within a test: a worker started by any test applies
them. Tests that need code crons declare them in a fixture and undeclare them.
"""

from convex_scheduler import crons

from .functions import increment

crons.cron("tests: leap day", increment, "0 3 29 2 *", {"name": "leap-day"}, timezone="UTC")
