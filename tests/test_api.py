import base64
import html
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State
from convex_scheduler.testing import run_due

from . import functions
from .models import Counter

pytestmark = pytest.mark.django_db

LIST_URL = "/api/scheduled-functions/"


def detail_url(pk):
    return f"{LIST_URL}{pk}/"


def cancel_url(pk):
    return f"{LIST_URL}{pk}/cancel/"


def grant(user, *codenames):
    """Give ``user`` the scheduled-function permissions named by their codenames."""
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="convex_scheduler", codename__in=codenames
        )
    )
    return get_user_model().objects.get(pk=user.pk)  # a fresh permission cache


@pytest.fixture
def staff(db):
    user = get_user_model().objects.create_user("staff", is_staff=True)
    return grant(
        user, "view_scheduledfunction", "add_scheduledfunction", "change_scheduledfunction"
    )


@pytest.fixture
def api(staff):
    client = APIClient()
    client.force_authenticate(staff)
    return client


def post(api, url, data=None):
    return api.post(url, data, format="json")


# Scheduling.


def test_create_with_delay_returns_201_and_the_row(api, clock):
    response = post(
        api,
        LIST_URL,
        {"function": "tests.functions:increment", "args": {"name": "a"}, "delay_ms": 5000},
    )
    assert response.status_code == 201, response.data
    row = ScheduledFunction.objects.get()
    assert response.data["id"] == row.pk
    assert response.data["name"] == "tests.functions:increment"
    assert response.data["kind"] == "mutation"
    assert response.data["state"] == "pending"
    assert response.data["args"] == {"name": "a"}
    assert response.data["parent"] is None
    assert row.scheduled_time == clock.now() + timedelta(seconds=5)
    assert response["Location"].endswith(detail_url(row.pk))


def test_created_function_runs_when_due(api, clock):
    response = post(
        api,
        LIST_URL,
        {"function": "tests.functions:increment", "args": {"name": "a", "by": 3}, "delay_ms": 0},
    )
    assert response.status_code == 201
    run_due()
    assert Counter.objects.get(name="a").value == 3
    assert api.get(detail_url(response.data["id"])).data["state"] == "success"


def test_args_default_to_an_empty_object(api):
    response = post(api, LIST_URL, {"function": "tests.functions:record", "delay_ms": 0})
    assert response.status_code == 201
    assert response.data["args"] == {}
    assert response.data["kind"] == "action"


def test_create_with_run_at_iso(api, clock):
    when = clock.now() + timedelta(hours=2)
    response = post(
        api,
        LIST_URL,
        {
            "function": "tests.functions:increment",
            "args": {"name": "a"},
            "run_at": when.isoformat(),
        },
    )
    assert response.status_code == 201, response.data
    assert ScheduledFunction.objects.get().scheduled_time == when


@override_settings(TIME_ZONE="Asia/Tokyo")
def test_run_at_without_offset_is_read_in_the_current_time_zone(api, clock):
    clock.set(datetime(2030, 1, 1, tzinfo=UTC))
    response = post(
        api,
        LIST_URL,
        {
            "function": "tests.functions:increment",
            "args": {"name": "a"},
            "run_at": "2030-01-01T09:00:00",
        },
    )
    assert response.status_code == 201, response.data
    assert ScheduledFunction.objects.get().scheduled_time == datetime(2030, 1, 1, tzinfo=UTC)


def test_run_at_offsets_beyond_what_postgresql_accepts_are_fine(api, clock):
    clock.set(datetime(2030, 1, 1, tzinfo=UTC))
    response = post(
        api,
        LIST_URL,
        {
            "function": "tests.functions:increment",
            "args": {"name": "a"},
            "run_at": "2030-01-02T00:00:00+22:48",
        },
    )
    assert response.status_code == 201, response.data
    assert ScheduledFunction.objects.get().scheduled_time == datetime(2030, 1, 1, 1, 12, tzinfo=UTC)
    response = api.get(LIST_URL, {"scheduled_time_after": "2030-01-02T00:00:00+22:48"})
    assert [row["id"] for row in response.data["results"]] == [ScheduledFunction.objects.get().pk]
    response = api.get(LIST_URL, {"completed_time_before": "2030-01-02T00:00:00-23:59"})
    assert response.status_code == 200


