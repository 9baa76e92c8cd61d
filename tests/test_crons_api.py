"""``/api/crons/``: list, retrieve, pause and resume, under model permissions on crons."""

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from convex_scheduler import crons
from convex_scheduler.crons import start_due_runs, sync_code_crons
from convex_scheduler.models import CronJob
from convex_scheduler.testing import FakeClock, run_due

from . import functions

pytestmark = pytest.mark.django_db

LIST_URL = "/api/crons/"
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def url(name, action=""):
    return f"{LIST_URL}{quote(name)}/" + (f"{action}/" if action else "")


def client_with(*codenames, staff=True, superuser=False):
    user = get_user_model().objects.create_user(
        f"user-{len(codenames)}-{staff}-{superuser}", is_staff=staff, is_superuser=superuser
    )
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="convex_scheduler", codename__in=codenames
        )
    )
    client = APIClient()
    client.force_authenticate(get_user_model().objects.get(pk=user.pk))
    return client


@pytest.fixture
def clock():
    with FakeClock(START) as fake:
        yield fake


@pytest.fixture
def tokyo(clock):
    crons.register(
        "tokyo digest",
        functions.increment,
        {"name": "tokyo"},
        cron="30 8 * * *",
        timezone="Asia/Tokyo",
    )
    crons.register("per user 1", functions.increment, {"name": "u1"}, interval=timedelta(minutes=5))
    return "tokyo digest"


def test_list_shows_schedule_next_tick_in_both_zones_and_counts(tokyo, clock):
    start_due_runs(using="default", now=clock.now())
    run_due()
    api = client_with("view_cronjob")
    response = api.get(LIST_URL)
    assert response.status_code == 200, response.content
    rows = {row["name"]: row for row in response.json()["results"]}
    tokyo_row = rows["tokyo digest"]
    assert tokyo_row["schedule"] == "every day at 08:30 (Asia/Tokyo)"
    assert tokyo_row["next_tick"] == "2026-06-01T23:30:00Z"
    assert tokyo_row["next_tick_local"] == "2026-06-02T08:30:00+09:00"
    assert (tokyo_row["source"], tokyo_row["paused"], tokyo_row["removed"]) == (
        "runtime",
        False,
        False,
    )
    # The database's JSON text: spacing differs between databases.
    assert '"tokyo"' in tokyo_row["args_preview"]
    assert tokyo_row["args_size"] >= len('{"name":"tokyo"}')
    assert "args" not in tokyo_row
    user_row = rows["per user 1"]
    assert (user_row["interval_seconds"], user_row["run_count"]) == (300.0, 1)
    assert user_row["last_run_state"] == "success"
    assert user_row["schedule"] == "every 5 minutes"


def test_retrieve_has_args_and_recent_runs(tokyo, clock):
    for _ in range(3):
        start_due_runs(using="default", now=clock.now())
        run_due()
        clock.advance(minutes=5)
    api = client_with("view_cronjob")
    response = api.get(url("per user 1"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["args"] == {"name": "u1"}
    assert [run["state"] for run in body["recent_runs"]] == ["success"] * 3
    assert body["recent_runs"][0]["scheduled_time"] == "2026-06-01T12:10:00Z"
    assert api.get(url("no such cron")).status_code == 404
    assert api.get(f"{LIST_URL}%00/").status_code == 404


def test_pause_and_resume_over_the_api(tokyo, clock):
    api = client_with("view_cronjob", "change_cronjob")
    response = api.post(url(tokyo, "pause"))
    assert response.status_code == 200, response.content
    assert (response.json()["paused"], response.json()["next_tick"]) == (True, None)
    assert CronJob.objects.get(name=tokyo).paused
    clock.advance(days=2)
    response = api.post(url(tokyo, "resume"))
    assert response.status_code == 200
    assert response.json()["next_tick"] == "2026-06-03T23:30:00Z"
    assert api.post(url("nope", "pause")).status_code == 404


def test_filters_and_bad_filter_values(tokyo):
    code = CronJob.objects.get(name=tokyo)
    code.source = "code"
    code.save(update_fields=["source"])
    crons.pause("per user 1")
    api = client_with("view_cronjob")
    names = lambda query: [row["name"] for row in api.get(LIST_URL + query).json()["results"]]  # noqa: E731
    assert names("?source=code") == [tokyo]
    assert names("?paused=true") == ["per user 1"]
    assert names("?paused=false&source=runtime") == []
    response = api.get(LIST_URL + "?source=nonsense")
    assert response.status_code == 400
    assert "source" in response.json()
    tampered = base64.b64encode(b"p=\x00").decode()
    assert api.get(LIST_URL + f"?cursor={tampered}").status_code == 404


def test_cursor_pages(clock):
    for index in range(7):
        crons.register(f"c{index}", functions.increment, {"name": "x"}, interval=timedelta(1))
    api = client_with("view_cronjob")
    seen, link = [], LIST_URL + "?page_size=3"
    while link:
        body = api.get(link).json()
        seen += [row["name"] for row in body["results"]]
        link = body["next"]
    assert seen == [f"c{index}" for index in range(7)]


@pytest.mark.parametrize(
    ("codenames", "staff", "superuser", "read", "toggle"),
    [
        ((), False, False, 403, 403),
        ((), True, False, 403, 403),
        (("view_scheduledfunction", "change_scheduledfunction"), True, False, 403, 403),
        (("view_cronjob",), True, False, 200, 403),
        (("view_cronjob", "change_cronjob"), True, False, 200, 200),
        (("view_cronjob", "change_cronjob"), False, False, 200, 200),
        ((), True, True, 200, 200),
    ],
)
def test_permission_matrix(tokyo, codenames, staff, superuser, read, toggle):
    api = client_with(*codenames, staff=staff, superuser=superuser)
    assert api.get(LIST_URL).status_code == read
    assert api.get(url(tokyo)).status_code == read
    assert api.post(url(tokyo, "pause")).status_code == toggle
    assert api.post(url(tokyo, "resume")).status_code == toggle
    assert api.delete(url(tokyo)).status_code in (403, 405)
    assert CronJob.objects.filter(name=tokyo).exists()


def test_anonymous_users_are_refused(tokyo):
    client = APIClient()
    assert client.get(LIST_URL).status_code == 401
    assert client.post(url(tokyo, "pause")).status_code == 401
    assert not CronJob.objects.get(name=tokyo).paused


def test_code_crons_are_listed_too(db):
    sync_code_crons(using="default")
    api = client_with("view_cronjob")
    body = api.get(url("tests: leap day")).json()
    assert (body["source"], body["schedule"]) == ("code", "at 03:00 on February 29 (UTC)")


def test_the_schema_describes_the_cron_endpoints(db):
    api = client_with("view_scheduledfunction")
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"/api/crons/", "/api/crons/{name}/", "/api/crons/{name}/pause/"} <= set(schema["paths"])
