"""The scheduler uses Django's connections as Django's own request cycle does.

Every write goes through Django's cursor wrapper (so ``execute_wrapper``,
query logging and APM hooks see it), and the worker honours ``CONN_MAX_AGE``
and ``CONN_HEALTH_CHECKS``.
"""

import pytest
from django.db import connection, connections, transaction
from django.db.backends.signals import connection_created
from django.test.utils import CaptureQueriesContext

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State
from convex_scheduler.worker import Worker

from . import functions

pytestmark = pytest.mark.django_db


def test_scheduling_goes_through_execute_wrapper_and_query_capture():
    seen = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(spy):
        sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    inserts = [sql for sql in seen if sql.lstrip().upper().startswith(("INSERT", "WITH"))]
    assert len(inserts) == 1
    assert ScheduledFunction._meta.db_table in inserts[0]
    assert any(ScheduledFunction._meta.db_table in q["sql"] for q in captured.captured_queries)
    assert ScheduledFunction.objects.get(pk=sid).state == State.PENDING


def test_scheduling_inside_a_rolled_back_transaction_leaves_nothing():
    with transaction.atomic():
        sid = scheduler.run_after(0, functions.increment, {"name": "a"})
        transaction.set_rollback(True)
    assert not ScheduledFunction.objects.filter(pk=sid).exists()


def _connections_opened_by_a_worker(runs):
    """How many connections a burst worker opened for ``runs`` claims."""
    opened = []

    def count(sender, connection, **kwargs):
        opened.append(connection.alias)

    for _ in range(runs):
        scheduler.run_after(0, functions.increment, {"name": "c"})
    connection.close()
    connection_created.connect(count)
    try:
        Worker(burst=True, concurrency=1, max_functions=runs).run()
    finally:
        connection_created.disconnect(count)
    return opened


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("max_age", "reconnects"), [(0, True), (None, False), (600, False)])
def test_the_worker_honours_conn_max_age(settings, max_age, reconnects):
    alias = connection.alias
    original = connections[alias].settings_dict["CONN_MAX_AGE"]
    connections[alias].close()
    connections[alias].settings_dict["CONN_MAX_AGE"] = max_age
    try:
        # One mutation per claim, so each claim is one "request".
        settings.CONVEX_SCHEDULER = {**settings.CONVEX_SCHEDULER, "BATCH_SIZE": 1}
        opened = _connections_opened_by_a_worker(runs=3)
    finally:
        connections[alias].close()
        connections[alias].settings_dict["CONN_MAX_AGE"] = original
    if reconnects:
        assert len(opened) >= 3  # at least one per claim
    else:
        assert len(opened) == 1
    assert ScheduledFunction.objects.filter(state=State.SUCCESS).count() == 3


def _lose_the_connection(alias):
    """The server side goes away under Django's open connection."""
    lost = connections[alias]
    if lost.vendor == "mysql":
        # MySQLdb answers ping() on a connection closed client-side as if it
        # were fine: end it on the server, from a second connection.
        with lost.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            (thread_id,) = cursor.fetchone()
        killer = connections.create_connection(alias)
        try:
            with killer.cursor() as cursor:
                cursor.execute(f"KILL {int(thread_id)}")
        finally:
            killer.close()
    else:
        lost.connection.close()


@pytest.mark.skipif(
    connection.vendor == "sqlite", reason="Django treats an SQLite connection as always usable"
)
@pytest.mark.django_db(transaction=True)
def test_the_worker_health_checks_a_connection_that_went_bad(settings, caplog):
    """With CONN_HEALTH_CHECKS, a connection closed under the worker is replaced
    before the next claim instead of failing it."""
    alias = connection.alias
    original = dict(connections[alias].settings_dict)
    connections[alias].close()
    connections[alias].settings_dict["CONN_MAX_AGE"] = None
    connections[alias].settings_dict["CONN_HEALTH_CHECKS"] = True
    try:
        scheduler.run_after(0, functions.increment, {"name": "h"})
        connections[alias].ensure_connection()
        _lose_the_connection(alias)
        stats = Worker(burst=True, concurrency=1).run()
    finally:
        connections[alias].close()
        connections[alias].settings_dict.update(original)
    assert stats.succeeded == 1
    assert stats.retried == 0
    # Replaced before use, not discovered broken by a failing query.
    warnings = [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert warnings == []


@pytest.mark.django_db(transaction=True)
def test_max_functions_is_exact_with_concurrent_threads():
    """The budget is reserved before each claim, under a lock: four threads
    claiming at once never run more than asked."""
    for index in range(30):
        scheduler.run_after(0, functions.record, {"label": str(index)})
    for _ in range(30):
        scheduler.run_after(0, functions.increment, {"name": "budget"})
    Worker(burst=True, concurrency=4, max_functions=10).run()
    ran = ScheduledFunction.objects.exclude(state=State.PENDING).count()
    assert ran == 10
    assert ScheduledFunction.objects.filter(state=State.PENDING).count() == 50


@pytest.mark.django_db(transaction=True)
def test_function_started_for_an_action_is_sent_after_in_progress_committed():
    from convex_scheduler.signals import function_started

    seen = []

    def on_started(sender, scheduled_function_id, kind, **kwargs):
        # Read from another connection: only committed state is visible there.
        result = {}

        def read():
            try:
                result["state"] = ScheduledFunction.objects.get(pk=scheduled_function_id).state
            finally:
                connections.close_all()

        import threading

        reader = threading.Thread(target=read)
        reader.start()
        reader.join()
        seen.append((kind, result["state"]))

    scheduler.run_after(0, functions.record, {"label": "x"})
    function_started.connect(on_started)
    try:
        Worker(burst=True, concurrency=1).run()
    finally:
        function_started.disconnect(on_started)
    assert seen == [("action", State.IN_PROGRESS)]