def test_create_with_run_at_epoch_ms(api, clock):
    when = clock.now() + timedelta(minutes=1)
    response = post(
        api,
        LIST_URL,
        {
            "function": "tests.functions:increment",
            "args": {"name": "a"},
            "run_at": int(when.timestamp() * 1000),
        },
    )
    assert response.status_code == 201, response.data
    scheduled = ScheduledFunction.objects.get().scheduled_time
    assert abs(scheduled - when) < timedelta(milliseconds=1)


def test_run_at_in_the_past_is_due_at_once(api, clock):
    response = post(
        api,
        LIST_URL,
        {
            "function": "tests.functions:increment",
            "args": {"name": "a"},
            "run_at": (clock.now() - timedelta(days=1)).isoformat(),
        },
    )
    assert response.status_code == 201
    assert ScheduledFunction.objects.due(clock.now()).filter(pk=response.data["id"]).exists()


GOOD = {"function": "tests.functions:increment", "args": {"name": "a"}}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"args": {"name": "a"}, "delay_ms": 0}, "function", "required"),
        (
            {**GOOD, "function": "tests.functions:nope", "delay_ms": 0},
            "function",
            "No public function",
        ),
        ({**GOOD, "function": "", "delay_ms": 0}, "function", "No public function"),
        ({**GOOD, "function": 5, "delay_ms": 0}, "function", "No public function"),
        ({**GOOD, "function": ["x"], "delay_ms": 0}, "function", "No public function"),
        ({**GOOD, "function": "x" * 300, "delay_ms": 0}, "function", "No public function"),
        (
            {**GOOD, "function": " tests.functions:increment", "delay_ms": 0},
            "function",
            "No public",
        ),
        ({**GOOD, "function": None, "delay_ms": 0}, "function", "null"),
        (
            {**GOOD, "function": "tests.functions:bump", "delay_ms": 0},
            "function",
            "No public function",
        ),
        ({**GOOD, "args": [1, 2], "delay_ms": 0}, "args", "must be a dict"),
        ({**GOOD, "args": "name=a", "delay_ms": 0}, "args", "must be a dict"),
        ({**GOOD, "args": None, "delay_ms": 0}, "args", "null"),
        ({**GOOD, "args": {"nome": "a"}, "delay_ms": 0}, "args", "signature"),
        ({**GOOD, "args": {}, "delay_ms": 0}, "args", "signature"),
        ({**GOOD, "args": {"name": "a\x00b"}, "delay_ms": 0}, "args", "NUL"),
        ({**GOOD, "args": {"name": "a", "by": {"k\x00": 1}}, "delay_ms": 0}, "args", "NUL"),
        ({**GOOD, "delay_ms": -1}, "delay_ms", "0 or more"),
        ({**GOOD, "delay_ms": "5"}, "delay_ms", "not str"),
        ({**GOOD, "delay_ms": True}, "delay_ms", "not bool"),
        ({**GOOD, "delay_ms": None}, "non_field_errors", "Give delay_ms"),
        ({**GOOD, "delay_ms": None, "run_at": None}, "non_field_errors", "Give delay_ms"),
        ({**GOOD, "delay_ms": [5]}, "delay_ms", "not list"),
        ({**GOOD, "delay_ms": 10**400}, "delay_ms", "too large"),
        ({**GOOD, "delay_ms": 1e300}, "delay_ms", "five years"),
        ({**GOOD, "delay_ms": 5 * 366 * 86_400_000 + 1}, "delay_ms", "five years"),
        ({**GOOD, "run_at": "tomorrow"}, "run_at", "ISO 8601"),
        ({**GOOD, "run_at": "2030-13-45T00:00:00Z"}, "run_at", "ISO 8601"),
        ({**GOOD, "run_at": "2030-01-01T25:00:00Z"}, "run_at", "ISO 8601"),
        ({**GOOD, "run_at": ""}, "run_at", "ISO 8601"),
        ({**GOOD, "run_at": True}, "run_at", "not bool"),
        ({**GOOD, "run_at": {"at": 1}}, "run_at", "not dict"),
        ({**GOOD, "run_at": 10**400}, "run_at", "out of range"),
        ({**GOOD, "run_at": -(10**20)}, "run_at", "out of range"),
        ({**GOOD, "run_at": "9999-12-31T23:59:59-12:00"}, "run_at", "five years"),
        ({**GOOD, "run_at": "0001-01-01T00:00:00+14:00"}, "run_at", "five years"),
        ({**GOOD, "run_at": 0}, "run_at", "five years"),
        ({**GOOD}, "non_field_errors", "Give delay_ms"),
        ({**GOOD, "delay_ms": 0, "run_at": 0}, "non_field_errors", "not both"),
    ],
)
def test_bad_input_is_a_400_on_the_right_field(api, body, field, message):
    response = post(api, LIST_URL, body)
    assert response.status_code == 400, response.data
    assert field in response.data, response.data
    assert message in " ".join(str(error) for error in response.data[field])
    assert not ScheduledFunction.objects.exists()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            b'{"function": "tests.functions:increment", "args": {"name": "\\ud800"}, '
            b'"delay_ms": 0}',
            "args",
        ),
        (
            b'{"function": "tests.functions:increment", "args": {"\\udfff": 1}, "delay_ms": 0}',
            "args",
        ),
        (b'{"function": "\\ud800", "delay_ms": 0}', "function"),
        (
            b'{"function": "tests.functions:increment", "args": {"name": "a"}, '
            b'"run_at": "\\ud800"}',
            "run_at",
        ),
    ],
)
def test_lone_surrogates_are_a_400_not_a_500(api, raw, field):
    response = api.generic("POST", LIST_URL, raw, content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()
    assert not ScheduledFunction.objects.exists()


def test_internal_functions_cannot_be_scheduled_and_look_unknown(api):
    internal = post(
        api,
        LIST_URL,
        {"function": "tests:internal_increment", "args": {"name": "a"}, "delay_ms": 0},
    )
    unknown = post(
        api, LIST_URL, {"function": "tests:no_such_thing", "args": {"name": "a"}, "delay_ms": 0}
    )
    assert internal.status_code == unknown.status_code == 400
    assert list(internal.data) == list(unknown.data) == ["function"]
    assert str(internal.data["function"][0]).replace("tests:internal_increment", "X") == str(
        unknown.data["function"][0]
    ).replace("tests:no_such_thing", "X")
    assert "internal" not in str(internal.data["function"][0]).replace(
        "tests:internal_increment", ""
    )
    internal_action = post(api, LIST_URL, {"function": "tests:internal_record", "delay_ms": 0})
    assert internal_action.status_code == 400
    assert not ScheduledFunction.objects.exists()


@override_settings(CONVEX_SCHEDULER={"MAX_ARGS_BYTES": 1000})
def test_oversize_args_are_a_400_on_args(api):
    response = post(api, LIST_URL, {**GOOD, "args": {"name": "x" * 2000}, "delay_ms": 0})
    assert response.status_code == 400
    assert "MAX_ARGS_BYTES" in str(response.data["args"])


def test_bodies_over_djangos_upload_limit_but_within_the_argument_limit_are_accepted(api):
    # Django's DATA_UPLOAD_MAX_MEMORY_SIZE is 2.5 MB; the API reads its own bodies.
    response = post(api, LIST_URL, {**GOOD, "args": {"name": "x" * 4_000_000}, "delay_ms": 0})
    assert response.status_code == 201, response.content[:300]
    assert response.data["args_size"] >= 4_000_000


def test_bodies_over_the_argument_limit_plus_envelope_are_a_json_413(api):
    limit = 4 * 1024 * 1024 + 64 * 1024
    body = json.dumps({**GOOD, "args": {"name": "x" * limit}, "delay_ms": 0})
    response = api.generic("POST", LIST_URL, body, content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"].startswith("application/json")
    assert str(limit) in response.json()["detail"]
    assert "MAX_ARGS_BYTES" in response.json()["detail"]
    assert not ScheduledFunction.objects.exists()


@override_settings(CONVEX_SCHEDULER={"MAX_ARGS_BYTES": 1000})
def test_the_body_limit_follows_the_argument_limit(api):
    accepted = post(api, LIST_URL, {**GOOD, "args": {"name": "x" * 900}, "delay_ms": 0})
    assert accepted.status_code == 201
    refused = post(api, LIST_URL, {**GOOD, "args": {"name": "x" * 70_000}, "delay_ms": 0})
    assert refused.status_code == 413
    assert str(1000 + 64 * 1024) in refused.json()["detail"]


def test_default_args_limit_is_a_400_on_args(api):
    response = post(
        api, LIST_URL, {**GOOD, "args": {"name": "x" * (4 * 1024 * 1024 + 1)}, "delay_ms": 0}
    )
    assert response.status_code == 400
    assert "MAX_ARGS_BYTES" in str(response.data["args"])


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"function": "tests.functions:increment", "delay_ms": NaN}', "application/json"),
        (b"\xff\xfe", "application/json"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_a_400(api, body, content_type):
    response = api.generic("POST", LIST_URL, body, content_type=content_type)
    assert response.status_code == 400
    assert not ScheduledFunction.objects.exists()


def test_form_bodies_are_refused(api):
    response = api.post(LIST_URL, {"function": "tests.functions:increment", "delay_ms": "0"})
    assert response.status_code == 415


# Reading.


def make_rows(clock, count=3, **kwargs):
    return [
        scheduler.run_after(1000 * index, functions.increment, {"name": f"n{index}"}, **kwargs)
        for index in range(count)
    ]


def test_retrieve(api, clock):
    sid = scheduler.run_after(0, functions.record, {"label": "x"})
    response = api.get(detail_url(sid))
    assert response.status_code == 200
    assert response.data["id"] == sid
    assert response.data["args"] == {"label": "x"}
    assert response.data["kind"] == "action"
    assert response.data["scheduled_time"] == clock.now().isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("path", ["12345/", "99999999999999999999999/", "abc/", "-1/", "1.5/"])
def test_unknown_or_malformed_ids_are_404(api, path):
    assert api.get(LIST_URL + path).status_code == 404
    assert api.post(LIST_URL + path + "cancel/").status_code == 404


def test_list_is_newest_scheduled_first(api, clock):
    ids = make_rows(clock)
    response = api.get(LIST_URL)
    assert response.status_code == 200
    assert [row["id"] for row in response.data["results"]] == ids[::-1]
    assert "count" not in response.data
    assert response.data["next"] is None


def test_list_ordering(api, clock):
    ids = make_rows(clock)
    response = api.get(LIST_URL, {"ordering": "scheduled_time"})
    assert [row["id"] for row in response.data["results"]] == ids
    response = api.get(LIST_URL, {"ordering": "-id"})
    assert [row["id"] for row in response.data["results"]] == ids[::-1]
    # Unknown fields are ignored, not a 500.
    response = api.get(LIST_URL, {"ordering": "args,-nope"})
    assert response.status_code == 200
    assert [row["id"] for row in response.data["results"]] == ids[::-1]


def test_cursor_pages_cover_every_row_once_even_with_equal_times(api, clock):
    # Twelve rows at the same instant, three at another: ties span pages.
    ids = [scheduler.run_after(0, functions.increment, {"name": "tie"}) for _ in range(12)]
    clock.advance(seconds=1)
    ids += [scheduler.run_after(0, functions.increment, {"name": "later"}) for _ in range(3)]
    for ordering in (None, "scheduled_time", "-scheduled_time", "creation_time"):
        params = {"page_size": 5}
        if ordering:
            params["ordering"] = ordering
        seen = []
        response = api.get(LIST_URL, params)
        while True:
            assert response.status_code == 200
            seen += [row["id"] for row in response.data["results"]]
            if not response.data["next"]:
                break
            response = api.get(response.data["next"])
        assert sorted(seen) == sorted(ids), ordering
        assert len(seen) == len(set(seen))


def test_page_size_is_capped(api, clock):
    make_rows(clock, count=3)
    assert len(api.get(LIST_URL, {"page_size": 2}).data["results"]) == 2
    assert len(api.get(LIST_URL, {"page_size": "lots"}).data["results"]) == 3
    assert len(api.get(LIST_URL, {"page_size": 10**6}).data["results"]) == 3


def encode_cursor(query):
    return base64.b64encode(query.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "bm90IGEgY3Vyc29y",
        encode_cursor("p=not-a-date"),
        encode_cursor("p=2024-01-01 00:00:00"),
        encode_cursor("p=9999-12-31 23:59:59-12:00"),
        encode_cursor("o=x"),
        "é",
    ],
)
def test_tampered_cursors_are_404(api, clock, cursor):
    make_rows(clock)
    response = api.get(LIST_URL, {"cursor": cursor})
    assert response.status_code in (200, 404)
    if response.status_code == 200:
        # Undecodable junk that happens to parse as an empty cursor.
        assert len(response.data["results"]) == 3


def test_tampered_id_cursor_is_404(api, clock):
    make_rows(clock)
    response = api.get(LIST_URL, {"ordering": "id", "cursor": encode_cursor(f"p={10**30}")})
    assert response.status_code == 404
    response = api.get(LIST_URL, {"ordering": "id", "cursor": encode_cursor("p=abc")})
    assert response.status_code == 404


def test_filters(api, clock):
    parent = scheduler.run_after(
        0, functions.schedule_children, {"name": "c", "count": 2, "delay_ms": 10}
    )
    record = scheduler.run_after(50, functions.record, {"label": "r"})
    run_due()
    children = list(ScheduledFunction.objects.filter(parent_id=parent).values_list("pk", flat=True))
    canceled = scheduler.run_after(100, functions.increment, {"name": "z"})
    scheduler.cancel(canceled)

    def ids(**params):
        response = api.get(LIST_URL, params)
        assert response.status_code == 200, response.data
        return sorted(row["id"] for row in response.data["results"])

    assert ids(state="success") == [parent]
    assert ids(state=["pending", "canceled"]) == sorted([*children, record, canceled])
    assert ids(kind="action") == [record]
    assert ids(name="tests.functions:schedule_children") == [parent]
    assert ids(parent=parent) == sorted(children)
    assert ids(parent=10**18) == []
    now = clock.now()
    assert ids(scheduled_time_after=(now + timedelta(milliseconds=40)).isoformat()) == sorted(
        [record, canceled]
    )
    assert ids(
        scheduled_time_after=(now + timedelta(milliseconds=5)).isoformat(),
        scheduled_time_before=(now + timedelta(milliseconds=60)).isoformat(),
    ) == sorted([*children, record])
    assert ids(completed_time_before=now.isoformat()) == sorted([parent, canceled])
    assert ids(completed_time_after=(now + timedelta(seconds=1)).isoformat()) == []


@pytest.mark.parametrize(
    "params",
    [
        {"state": "running"},
        {"kind": "query"},
        {"parent": "abc"},
        {"parent": "0"},
        {"parent": str(10**30)},
        {"parent": "1e5"},
        {"name": "a\x00b"},
        {"name": "x" * 300},
        {"scheduled_time_after": "yesterday"},
        {"scheduled_time_before": "2024-02-30T00:00:00Z"},
        {"completed_time_after": "9999-12-31T23:59:59-12:00"},
        {"completed_time_before": "0001-01-01T00:00:00+14:00"},
    ],
)
def test_bad_filters_are_a_400(api, clock, params):
    make_rows(clock)
    response = api.get(LIST_URL, params)
    assert response.status_code == 400, response.data
    assert set(response.data) <= {*params, *(key.rsplit("_", 1)[0] for key in params)}


# Cancel.


def test_cancel_pending_returns_the_canceled_row(api, clock):
    sid = scheduler.run_after(1000, functions.increment, {"name": "a"})
    response = api.post(cancel_url(sid))
    assert response.status_code == 200
    assert response.data["id"] == sid
    assert response.data["state"] == "canceled"
    assert response.data["completed_time"] is not None
    clock.advance(seconds=2)
    run_due()
    assert not Counter.objects.exists()


def test_cancel_of_a_finished_row_is_a_no_op(api, clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    run_due()
    before = ScheduledFunction.objects.get(pk=sid)
    clock.advance(seconds=5)
    response = api.post(cancel_url(sid))
    assert response.status_code == 200
    assert response.data["state"] == "success"
    assert ScheduledFunction.objects.get(pk=sid).completed_time == before.completed_time


def test_cancel_ignores_a_body(api, clock):
    sid = scheduler.run_after(1000, functions.increment, {"name": "a"})
    response = api.post(cancel_url(sid), {"state": "success"}, format="json")
    assert response.status_code == 200
    assert response.data["state"] == "canceled"


def test_cancel_works_on_rows_of_internal_functions(api, clock):
    sid = scheduler.run_after(1000, "tests:internal_increment", {"name": "a"})
    assert api.post(cancel_url(sid)).data["state"] == "canceled"


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_rows_cannot_be_edited_or_deleted(api, clock, method):
    sid = scheduler.run_after(1000, functions.increment, {"name": "a"})
    response = getattr(api, method)(detail_url(sid), {"state": "success"}, format="json")
    assert response.status_code == 405
    assert ScheduledFunction.objects.get(pk=sid).state == State.PENDING


# Permissions and CSRF.


def test_anonymous_requests_are_refused(clock):
    sid = scheduler.run_after(1000, functions.increment, {"name": "a"})
    client = APIClient()
    assert client.get(LIST_URL).status_code == 401
    assert client.get(LIST_URL)["WWW-Authenticate"].startswith("Basic")
    assert client.get(detail_url(sid)).status_code == 401
    assert client.post(LIST_URL, {**GOOD, "delay_ms": 0}, format="json").status_code == 401
    assert client.post(cancel_url(sid)).status_code == 401
    assert ScheduledFunction.objects.get().state == State.PENDING


def test_non_staff_users_are_refused(clock):
    user = get_user_model().objects.create_user("user")
    sid = scheduler.run_after(1000, functions.increment, {"name": "a"})
    client = APIClient()
    client.force_authenticate(user)
    assert client.get(LIST_URL).status_code == 403
    assert client.post(LIST_URL, {**GOOD, "delay_ms": 0}, format="json").status_code == 403
    assert client.post(cancel_url(sid)).status_code == 403
    assert ScheduledFunction.objects.count() == 1


@override_settings(
    CONVEX_SCHEDULER={"API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"]}
)
def test_permission_classes_come_from_the_settings(clock):
    user = get_user_model().objects.create_user("user")
    client = APIClient()
    client.force_authenticate(user)
    assert client.get(LIST_URL).status_code == 200
    assert client.post(LIST_URL, {**GOOD, "delay_ms": 0}, format="json").status_code == 201


def test_session_writes_need_the_csrf_token(staff, clock):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.get(LIST_URL).status_code == 200
    body = {**GOOD, "delay_ms": 0}
    refused = client.post(LIST_URL, body, format="json")
    assert refused.status_code == 403
    assert "CSRF" in str(refused.data)
    sid = scheduler.run_after(1000, functions.increment, {"name": "b"})
    assert client.post(cancel_url(sid)).status_code == 403
    assert ScheduledFunction.objects.get(pk=sid).state == State.PENDING

    token = "t" * 32
    client.cookies["csrftoken"] = token
    accepted = client.post(LIST_URL, body, format="json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201
    assert client.post(cancel_url(sid), HTTP_X_CSRFTOKEN=token).status_code == 200


# Large tables.


def bulk_rows(now, distinct=1000, copies=100):
    """``distinct * copies`` finished rows; each scheduled time is shared by ``copies`` rows.

    Built with one ``INSERT ... SELECT`` so a large table takes seconds, on any database.
    """
    ScheduledFunction.objects.bulk_create(
        ScheduledFunction(
            name="tests.functions:increment",
            kind="mutation",
            args={"name": "bulk"},
            state=State.SUCCESS,
            scheduled_time=now - timedelta(seconds=index),
            completed_time=now,
            creation_time=now,
        )
        for index in range(distinct)
    )
    quote = connection.ops.quote_name
    columns = ", ".join(
        quote(field.column)
        for field in ScheduledFunction._meta.concrete_fields
        if not field.primary_key
    )
    source = ", ".join(
        f"s.{quote(field.column)}"
        for field in ScheduledFunction._meta.concrete_fields
        if not field.primary_key
    )
    numbers = " UNION ALL ".join(f"SELECT {n} AS n" for n in range(copies - 1))
    table = quote(ScheduledFunction._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {source} FROM {table} s "
            f"CROSS JOIN ({numbers}) d"
        )
    assert ScheduledFunction.objects.count() == distinct * copies


def test_listing_a_large_table_is_bounded_and_never_counts(api, staff, clock):
    bulk_rows(clock.now())
    staff.get_all_permissions()  # cached on the user for every request of this client
    for params in (
        {},
        {"state": "success"},
        {"name": "tests.functions:increment", "ordering": "id"},
    ):
        with CaptureQueriesContext(connection) as queries:
            first = api.get(LIST_URL, {**params, "page_size": 100})
            second = api.get(first.data["next"])
        assert first.status_code == second.status_code == 200
        assert len(first.data["results"]) == len(second.data["results"]) == 100
        assert not {row["id"] for row in first.data["results"]} & {
            row["id"] for row in second.data["results"]
        }
        assert len(queries) <= 2
        assert not any("COUNT(" in query["sql"].upper() for query in queries.captured_queries)
        assert all("LIMIT" in query["sql"].upper() for query in queries.captured_queries)


def test_listing_query_count_does_not_grow_with_the_page(
    api, staff, clock, django_assert_max_num_queries
):
    staff.get_all_permissions()  # cached on the user for every request of this client
    parent = scheduler.run_after(0, functions.schedule_children, {"name": "c", "count": 30})
    run_due()
    assert ScheduledFunction.objects.filter(parent_id=parent).count() == 30
    with django_assert_max_num_queries(1):
        response = api.get(LIST_URL, {"page_size": 100})
    assert len(response.data["results"]) == 31
    assert json.loads(json.dumps(response.data))["results"][0]["parent"] == parent


# Bounded rows: a list previews arguments and errors, the detail has them in full.


def test_a_list_row_previews_args_and_the_first_line_of_the_error(api, clock):
    pk = scheduler.run_after(0, functions.increment, {"name": "é" * 500})
    ScheduledFunction.objects.filter(pk=pk).update(
        state=State.FAILED,
        next_run_time=None,
        completed_time=clock.now(),
        error="Traceback (most recent call last):\n  File ...\nValueError",
    )
    row = api.get(LIST_URL).data["results"][0]
    assert "args" not in row and "error" not in row
    assert row["args_preview"].startswith('{"name":')
    assert len(row["args_preview"]) == 200
    assert row["args_size"] >= 1000  # "é" is two bytes
    assert row["error_preview"] == "Traceback (most recent call last):"
    assert row["error_size"] == len(b"Traceback (most recent call last):\n  File ...\nValueError")

    detail = api.get(detail_url(pk)).data
    assert detail["args"] == {"name": "é" * 500}
    assert detail["error"].endswith("ValueError")
    assert detail["args_size"] == row["args_size"]
    assert detail["error_size"] == row["error_size"]


def test_a_row_without_error_has_an_empty_preview(api, clock):
    scheduler.run_after(0, functions.increment, {"name": "a"})
    row = api.get(LIST_URL).data["results"][0]
    assert (row["args_preview"], row["error_preview"], row["error_size"]) == (
        row["args_preview"],
        "",
        0,
    )
    assert json.loads(row["args_preview"]) == {"name": "a"}
    assert row["args_size"] == len(row["args_preview"].encode())


def test_the_browsable_apis_example_body_is_a_valid_request(api, clock):
    page = api.get(LIST_URL, HTTP_ACCEPT="text/html").content.decode()
    raw = re.search(r'<textarea[^>]*name="_content"[^>]*>(.*?)</textarea>', page, re.S)
    assert raw, "no raw data form"
    example = json.loads(html.unescape(raw.group(1)))
    assert example["delay_ms"] == 0 and example["args"] == {}
    response = post(api, LIST_URL, example)
    assert response.status_code == 201, response.data


def test_the_browsable_api_shows_no_restructured_text(api):
    page = api.get(LIST_URL, HTTP_ACCEPT="text/html").content.decode()
    assert "``" not in page
    assert "_scheduled_functions" not in page


# Cancel all.


def test_cancel_all_cancels_what_the_list_filters_match_and_returns_the_count(api):
    matching = [scheduler.run_after(60_000, functions.increment, {"name": "a"}) for _ in range(3)]
    other = scheduler.run_after(60_000, functions.record)
    response = api.post(
        "/api/scheduled-functions/cancel-all/?name=tests.functions:increment", format="json"
    )
    assert response.status_code == 200, response.data
    assert response.json() == {"canceled": 3}
    states = set(ScheduledFunction.objects.filter(pk__in=matching).values_list("state", flat=True))
    assert states == {"canceled"}
    assert ScheduledFunction.objects.get(pk=other).state == "pending"
    again = api.post("/api/scheduled-functions/cancel-all/?name=tests.functions:increment")
    assert again.json() == {"canceled": 0}


def test_cancel_all_needs_the_change_permission(db):
    viewer = grant(get_user_model().objects.create_user("viewer"), "view_scheduledfunction")
    client = APIClient()
    client.force_authenticate(viewer)
    sid = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    assert client.post("/api/scheduled-functions/cancel-all/").status_code == 403
    assert ScheduledFunction.objects.get(pk=sid).state == "pending"
    assert APIClient().post("/api/scheduled-functions/cancel-all/").status_code == 401


def test_cancel_all_with_a_bad_filter_is_a_400_naming_the_parameter(api):
    response = api.post("/api/scheduled-functions/cancel-all/?scheduled_time_after=yesterday")
    assert response.status_code == 400
    assert "scheduled_time_after" in response.json()
