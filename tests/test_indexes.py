"""The queue table's indexes: only those the hot queries use, partial where the database allows.

docs/internals.rst lists each index with the queries that need it;
``benchmarks/indexes.py`` checks the plans and timings on a million rows.
"""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from convex_scheduler.models import ScheduledFunction, State

pytestmark = pytest.mark.django_db

TABLE = ScheduledFunction._meta.db_table
INDEXES = {
    "cs_due_idx",
    "cs_completed_idx",
    "cs_parent_idx",
    "cs_pool_idx",
    "cs_scheduled_idx",
    "cs_state_idx",
    "cs_name_idx",
    "cs_cron_tick_unique",
}
PARTIAL = {
    "cs_due_idx": "next_run_time",
    "cs_completed_idx": "completed_time",
    "cs_parent_idx": "parent_id",
}


def test_the_queue_table_has_exactly_its_documented_indexes():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TABLE)
    indexes = {
        name
        for name, info in constraints.items()
        if (info["index"] or info["unique"]) and not info["primary_key"]
    }
    assert indexes == INDEXES


def index_definitions() -> dict[str, str]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [TABLE]
            )
        else:
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s",
                [TABLE],
            )
        return {name: definition or "" for name, definition in cursor.fetchall()}


def leading_columns() -> dict[str, str]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TABLE)
    return {name: info["columns"][0] for name, info in constraints.items() if info["columns"]}


def test_partial_indexes_hold_only_the_rows_their_queries_match():
    if not connection.features.supports_partial_indexes:
        # MariaDB has no partial indexes: the same indexes, over every row.
        leading = leading_columns()
        for name, column in PARTIAL.items():
            assert leading[name] == column
        return
    definitions = index_definitions()
    for name, column in PARTIAL.items():
        normalised = definitions[name].replace('"', "").replace("(", "").replace(")", "")
        assert f"WHERE {column} IS NOT NULL" in normalised, definitions[name]


def hot_queries():
    now = timezone.now()
    objects = ScheduledFunction.objects
    return {
        "claim": (objects.due(now).filter(owner__in=("", "w")), "cs_due_idx"),
        "next due time": (
            objects.filter(next_run_time__isnull=False).order_by("next_run_time")[:1],
            "cs_due_idx",
        ),
        "retention": (
            objects.expired(now, timedelta(days=7)).order_by()[:1000],
            "cs_completed_idx",
        ),
        "children": (objects.filter(parent_id=1), "cs_parent_idx"),
        "pools": (
            objects.in_progress().filter(kind="action", pool="mail").order_by(),
            "cs_pool_idx",
        ),
        "pools overview": (
            objects.filter(state__in=(State.PENDING, State.IN_PROGRESS))
            .exclude(pool="")
            .order_by()
            .values_list("pool", "state"),
            "cs_pool_idx",
        ),
        "newest first": (objects.order_by("-scheduled_time", "-id")[:100], "cs_scheduled_idx"),
        "by state": (
            objects.filter(state=State.FAILED).order_by("-scheduled_time")[:100],
            "cs_state_idx",
        ),
        "by name": (
            objects.filter(name="tests.functions.increment").order_by("-scheduled_time")[:100],
            "cs_name_idx",
        ),
    }


#: The column each hot query's index must lead with.
LEADING = {
    "claim": "next_run_time",
    "next due time": "next_run_time",
    "retention": "completed_time",
    "children": "parent_id",
    "pools": "pool",
    "pools overview": "pool",
    "newest first": "scheduled_time",
    "by state": "state",
    "by name": "name",
}


@pytest.mark.parametrize("query", sorted(hot_queries()))
def test_each_hot_query_uses_its_index(query):
    if connection.vendor == "mysql":
        # On a near-empty table MariaDB plans a scan whatever the indexes;
        # benchmarks/indexes.py checks its plans on a million rows. Here: the
        # query's index exists and leads with the column the query needs.
        index = hot_queries()[query][1]
        assert leading_columns()[index] == LEADING[query]
        return
    if query.startswith("pools") and connection.vendor == "sqlite":
        pytest.skip(
            "SQLite picks the pool index from ANALYZE statistics, which an empty table "
            "lacks; benchmarks/indexes.py checks it on a million rows"
        )
    queryset, index = hot_queries()[query]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # An empty table is cheapest to scan: plan as for a large one.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset.explain()
    assert index in plan, plan
