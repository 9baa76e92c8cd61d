"""Every input is a 4xx with a useful message, never a 500, and never an error in the log.

A catalogue of hostile requests across the five surfaces of the web face: the
API's request body, the API's query parameters, the admin changelist's query
string, the admin's schedule form and the admin's actions. Each case names the
status it must get and words its answer must contain; for every case nothing
may be logged at ERROR or above (Django logs a 500 at ERROR on
``django.request``, and a ``SuspiciousOperation`` at ERROR on
``django.security``) and no row may be written or canceled.
"""

# ruff: noqa: E501 (the catalogue is a table: one case a line)
import html
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from rest_framework.test import APIClient

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State

from . import functions

pytestmark = pytest.mark.django_db

API = "/api/scheduled-functions/"
CHANGELIST = "/admin/convex_scheduler/scheduledfunction/"
ADD = CHANGELIST + "add/"
FUNCTION = "tests.functions:increment"


def nested(depth: int, inner: str = "0") -> str:
    return "[" * depth + inner + "]" * depth


def body(**fields: Any) -> bytes:
    """A schedule request as JSON text, with ``fields`` as raw JSON fragments."""
    parts = {"function": json.dumps(FUNCTION), "args": '{"name": "a"}', **fields}
    return ("{" + ", ".join(f'"{key}": {value}' for key, value in parts.items()) + "}").encode()


@dataclass
class Case:
    id: str
    surface: str
    request: dict[str, Any]
    status: int
    says: str
    settings: dict[str, Any] = field(default_factory=dict)


def api_post(raw: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"method": "POST", "path": API, "data": raw, "content_type": content_type}


def api_get(path: str = API, **params: Any) -> dict[str, Any]:
    return {"method": "GET", "path": path, "params": params}


def admin_get(**params: Any) -> dict[str, Any]:
    return {"method": "GET", "path": CHANGELIST, "params": params, "admin": True}


def admin_schedule(**data: Any) -> dict[str, Any]:
    form = {"function": FUNCTION, "args": '{"name": "a"}', "delay_ms": "0", **data}
    return {"method": "POST", "path": ADD, "form": form, "admin": True}


def admin_action(**data: Any) -> dict[str, Any]:
    form = {"action": "cancel_selected", "index": "0", **data}
    return {"method": "POST", "path": CHANGELIST, "form": form, "admin": True}


