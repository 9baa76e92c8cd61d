import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from convex_scheduler import admin as scheduler_admin
from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, SchedulerWorker, State
from convex_scheduler.testing import run_due

from . import functions
from .models import Counter
from .test_api import bulk_rows

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:convex_scheduler_scheduledfunction_changelist")
ADD = reverse("admin:convex_scheduler_scheduledfunction_add")


def change_url(pk):
    return reverse("admin:convex_scheduler_scheduledfunction_change", args=[pk])


def cancel_url(pk):
    return reverse("admin:convex_scheduler_scheduledfunction_cancel", args=[pk])


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", None)


@pytest.fixture
def admin_client(superuser):
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def viewer_client(db):
    user = get_user_model().objects.create_user("viewer", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_scheduledfunction"),
        Permission.objects.get(codename="view_schedulerworker"),
    )
    client = Client()
    client.force_login(user)
    return client


def text(response):
    return response.content.decode()


# The list.


def test_changelist_shows_the_columns_and_a_state_badge(admin_client, clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    failed = scheduler.run_after(0, functions.failing_action)
    run_due()
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    html = text(response)
    assert "tests.functions:increment" in html
    assert '<span class="cs-badge cs-state-success">success</span>' in html
    assert '<span class="cs-badge cs-state-failed">failed</span>' in html
    assert "convex_scheduler/admin.css" in html
    assert change_url(sid) in html and change_url(failed) in html
    # Arguments may be huge; the list never loads them.
    assert "args" in response.context["cl"].queryset.query.deferred_loading[0]


def test_overview_counts_states_and_shows_the_lag(admin_client, clock):
    scheduler.run_after(0, functions.increment, {"name": "a"})
    clock.advance(seconds=90)
    scheduler.run_after(0, functions.increment, {"name": "b"})
    scheduler.run_after(60_000, functions.increment, {"name": "later"})
    canceled = scheduler.run_after(60_000, functions.increment, {"name": "c"})
    scheduler.cancel(canceled)
    SchedulerWorker.objects.create(
        id="w1", hostname="h", pid=1, started_time=clock.now(), last_heartbeat=clock.now()
    )
    SchedulerWorker.objects.create(
        id="w2",
        hostname="h",
        pid=2,
        started_time=clock.now(),
        last_heartbeat=clock.now() - timedelta(hours=1),
    )
    response = admin_client.get(CHANGELIST)
    overview = response.context["overview"]
    counts = {state["value"]: state["count"] for state in overview["states"]}
    assert counts == {"pending": 3, "inProgress": 0, "success": 0, "failed": 0, "canceled": 1}
    assert overview["lag"] == timedelta(seconds=90)
    assert overview["live_workers"] == 1
    html = text(response)
    assert "90.0 s" in html
    assert '<strong class="cs-count" data-state="pending">3</strong>' in html
    assert "1 live worker" in html

    run_due()
    response = admin_client.get(CHANGELIST)
    assert response.context["overview"]["lag"] is None
    assert "nothing is due" in text(response)


def ids_in(response):
    return sorted(obj.pk for obj in response.context["cl"].result_list)


def test_filters_by_state_kind_and_registered_name(admin_client, clock):
    mutation = scheduler.run_after(0, functions.increment, {"name": "a"})
    action = scheduler.run_after(0, functions.record)
    pending = scheduler.run_after(60_000, functions.increment, {"name": "b"})
    run_due()
    assert ids_in(admin_client.get(CHANGELIST, {"state__exact": "success"})) == sorted(
        [mutation, action]
    )
    assert ids_in(admin_client.get(CHANGELIST, {"state__exact": "pending"})) == [pending]
    assert ids_in(admin_client.get(CHANGELIST, {"kind__exact": "action"})) == [action]
    response = admin_client.get(CHANGELIST, {"name": "tests.functions:record"})
    assert ids_in(response) == [action]
    # The name filter offers every registered name, internal ones included,
    # without asking the database for distinct names.
    html = text(admin_client.get(CHANGELIST))
    assert "?name=tests%3Ainternal_increment" in html
    assert "?name=tests.functions%3Afailing_action" in html


def test_search_by_name_and_by_id(admin_client, clock):
    first = scheduler.run_after(0, functions.increment, {"name": "a"})
    second = scheduler.run_after(0, functions.record)
    assert ids_in(admin_client.get(CHANGELIST, {"q": "record"})) == [second]
    assert ids_in(admin_client.get(CHANGELIST, {"q": str(first)})) == [first]
    assert ids_in(admin_client.get(CHANGELIST, {"q": f"#{second}"})) == [second]
    assert ids_in(admin_client.get(CHANGELIST, {"q": str(10**30)})) == []
    # A NUL character (which PostgreSQL cannot compare) is refused with a message.
    response = admin_client.get(CHANGELIST, {"q": "a\x00b"})
    assert response.status_code == 400
    assert "NUL character" in text(response)


@pytest.mark.parametrize(
    "params",
    [
        {"parent": str(10**30)},
        {"parent": "abc"},
        {"scheduled_time__year": "99999999999999999999"},
        {"attempts": str(10**30)},
        {"id": str(10**30)},
        {"name__contains": "a\x00"},
        {"error__icontains": "x"},
    ],
)
def test_lookups_outside_the_filters_are_refused_not_a_500(admin_client, clock, params):
    scheduler.run_after(0, functions.increment, {"name": "a"})
    response = admin_client.get(CHANGELIST, params)
    assert response.status_code == 400
    assert "errornote" in text(response)


def test_children_link_filters_by_parent(admin_client, clock):
    parent = scheduler.run_after(
        0, functions.schedule_children, {"name": "c", "count": 2, "delay_ms": 10}
    )
    run_due()
    children = sorted(
        ScheduledFunction.objects.filter(parent_id=parent).values_list("pk", flat=True)
    )
    assert ids_in(admin_client.get(CHANGELIST, {"parent": parent})) == children


def test_date_hierarchy_drills_down_without_distinct_scans(admin_client, clock):
    clock.set(datetime(2030, 6, 15, 12, tzinfo=UTC))
    rows = {
        "this": scheduler.run_at(
            datetime(2030, 6, 15, 13, tzinfo=UTC), functions.increment, {"name": "a"}
        ),
        "next_month": scheduler.run_at(
            datetime(2030, 7, 2, tzinfo=UTC), functions.increment, {"name": "a"}
        ),
        "next_year": scheduler.run_at(
            datetime(2031, 2, 1, tzinfo=UTC), functions.increment, {"name": "a"}
        ),
    }
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)
    assert not any("DISTINCT" in query["sql"].upper() for query in queries.captured_queries)
    years = [choice["title"] for choice in response.context["cs_date_hierarchy"]["choices"]]
    assert years == ["2030", "2031"]
    assert "scheduled_time__year=2031" in text(response)

    response = admin_client.get(CHANGELIST, {"scheduled_time__year": "2030"})
    assert ids_in(response) == sorted([rows["this"], rows["next_month"]])
    months = response.context["cs_date_hierarchy"]["choices"]
    assert [choice["link"] for choice in months] == [
        "?scheduled_time__month=6&scheduled_time__year=2030",
        "?scheduled_time__month=7&scheduled_time__year=2030",
    ]
    response = admin_client.get(
        CHANGELIST, {"scheduled_time__year": "2030", "scheduled_time__month": "7"}
    )
    assert ids_in(response) == [rows["next_month"]]
    assert len(response.context["cs_date_hierarchy"]["choices"]) == 1
    response = admin_client.get(
        CHANGELIST,
        {"scheduled_time__year": "2030", "scheduled_time__month": "6", "scheduled_time__day": "15"},
    )
    assert ids_in(response) == [rows["this"]]
    assert response.context["cs_date_hierarchy"]["back"]["title"] == "June 2030"


