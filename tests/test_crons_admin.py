"""The Crons admin: list, read-only code crons, run-time crons created and edited, actions."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from convex_scheduler import crons
from convex_scheduler.crons import start_due_runs, sync_code_crons
from convex_scheduler.models import CronJob, ScheduledFunction, State
from convex_scheduler.testing import FakeClock, run_due

from . import functions

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/convex_scheduler/cronjob/"
ADD_URL = f"{LIST_URL}add/"
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ALL = ("view_cronjob", "add_cronjob", "change_cronjob", "delete_cronjob")


def change_url(job):
    return f"{LIST_URL}{job.pk}/change/"


def admin_with(*codenames):
    user = get_user_model().objects.create_user(f"staff-{len(codenames)}", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="convex_scheduler", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def clock():
    with FakeClock(START) as fake:
        yield fake


@pytest.fixture
def two_crons(clock):
    sync_code_crons(using="default")  # tests/crons.py: "tests: leap day"
    crons.register(
        "tokyo digest",
        functions.increment,
        {"name": "tokyo"},
        cron="30 8 * * *",
        timezone="Asia/Tokyo",
    )
    crons.register("every 5", functions.increment, {"name": "e5"}, interval=timedelta(minutes=5))
    return CronJob.objects.get(name="tokyo digest"), CronJob.objects.get(name="tests: leap day")


def form_data(**overrides):
    data = {
        "name": "made in admin",
        "function": "tests.functions:increment",
        "args": '{"name": "admin"}',
        "schedule_type": "cron",
        "interval": "",
        "expression": "0 9 * * 1-5",
        "timezone": "Europe/Paris",
    }
    data.update(overrides)
    return data


def test_the_list_shows_schedule_next_run_in_both_zones_last_runs_and_skips(two_crons, clock):
    start_due_runs(using="default", now=clock.now())
    run_due()
    clock.advance(minutes=5)
    start_due_runs(using="default", now=clock.now())  # left pending
    clock.advance(minutes=5)
    start_due_runs(using="default", now=clock.now())  # skipped: still pending
    response = admin_with("view_cronjob").get(LIST_URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "every day at 08:30 (Asia/Tokyo)" in page
    assert "2026-06-02 08:30 Asia/Tokyo" in page
    assert "2026-06-01 23:30 UTC" in page
    assert "every 5 minutes" in page
    assert "0 missed, 1 overlapping" in page
    assert "cs-state-success" in page and "cs-state-pending" in page
    run = ScheduledFunction.objects.get(cron="every 5", state=State.SUCCESS)
    assert f"/admin/convex_scheduler/scheduledfunction/{run.pk}/change/" in page
    assert "at 03:00 on February 29 (UTC)" in page


def test_code_crons_are_read_only(two_crons):
    _, leap = two_crons
    client = admin_with(*ALL)
    page = client.get(change_url(leap))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    response = client.post(change_url(leap), form_data(name=leap.name))
    assert response.status_code == 403
    assert CronJob.objects.get(pk=leap.pk).expression == "0 3 29 2 *"


def test_a_runtime_cron_is_created_and_edited_in_the_admin(clock):
    client = admin_with(*ALL)
    page = client.get(ADD_URL).content.decode()
    assert 'value="UTC"' in page  # settings.TIME_ZONE as the default zone
    response = client.post(ADD_URL, form_data())
    assert response.status_code == 302, response.context["adminform"].form.errors
    job = CronJob.objects.get(name="made in admin")
    assert client.get(change_url(job)).status_code == 200
    assert (job.source, job.expression, job.timezone, job.args) == (
        "runtime",
        "0 9 * * 1-5",
        "Europe/Paris",
        {"name": "admin"},
    )
    assert job.next_tick == datetime(2026, 6, 2, 7, tzinfo=UTC)  # Tuesday 09:00 CEST
    response = client.post(
        change_url(job),
        form_data(schedule_type="interval", interval="00:30:00", expression=""),
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.schedule_type, job.interval, job.expression) == (
        "interval",
        timedelta(minutes=30),
        "",
    )
    assert job.next_tick == START  # never ticked: due from now


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"expression": "0 25 * * *"}, "expression", "Bad hour"),
        ({"expression": "* * *"}, "expression", "5 fields"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Unknown time zone"),
        ({"args": '{"nmae": 1}'}, "args", "signature"),
        ({"name": "a/b"}, "name", "'/'"),
        ({"interval": "00:01:00"}, "interval", "no interval"),
        ({"schedule_type": "interval", "interval": "00:00:00.5"}, "expression", "no expression"),
        (
            {"schedule_type": "interval", "interval": "00:00:00.5", "expression": ""},
            "interval",
            "at least one second",
        ),
        ({"function": "tests:internal_increment"}, "function", "No public function"),
        ({"function": "no.such:function"}, "function", "No function"),
    ],
)
def test_the_form_puts_each_refusal_on_its_field(clock, overrides, field, words):
    response = admin_with(*ALL).post(ADD_URL, form_data(**overrides))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert words in " ".join(errors.get(field, [])), errors
    assert not CronJob.objects.exists()


def test_an_existing_name_is_refused_and_internal_functions_need_their_permission(two_crons, clock):
    response = admin_with(*ALL).post(ADD_URL, form_data(name="tokyo digest"))
    assert response.status_code == 200
    assert "already exists" in str(response.context["adminform"].form.errors["name"])
    client = admin_with(*ALL, "schedule_internal_function")
    response = client.post(
        ADD_URL, form_data(function="tests:internal_increment", args='{"name": "i"}')
    )
    assert response.status_code == 302
    assert CronJob.objects.get(name="made in admin").function == "tests:internal_increment"


def test_pause_and_resume_actions(two_crons, clock):
    tokyo, leap = two_crons
    client = admin_with("view_cronjob", "change_cronjob")
    selected = [str(tokyo.pk), str(leap.pk)]
    response = client.post(LIST_URL, {"action": "pause_selected", "_selected_action": selected})
    assert response.status_code == 302
    assert set(CronJob.objects.filter(paused=True).values_list("name", flat=True)) == {
        "tokyo digest",
        "tests: leap day",
    }
    clock.advance(days=3)
    client.post(LIST_URL, {"action": "resume_selected", "_selected_action": selected})
    tokyo.refresh_from_db()
    assert (tokyo.paused, tokyo.next_tick) == (False, datetime(2026, 6, 4, 23, 30, tzinfo=UTC))
    # Without the change permission there is no such action.
    viewer = admin_with("view_cronjob")
    response = viewer.post(LIST_URL, {"action": "pause_selected", "_selected_action": selected})
    assert not CronJob.objects.filter(paused=True).exists()
    assert response.status_code in (200, 302)


def test_deleting_runtime_crons_cancels_their_pending_runs_and_code_crons_stay(two_crons, clock):
    tokyo, leap = two_crons
    start_due_runs(using="default", now=clock.now())
    every5 = CronJob.objects.get(name="every 5")
    pending = ScheduledFunction.objects.get(cron="every 5")
    client = admin_with(*ALL)
    selected = [str(every5.pk), str(tokyo.pk)]
    confirm = client.post(LIST_URL, {"action": "delete_selected", "_selected_action": selected})
    assert confirm.status_code == 200
    assert "every 5" in confirm.content.decode()
    response = client.post(
        LIST_URL, {"action": "delete_selected", "_selected_action": selected, "post": "yes"}
    )
    assert response.status_code == 302
    assert list(CronJob.objects.values_list("name", flat=True)) == [leap.name]
    assert ScheduledFunction.objects.get(pk=pending.pk).state == State.CANCELED
    # A selection with a code cron is refused whole; its own delete page too.
    refused = client.post(
        LIST_URL, {"action": "delete_selected", "_selected_action": [str(leap.pk)], "post": "yes"}
    )
    assert refused.status_code == 403
    assert client.get(f"{LIST_URL}{leap.pk}/delete/").status_code == 403
    assert CronJob.objects.filter(pk=leap.pk).exists()
    # The single delete page of a run-time cron deletes through crons.delete too.
    crons.register("solo", functions.increment, {"name": "s"}, interval=timedelta(minutes=1))
    start_due_runs(using="default", now=clock.now())
    solo = CronJob.objects.get(name="solo")
    assert client.post(f"{LIST_URL}{solo.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not CronJob.objects.filter(name="solo").exists()
    assert ScheduledFunction.objects.get(cron="solo").state == State.CANCELED


def test_bad_list_input_is_a_400_not_a_500(two_crons):
    client = admin_with("view_cronjob")
    assert client.get(LIST_URL + "?name__regex=(").status_code == 400
    assert client.get(LIST_URL + "?source__exact=%00").status_code == 400
    assert client.get(LIST_URL + "?paused__exact=maybe").status_code == 400
    assert client.get(LIST_URL + "?q=%00").status_code == 400
    assert client.get(LIST_URL + "?source__exact=code").status_code == 200
    assert client.get(LIST_URL + "?q=tokyo").status_code == 200
    huge = f"{LIST_URL}99999999999999999999999/change/"
    assert client.get(huge).status_code in (302, 404)
    response = admin_with(*ALL).post(
        LIST_URL, {"action": "pause_selected", "_selected_action": ["99999999999999999999999"]}
    )
    assert response.status_code == 400