DEEP = "more than 66 levels"
CASES = [
    # The API's request body.
    Case("body-nested-1000", "api body", api_post(body(args='{"x": ' + nested(1000) + "}")), 400, DEEP),
    Case("body-nested-100000", "api body", api_post(body(args=nested(100_000))), 400, DEEP),
    Case("body-top-level-nested", "api body", api_post(nested(5000).encode()), 400, DEEP),
    Case("body-nested-objects", "api body", api_post(('{"a":' * 3000 + "1" + "}" * 3000).encode()), 400, DEEP),
    Case("args-nested-65", "api body", api_post(body(args='{"name": ' + nested(64) + "}", delay_ms="0")), 400, "nested more than 64"),
    Case("body-5000-digits", "api body", api_post(body(args='{"name": "a", "by": ' + "9" * 5000 + "}", delay_ms="0")), 400, "digits"),
    Case("body-nan", "api body", api_post(body(delay_ms="NaN")), 400, "NaN is not a JSON number"),
    Case("body-infinity", "api body", api_post(body(delay_ms="Infinity")), 400, "Infinity is not a JSON number"),
    Case("body-not-json", "api body", api_post(b"{not json"), 400, "JSON parse error"),
    Case("body-truncated", "api body", api_post(body(delay_ms="0")[:-5]), 400, "JSON parse error"),
    Case("body-array", "api body", api_post(b"[1, 2]"), 400, "Expected a dictionary"),
    Case("body-string", "api body", api_post(b'"schedule"'), 400, "Expected a dictionary"),
    Case("body-empty-object", "api body", api_post(b"{}"), 400, "required"),
    Case("body-invalid-utf8", "api body", api_post(b'{"function": "\xff\xfe"}'), 400, "not valid utf-8"),
    Case("body-bytes-codec", "api body", api_post(body(delay_ms="0"), "application/json; charset=bz2_codec"), 400, "not valid bz2_codec"),
    Case("body-form-encoded", "api body", api_post(b"function=x&delay_ms=0", "application/x-www-form-urlencoded"), 415, "Unsupported media type"),
    Case("body-text-plain", "api body", api_post(body(delay_ms="0"), "text/plain"), 415, "Unsupported media type"),
    Case("body-over-limit", "api body", api_post(body(args='{"name": "' + "x" * (4 * 1024 * 1024 + 64 * 1024) + '"}', delay_ms="0")), 413, "MAX_ARGS_BYTES"),
    Case("args-over-limit", "api body", api_post(body(args='{"name": "' + "x" * 2000 + '"}', delay_ms="0")), 400, "MAX_ARGS_BYTES", {"CONVEX_SCHEDULER": {"MAX_ARGS_BYTES": 1000}}),
    Case("args-lone-surrogate", "api body", api_post(body(args='{"name": "\\ud800"}', delay_ms="0")), 400, "not valid Unicode"),
    Case("args-surrogate-key", "api body", api_post(body(args='{"\\udfff": 1}', delay_ms="0")), 400, "args"),
    Case("args-nul", "api body", api_post(body(args='{"name": "a\\u0000"}', delay_ms="0")), 400, "NUL"),
    Case("args-not-object", "api body", api_post(body(args="[1]", delay_ms="0")), 400, "must be a dict"),
    Case("args-unbound-key", "api body", api_post(body(args='{"x": 1}', delay_ms="0")), 400, "signature"),
    Case("function-internal", "api body", api_post(body(function='"tests:internal_increment"', delay_ms="0")), 400, "No public function"),
    Case("function-unknown", "api body", api_post(body(function='"nope"', delay_ms="0")), 400, "No public function"),
    Case("function-nul", "api body", api_post(body(function='"a\\u0000"', delay_ms="0")), 400, "No public function"),
    Case("function-list", "api body", api_post(body(function='["x"]', delay_ms="0")), 400, "No public function"),
    Case("function-huge", "api body", api_post(body(function=json.dumps("f" * 100_000), delay_ms="0")), 400, "No public function"),
    Case("delay-negative", "api body", api_post(body(delay_ms="-1")), 400, "0 or more"),
    Case("delay-string", "api body", api_post(body(delay_ms='"5"')), 400, "not str"),
    Case("delay-bool", "api body", api_post(body(delay_ms="true")), 400, "not bool"),
    Case("delay-huge-int", "api body", api_post(body(delay_ms="1" + "0" * 400)), 400, "too large"),
    Case("delay-1e308", "api body", api_post(body(delay_ms="1e308")), 400, "five years"),
    Case("run-at-garbage", "api body", api_post(body(run_at='"tomorrow"')), 400, "ISO 8601"),
    Case("run-at-year-1-plus-14", "api body", api_post(body(run_at='"0001-01-01T00:00:00+14:00"')), 400, "five years"),
    Case("run-at-year-9999-minus-14", "api body", api_post(body(run_at='"9999-12-31T23:59:59-14:00"')), 400, "five years"),
    Case("run-at-huge-number", "api body", api_post(body(run_at="1" + "0" * 400)), 400, "out of range"),
    Case("run-at-negative", "api body", api_post(body(run_at="-1e20")), 400, "out of range"),
    Case("both-times", "api body", api_post(body(delay_ms="0", run_at="0")), 400, "not both"),
    Case("no-time", "api body", api_post(body()), 400, "Give delay_ms"),
    # The API's query parameters.
    Case("filter-state", "api query", api_get(state="bogus"), 400, "state"),
    Case("filter-state-nul", "api query", api_get(state="a\x00"), 400, "state"),
    Case("filter-kind", "api query", api_get(kind="bogus"), 400, "kind"),
    Case("filter-name-nul", "api query", api_get(name="a\x00b"), 400, "Null characters"),
    Case("filter-name-long", "api query", api_get(name="n" * 300), 400, "at most 255"),
    Case("filter-parent-overflow", "api query", api_get(parent="9" * 25), 400, "positive integer"),
    Case("filter-parent-letters", "api query", api_get(parent="abc"), 400, "positive integer"),
    Case("filter-parent-zero", "api query", api_get(parent="0"), 400, "positive integer"),
    Case("filter-after-year-1", "api query", api_get(scheduled_time_after="0001-01-01T00:00:00+14:00"), 400, "scheduled_time_after"),
    Case("filter-before-year-9999", "api query", api_get(scheduled_time_before="9999-12-31T23:59:59-14:00"), 400, "scheduled_time_before"),
    Case("filter-completed-garbage", "api query", api_get(completed_time_after="yesterday"), 400, "completed_time_after"),
    Case("filter-completed-nul", "api query", api_get(completed_time_before="2030\x00"), 400, "completed_time_before"),
    Case("cursor-garbage", "api query", api_get(cursor="bz14"), 404, "Invalid cursor"),
    Case("detail-overflow", "api query", api_get(API + "9" * 25 + "/"), 404, "Not found"),
    # The admin changelist's query string.
    Case("admin-regex", "admin query", admin_get(name__regex="("), 400, "Unknown filter"),
    Case("admin-gte-plus-14", "admin query", admin_get(scheduled_time__gte="0001-01-01T00:00:00+14:00"), 400, "Unknown filter"),
    Case("admin-lt-minus-14", "admin query", admin_get(completed_time__lt="9999-12-31T23:59:59-14:00"), 400, "Unknown filter"),
    Case("admin-year-9999", "admin query", admin_get(scheduled_time__year="9999"), 400, "too near the years 1 or 9999"),
    Case("admin-year-0", "admin query", admin_get(scheduled_time__year="0"), 400, "no such date"),
    Case("admin-year-huge", "admin query", admin_get(scheduled_time__year="9" * 20), 400, "are numbers"),
    Case("admin-month-13", "admin query", admin_get(scheduled_time__year="2030", scheduled_time__month="13"), 400, "no such date"),
    Case("admin-february-30", "admin query", admin_get(scheduled_time__year="2030", scheduled_time__month="2", scheduled_time__day="30"), 400, "no such date"),
    Case("admin-month-alone", "admin query", admin_get(scheduled_time__month="1"), 400, "need scheduled_time__year"),
    Case("admin-parent-overflow", "admin query", admin_get(parent="9" * 25), 400, "must be a scheduled function id"),
    Case("admin-parent-letters", "admin query", admin_get(parent="abc"), 400, "must be a scheduled function id"),
    Case("admin-search-nul", "admin query", admin_get(q="a\x00"), 400, "NUL character"),
    Case("admin-state-nul", "admin query", admin_get(state__exact="\x00"), 400, "NUL character"),
    Case("admin-cancel-overflow", "admin query", {"method": "POST", "path": CHANGELIST + "9" * 25 + "/cancel/", "form": {}, "admin": True}, 404, "Not Found"),
    Case("admin-download-overflow", "admin query", {"method": "GET", "path": CHANGELIST + "9" * 25 + "/args.json", "params": {}, "admin": True}, 404, "Not Found"),
    Case("admin-to-field", "admin query", admin_get(_to_field="args"), 400, "may only name the id"),
    Case("admin-error-lookup", "admin query", admin_get(error__icontains="x"), 400, "Unknown filter"),
    Case("admin-id-in", "admin query", admin_get(id__in="1,2"), 400, "Unknown filter"),
    Case("admin-args-lookup", "admin query", admin_get(args__contains="{}"), 400, "Unknown filter"),
    # The admin's schedule form.
    Case("form-nested-10000", "admin form", admin_schedule(args=nested(10_000)), 400, "at most 64 levels"),
    Case("form-surrogate-unbound", "admin form", admin_schedule(args='{"x": "\\ud800"}'), 400, "signature"),
    Case("form-surrogate", "admin form", admin_schedule(args='{"name": "\\ud800"}'), 400, "not valid Unicode"),
    Case("form-5000-digits", "admin form", admin_schedule(args='{"name": "a", "by": ' + "9" * 5000 + "}"), 400, "digits"),
    Case("form-not-json", "admin form", admin_schedule(args="{nope"), 400, "valid JSON"),
    Case("form-args-list", "admin form", admin_schedule(args="[1]"), 400, "must be a dict"),
    Case("form-args-nul", "admin form", admin_schedule(args='{"name": "\\u0000"}'), 400, "NUL"),
    Case("form-function-unknown", "admin form", admin_schedule(function="nope"), 400, "No function is registered"),
    Case("form-function-nul", "admin form", admin_schedule(function="a\x00"), 400, "No function is registered"),
    Case("form-delay-negative", "admin form", admin_schedule(delay_ms="-1"), 400, "0 or more"),
    Case("form-delay-nan", "admin form", admin_schedule(delay_ms="nan"), 400, "Enter a number"),
    Case("form-delay-inf", "admin form", admin_schedule(delay_ms="1e999"), 400, "Enter a number"),
    Case("form-delay-digits", "admin form", admin_schedule(delay_ms="9" * 5000), 400, "Enter a number"),
    Case("form-run-at-9999", "admin form", admin_schedule(delay_ms="", run_at_0="9999-12-31", run_at_1="23:59:59"), 400, "five years"),
    Case("form-run-at-year-1", "admin form", admin_schedule(delay_ms="", run_at_0="0001-01-01", run_at_1="00:00:00"), 400, "five years"),
    Case("form-run-at-invalid", "admin form", admin_schedule(delay_ms="", run_at_0="2030-02-30", run_at_1="00:00"), 400, "valid date"),
    Case("form-both", "admin form", admin_schedule(run_at_0="2030-01-01", run_at_1="00:00"), 400, "not both"),
    Case("form-neither", "admin form", admin_schedule(delay_ms=""), 400, "Give delay_ms"),
    Case("form-too-large", "admin form", admin_schedule(args='{"name": "' + "x" * 3_000_000 + '"}'), 413, "DATA_UPLOAD_MAX_MEMORY_SIZE"),
    Case("form-too-many-fields", "admin form", admin_schedule(**{f"f{n}": "1" for n in range(1100)}), 400, "too many fields"),
    # The admin's actions.
    Case("action-id-overflow", "admin action", admin_action(_selected_action="99999999999999999999999"), 400, "is not a scheduled function id"),
    Case("action-id-letters", "admin action", admin_action(_selected_action="abc"), 400, "is not a scheduled function id"),
    Case("action-id-negative", "admin action", admin_action(_selected_action="-1"), 400, "is not a scheduled function id"),
    Case("action-id-nul", "admin action", admin_action(_selected_action="1\x00"), 400, "is not a scheduled function id"),
    Case("action-unknown", "admin action", admin_action(action="drop_table", _selected_action="1"), 400, "There is no action"),
    Case("action-delete", "admin action", admin_action(action="delete_selected", _selected_action="1"), 400, "There is no action"),
    Case("action-too-many-ids", "admin action", admin_action(_selected_action=[str(n) for n in range(1, 1100)]), 400, "Too many parameters"),
]  # fmt: skip