def test_a_large_table_lists_in_bounded_queries_without_a_full_count(admin_client, clock):
    bulk_rows(clock.now())
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 100
    sqls = [query["sql"].upper() for query in queries.captured_queries]
    table = ScheduledFunction._meta.db_table.upper()
    counts = [sql for sql in sqls if "COUNT(" in sql and table in sql]
    # The capped page count, the overview's capped count of each state and its
    # GROUP BY of unfinished pooled rows; nothing counts the whole table.
    grouped = [sql for sql in counts if "GROUP BY" in sql]
    assert len(grouped) == 1 and "'PENDING', 'INPROGRESS'" in grouped[0]
    capped = [sql for sql in counts if "GROUP BY" not in sql]
    assert len(capped) == 1 + len(State) and all("LIMIT" in sql for sql in capped)
    assert not any("DISTINCT" in sql for sql in sqls)
    assert len(sqls) <= 16
    assert "More than 10000 scheduled functions" in text(response)
    # A far page is still one LIMIT/OFFSET query away.
    response = admin_client.get(CHANGELIST, {"p": "50"})
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 100


def test_changelist_queries_do_not_grow_with_rows(admin_client, clock):
    parent = scheduler.run_after(0, functions.schedule_children, {"name": "c", "count": 3})
    run_due()
    with CaptureQueriesContext(connection) as few:
        admin_client.get(CHANGELIST)
    scheduler.run_after(0, functions.schedule_children, {"name": "d", "count": 40})
    run_due()
    assert ScheduledFunction.objects.count() > 40
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(CHANGELIST)
    assert len(response.context["cl"].result_list) > 40
    assert len(many) == len(few)
    assert parent