def test_the_catalogue_covers_every_surface_with_at_least_sixty_cases():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.surface for case in CASES} == {
        "api body",
        "api query",
        "admin query",
        "admin form",
        "admin action",
    }


@pytest.fixture
def clients(db):
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            codename__in=[
                "view_scheduledfunction",
                "add_scheduledfunction",
                "change_scheduledfunction",
            ]
        )
    )
    api = APIClient()
    api.force_authenticate(get_user_model().objects.get(pk=staff.pk))
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("admin", "a@example.com", None))
    return {"api": api, "admin": admin}


def send(clients: dict[str, Any], request: dict[str, Any]):
    if request.get("admin"):
        client = clients["admin"]
        if request["method"] == "GET":
            return client.get(request["path"], request["params"])
        return client.post(request["path"], request["form"])
    client = clients["api"]
    if request["method"] == "GET":
        return client.get(request["path"], request["params"])
    return client.generic(
        "POST", request["path"], request["data"], content_type=request["content_type"]
    )


def answer_text(response) -> str:
    if response["Content-Type"].startswith("application/json"):
        return json.dumps(response.json(), ensure_ascii=False)
    return html.unescape(response.content.decode())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hostile_input_is_a_4xx_with_a_message_and_no_logged_error(clients, caplog, case):
    pending = scheduler.run_after(60_000, functions.increment, {"name": "keep"})
    caplog.set_level(logging.WARNING)
    with override_settings(**case.settings):
        response = send(clients, case.request)
    assert response.status_code == case.status, answer_text(response)[:500]
    assert case.says in answer_text(response), answer_text(response)[:2000]
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [(record.name, record.getMessage()[:200]) for record in errors]
    # A 4xx as Django logs it: a warning on django.request, nothing worse.
    assert any(record.name == "django.request" for record in caplog.records)
    assert list(ScheduledFunction.objects.values_list("pk", "state")) == [(pending, State.PENDING)]