# The detail page.


def test_detail_page_is_read_only_and_pretty_prints(admin_client, clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "<b>a</b>", "by": 2})
    response = admin_client.get(change_url(sid))
    assert response.status_code == 200
    html = text(response)
    assert (
        '<pre class="cs-pre">{\n  &quot;by&quot;: 2,\n'
        "  &quot;name&quot;: &quot;&lt;b&gt;a&lt;/b&gt;&quot;\n}</pre>" in html
    )
    assert 'name="_save"' not in html
    assert "deletelink" not in html
    # Nothing can be saved over a row, whatever is posted.
    response = admin_client.post(change_url(sid), {"state": "success", "name": "x"})
    assert response.status_code == 403
    assert ScheduledFunction.objects.get(pk=sid).state == State.PENDING


def test_times_show_seconds_and_finished_rows_their_run_time(admin_client, clock):
    clock.set(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    sid = scheduler.run_after(1500, functions.increment, {"name": "a"})
    ScheduledFunction.objects.filter(pk=sid).update(
        state=State.SUCCESS,
        next_run_time=None,
        started_time=datetime(2030, 1, 2, 3, 4, 7, tzinfo=UTC),
        completed_time=datetime(2030, 1, 2, 3, 4, 9, 500_000, tzinfo=UTC),
    )
    listing = text(admin_client.get(CHANGELIST))
    assert "03:04:06</time>" in listing  # scheduled, to the second
    assert "03:04:09</time>" in listing  # completed
    assert "2.5 s" in listing  # run time
    detail = text(admin_client.get(change_url(sid)))
    assert 'datetime="2030-01-02T03:04:06.500000+00:00"' in detail
    assert "Run time" in detail and "2.5 s" in detail


def test_changelist_title_fits_a_read_only_list(admin_client, viewer_client):
    for client in (admin_client, viewer_client):
        html = text(client.get(CHANGELIST))
        assert "<h1>Scheduled functions</h1>" in html
        assert "to change" not in html and "to view" not in html


def test_large_args_are_collapsed_cut_and_downloadable(admin_client, clock):
    args = {"name": "x" * 100_000}
    sid = scheduler.run_after(0, functions.increment, args)
    html = text(admin_client.get(change_url(sid)))
    assert '<details class="cs-large"><summary>97.7' in html
    assert "first 65,536 characters are shown" in html
    assert html.count("x" * 1000) < 70
    download = admin_client.get(f"{CHANGELIST}{sid}/args.json")
    assert download.status_code == 200
    assert download["Content-Type"] == "application/json; charset=utf-8"
    assert f"scheduled-function-{sid}-args.json" in download["Content-Disposition"]
    assert json.loads(download.content) == args


def test_long_errors_are_cut_and_downloadable(admin_client, clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    error = "E" * 70_000 + "\nthe end"
    ScheduledFunction.objects.filter(pk=sid).update(
        state=State.FAILED, next_run_time=None, completed_time=clock.now(), error=error
    )
    html = text(admin_client.get(change_url(sid)))
    assert "the end" not in html
    assert f"{CHANGELIST}{sid}/error.txt" in html
    download = admin_client.get(f"{CHANGELIST}{sid}/error.txt")
    assert download["Content-Type"] == "text/plain; charset=utf-8"
    assert download.content.decode() == error


def test_downloads_need_the_view_permission(db, clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    user = get_user_model().objects.create_user("nobody", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(f"{CHANGELIST}{sid}/args.json").status_code == 403
    assert client.get(f"{CHANGELIST}{sid}/error.txt").status_code == 403


def test_detail_page_shows_the_error_escaped(admin_client, clock):
    sid = scheduler.run_after(0, functions.increment_then_fail, {"name": "<x>"})
    run_due()
    html = text(admin_client.get(change_url(sid)))
    assert '<pre class="cs-pre cs-error">' in html
    assert "boom after incrementing &lt;x&gt;" in html


def test_detail_page_links_parent_and_children(admin_client, clock):
    parent = scheduler.run_after(
        0, functions.schedule_children, {"name": "c", "count": 2, "delay_ms": 10}
    )
    run_due()
    children = sorted(
        ScheduledFunction.objects.filter(parent_id=parent).values_list("pk", flat=True)
    )
    html = text(admin_client.get(change_url(parent)))
    for child in children:
        assert f'<a href="{change_url(child)}">#{child} tests.functions:increment</a>' in html
    html = text(admin_client.get(change_url(children[0])))
    assert f'<a href="{change_url(parent)}">#{parent} tests.functions:schedule_children</a>' in html


def test_detail_page_lists_some_children_and_links_to_the_rest(admin_client, clock):
    parent = scheduler.run_after(
        0, functions.schedule_children, {"name": "c", "count": 25, "delay_ms": 10}
    )
    run_due()
    html = text(admin_client.get(change_url(parent)))
    assert html.count('class="cs-badge cs-state-pending"') == scheduler_admin.CHILDREN_SHOWN
    assert f'href="{CHANGELIST}?parent={parent}"' in html


def test_a_deleted_parent_shows_its_id_without_a_link(admin_client, clock):
    parent = scheduler.run_after(
        0, functions.schedule_children, {"name": "c", "count": 1, "delay_ms": 10}
    )
    run_due()
    child = ScheduledFunction.objects.get(parent_id=parent)
    ScheduledFunction.objects.filter(pk=parent).delete()
    response = admin_client.get(change_url(child.pk))
    assert response.status_code == 200
    html = text(response)
    assert f"#{parent} (deleted)" in html
    assert change_url(parent) not in html


@pytest.mark.parametrize("object_id", ["99999", str(10**30), "abc"])
def test_unknown_or_malformed_ids_redirect_not_500(admin_client, object_id):
    response = admin_client.get(f"{CHANGELIST}{object_id}/change/")
    assert response.status_code == 302


# Cancelling.


def test_cancel_button_only_for_pending_or_running_functions(admin_client, clock):
    pending = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    done = scheduler.run_after(0, functions.increment, {"name": "b"})
    run_due()
    running = scheduler.run_after(0, functions.record)
    ScheduledFunction.objects.filter(pk=running).start_action("w", clock.now())
    for pk in (pending, running):
        assert f'action="{cancel_url(pk)}"' in text(admin_client.get(change_url(pk)))
    assert "cs-cancel-button" not in text(admin_client.get(change_url(done)))


def test_cancel_button_cancels_through_the_scheduler(admin_client, clock):
    sid = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    response = admin_client.post(cancel_url(sid), follow=True)
    assert response.redirect_chain[-1][0] == change_url(sid)
    row = ScheduledFunction.objects.get(pk=sid)
    assert row.state == State.CANCELED
    assert row.completed_time == clock.now()
    assert "Canceled" in text(response)
    assert LogEntry.objects.filter(object_id=str(sid)).exists()
    clock.advance(minutes=2)
    run_due()
    assert not Counter.objects.exists()


def test_cancel_of_a_finished_function_changes_nothing(admin_client, clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    run_due()
    response = admin_client.post(cancel_url(sid), follow=True)
    assert ScheduledFunction.objects.get(pk=sid).state == State.SUCCESS
    assert "already finished" in text(response)


def test_cancel_needs_post_csrf_and_the_change_permission(superuser, viewer_client, clock):
    sid = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    assert client.get(cancel_url(sid)).status_code == 405
    assert client.post(cancel_url(sid)).status_code == 403
    assert viewer_client.post(cancel_url(sid)).status_code == 403
    assert "cs-cancel-button" not in text(viewer_client.get(change_url(sid)))
    assert ScheduledFunction.objects.get(pk=sid).state == State.PENDING

    page = client.get(change_url(sid))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', text(page)).group(1)
    assert client.post(cancel_url(sid), {"csrfmiddlewaretoken": token}).status_code == 302
    assert ScheduledFunction.objects.get(pk=sid).state == State.CANCELED


@pytest.mark.parametrize("object_id", ["99999", str(10**30)])
def test_cancel_of_an_unknown_id_is_404(admin_client, object_id):
    assert admin_client.post(f"{CHANGELIST}{object_id}/cancel/").status_code == 404


def test_cancel_selected_action_reports_how_many(admin_client, clock):
    pending = [scheduler.run_after(60_000, functions.increment, {"name": "a"}) for _ in range(3)]
    done = scheduler.run_after(0, functions.increment, {"name": "b"})
    run_due()
    response = admin_client.post(
        CHANGELIST,
        {"action": "cancel_selected", "_selected_action": [*pending, done]},
        follow=True,
    )
    assert "Canceled 3 scheduled functions." in text(response)
    states = dict(ScheduledFunction.objects.values_list("pk", "state"))
    assert [states[pk] for pk in pending] == ["canceled"] * 3
    assert states[done] == "success"
    response = admin_client.post(
        CHANGELIST, {"action": "cancel_selected", "_selected_action": pending}, follow=True
    )
    assert "Canceled 0 scheduled functions." in text(response)


def test_cancel_selected_needs_the_change_permission(viewer_client, clock):
    sid = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    response = viewer_client.get(CHANGELIST)
    assert response.status_code == 200
    assert "cancel_selected" not in text(response)
    response = viewer_client.post(
        CHANGELIST, {"action": "cancel_selected", "_selected_action": [sid]}
    )
    assert response.status_code == 403
    assert "permission" in text(response)
    assert ScheduledFunction.objects.get(pk=sid).state == State.PENDING


def test_action_label(admin_client):
    response = admin_client.get(CHANGELIST)
    assert "Cancel selected scheduled functions" in text(response)
    assert "delete_selected" not in text(response)


# Scheduling.


def test_schedule_form_lists_public_and_internal_functions(admin_client):
    response = admin_client.get(ADD)
    assert response.status_code == 200
    html = text(response)
    assert "Schedule a function" in html
    assert '<optgroup label="Public functions">' in html
    assert '<optgroup label="Internal functions">' in html
    assert 'value="tests:internal_increment"' in html
    assert 'value="tests.functions:increment"' in html
    assert "Schedule a function" in text(admin_client.get(CHANGELIST))


def test_schedule_form_schedules_with_a_delay(admin_client, clock):
    response = admin_client.post(
        ADD,
        {
            "function": "tests.functions:increment",
            "args": '{"name": "a", "by": 2}',
            "delay_ms": "1500",
        },
    )
    row = ScheduledFunction.objects.get()
    assert response.status_code == 302
    assert response["Location"] == change_url(row.pk)
    assert row.args == {"name": "a", "by": 2}
    assert row.scheduled_time == clock.now() + timedelta(milliseconds=1500)
    assert LogEntry.objects.filter(object_id=str(row.pk)).exists()
    clock.advance(seconds=2)
    run_due()
    assert Counter.objects.get(name="a").value == 2


def test_schedule_form_schedules_internal_functions_at_a_time(admin_client, clock):
    clock.set(datetime(2030, 1, 1, tzinfo=UTC))
    response = admin_client.post(
        ADD,
        {
            "function": "tests:internal_increment",
            "args": '{"name": "i"}',
            "run_at_0": "2030-01-02",
            "run_at_1": "03:04:05",
        },
    )
    assert response.status_code == 302
    row = ScheduledFunction.objects.get()
    assert row.name == "tests:internal_increment"
    assert row.scheduled_time == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_schedule_form_with_empty_args_uses_an_empty_object(admin_client, clock):
    response = admin_client.post(
        ADD, {"function": "tests.functions:record", "args": "", "delay_ms": "0"}
    )
    assert response.status_code == 302
    assert ScheduledFunction.objects.get().args == {}


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"function": "tests.functions:nope", "delay_ms": "0"},
            "function",
            "No function is registered",
        ),
        ({"args": "{not json", "delay_ms": "0"}, "args", "valid JSON"),
        ({"args": "[1]", "delay_ms": "0"}, "args", "must be a dict"),
        ({"args": "[" * 10_000 + "]" * 10_000, "delay_ms": "0"}, "args", "at most 64 levels"),
        ({"args": '{"name": "\\ud800"}', "delay_ms": "0"}, "args", "not valid Unicode"),
        ({"args": '{"name": "a", "by": ' + "9" * 5000 + "}", "delay_ms": "0"}, "args", "digits"),
        ({"args": '{"nome": "a"}', "delay_ms": "0"}, "args", "signature"),
        ({"args": '{"name": "a\\u0000"}', "delay_ms": "0"}, "args", "NUL"),
        ({"delay_ms": "-1"}, "delay_ms", "0 or more"),
        ({"delay_ms": "soon"}, "delay_ms", "Enter a number"),
        ({"delay_ms": "1e400"}, "delay_ms", "Enter a number"),
        ({"delay_ms": str(6 * 366 * 86_400_000)}, "delay_ms", "five years"),
        ({"run_at_0": "2100-01-01", "run_at_1": "00:00"}, "run_at", "five years"),
        ({"run_at_0": "2030-02-30", "run_at_1": "00:00"}, "run_at", "valid date"),
        ({}, "__all__", "Give delay_ms"),
        ({"delay_ms": "0", "run_at_0": "2030-01-01", "run_at_1": "00:00"}, "__all__", "not both"),
    ],
)
def test_schedule_form_validates_like_the_api(admin_client, clock, data, field, message):
    clock.set(datetime(2030, 1, 1, tzinfo=UTC))
    body = {"function": "tests.functions:increment", "args": '{"name": "a"}', **data}
    response = admin_client.post(ADD, body)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert not ScheduledFunction.objects.exists()


def test_schedule_form_needs_the_add_permission(viewer_client):
    assert viewer_client.get(ADD).status_code == 403
    assert (
        viewer_client.post(ADD, {"function": "tests.functions:record", "delay_ms": "0"}).status_code
        == 403
    )
    assert not ScheduledFunction.objects.exists()


def test_schedule_form_needs_csrf(superuser):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    response = client.post(ADD, {"function": "tests.functions:record", "delay_ms": "0"})
    assert response.status_code == 403
    assert not ScheduledFunction.objects.exists()


# Workers.


def test_workers_are_listed_read_only(admin_client, clock):
    SchedulerWorker.objects.create(
        id="alive-1", hostname="box", pid=10, started_time=clock.now(), last_heartbeat=clock.now()
    )
    SchedulerWorker.objects.create(
        id="gone-1",
        hostname="box",
        pid=11,
        started_time=clock.now(),
        last_heartbeat=clock.now() - timedelta(minutes=5),
    )
    url = reverse("admin:convex_scheduler_schedulerworker_changelist")
    response = admin_client.get(url)
    assert response.status_code == 200
    html = text(response)
    assert "alive-1" in html and "gone-1" in html
    assert html.count('alt="True"') == 1
    assert html.count('alt="False"') == 1
    assert reverse("admin:convex_scheduler_schedulerworker_add") not in html
    change = admin_client.post(
        reverse("admin:convex_scheduler_schedulerworker_change", args=["alive-1"]),
        {"hostname": "x", "pid": "1"},
    )
    assert change.status_code == 403
    assert SchedulerWorker.objects.get(pk="alive-1").hostname == "box"


@pytest.mark.django_db
def test_overview_shows_running_and_pending_per_pool_and_links_to_them(admin_client, settings):
    from convex_scheduler.models import ScheduledFunction as Row
    from convex_scheduler.models import State as RowState

    settings.CONVEX_SCHEDULER = {
        **settings.CONVEX_SCHEDULER,
        "POOLS": {"limited": {"max_parallelism": 2}},
    }
    for _ in range(3):
        scheduler.run_after(0, "pool:limited", {"ms": 0})
    running = Row.objects.filter(pool="limited").first()
    Row.objects.filter(pk=running.pk).update(
        state=RowState.IN_PROGRESS, next_run_time=None, owner="w"
    )
    page = admin_client.get("/admin/convex_scheduler/scheduledfunction/")
    text = page.content.decode()
    assert "1 running, 2 pending" in text
    assert "at most 2 at once" in text
    filtered = admin_client.get("/admin/convex_scheduler/scheduledfunction/?pool=limited")
    assert filtered.status_code == 200
    assert admin_client.get("/admin/convex_scheduler/scheduledfunction/?pool=x").status_code == 200


@pytest.mark.django_db
def test_cancel_all_matching_confirms_the_count_then_cancels_in_batches(admin_client):
    matching = [scheduler.run_after(60_000, functions.increment, {"name": "a"}) for _ in range(3)]
    other = scheduler.run_after(60_000, functions.record)
    listing = admin_client.get(CHANGELIST, {"name": "tests.functions:increment"})
    assert "Cancel all matching" in text(listing)
    url = reverse("admin:convex_scheduler_scheduledfunction_cancel_all")
    confirm = admin_client.get(url, {"name": "tests.functions:increment"})
    assert confirm.status_code == 200
    assert "3 unfinished scheduled functions match" in text(confirm)
    assert ScheduledFunction.objects.filter(state=State.CANCELED).count() == 0
    done = admin_client.post(f"{url}?name=tests.functions:increment")
    assert done.status_code == 302
    assert "name=tests.functions" in done["Location"]
    states = set(ScheduledFunction.objects.filter(pk__in=matching).values_list("state", flat=True))
    assert states == {State.CANCELED}
    assert ScheduledFunction.objects.get(pk=other).state == State.PENDING


@pytest.mark.django_db
def test_cancel_all_matching_needs_the_change_permission_and_valid_filters(client, admin_client):
    viewer = get_user_model().objects.create_user("viewer2", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_scheduledfunction"))
    client.force_login(viewer)
    url = reverse("admin:convex_scheduler_scheduledfunction_cancel_all")
    assert "Cancel all matching" not in text(client.get(CHANGELIST))
    assert client.post(url).status_code == 403
    assert admin_client.get(url, {"name__regex": "("}).status_code == 400


def test_overview_counts_stop_at_the_cap(admin_client, monkeypatch):
    monkeypatch.setattr("convex_scheduler.admin.COUNT_CAP", 2)
    for _ in range(3):
        scheduler.run_after(0, functions.increment, {"name": "x"})
    scheduler.run_after(0, functions.increment, {"name": "y"})
    canceled = scheduler.run_after(0, functions.increment, {"name": "z"})
    ScheduledFunction.objects.filter(pk=canceled).update(state="canceled", next_run_time=None)
    response = admin_client.get(CHANGELIST)
    states = {state["value"]: state for state in response.context["overview"]["states"]}
    assert (states["pending"]["count"], states["pending"]["capped"]) == (2, True)
    assert (states["canceled"]["count"], states["canceled"]["capped"]) == (1, False)
    html = text(response)
    assert '<strong class="cs-count" data-state="pending">2+</strong>' in html
    assert '<strong class="cs-count" data-state="canceled">1</strong>' in html
