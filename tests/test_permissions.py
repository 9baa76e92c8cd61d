"""The permission matrix: who may do what, over the REST API and in the admin.

Both faces use Django's model permissions on scheduled functions: ``view`` to
list and read, ``add`` to schedule, ``change`` to cancel. The admin also
needs ``is_staff`` (Django's rule) and, to schedule an internal function,
``schedule_internal_function``; the API never schedules internal functions.
"""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.test import APIClient

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State

from . import functions

pytestmark = pytest.mark.django_db

API = "/api/scheduled-functions/"
CHANGELIST = "/admin/convex_scheduler/scheduledfunction/"
ADD = CHANGELIST + "add/"

ROLES = {
    "anonymous": None,
    "plain user": (False, []),
    "staff without permissions": (True, []),
    "view only": (True, ["view"]),
    "view and add": (True, ["view", "add"]),
    "view and change": (True, ["view", "change"]),
    "superuser": "superuser",
}


def make_user(role):
    spec = ROLES[role]
    if spec is None:
        return None
    model = get_user_model()
    if spec == "superuser":
        return model.objects.create_superuser("root", "root@example.com", None)
    is_staff, actions = spec
    user = model.objects.create_user(role.replace(" ", "_"), is_staff=is_staff)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="convex_scheduler",
            codename__in=[f"{action}_scheduledfunction" for action in actions],
        )
    )
    return user


def api_client(role):
    client = APIClient()
    user = make_user(role)
    if user is not None:
        client.force_authenticate(model_fresh(user))
    return client


def admin_client(role):
    client = Client()
    user = make_user(role)
    if user is not None:
        client.force_login(user)
    return client


def model_fresh(user):
    return get_user_model().objects.get(pk=user.pk)


# The REST API: 401 for anonymous users, 403 for the rest without the permission.

#            list  retrieve  schedule  cancel  schema
API_MATRIX = {
    "anonymous": (401, 401, 401, 401, 401),
    "plain user": (403, 403, 403, 403, 403),
    "staff without permissions": (403, 403, 403, 403, 403),
    "view only": (200, 200, 403, 403, 200),
    "view and add": (200, 200, 201, 403, 200),
    "view and change": (200, 200, 403, 200, 200),
    "superuser": (200, 200, 201, 200, 200),
}


@pytest.mark.parametrize("role", list(API_MATRIX))
def test_api_permission_matrix(role, clock):
    pending = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    client = api_client(role)
    expected = API_MATRIX[role]
    got = (
        client.get(API).status_code,
        client.get(f"{API}{pending}/").status_code,
        client.post(
            API,
            {"function": "tests.functions:record", "args": {}, "delay_ms": 0},
            format="json",
        ).status_code,
        client.post(f"{API}{pending}/cancel/").status_code,
        client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").status_code,
    )
    assert got == expected
    # What was refused changed nothing.
    state = ScheduledFunction.objects.get(pk=pending).state
    assert state == (State.CANCELED if expected[3] == 200 else State.PENDING)
    assert ScheduledFunction.objects.count() == (2 if expected[2] == 201 else 1)


def test_api_never_schedules_internal_functions_even_for_superusers(clock):
    client = api_client("superuser")
    response = client.post(
        API, {"function": "tests:internal_record", "args": {}, "delay_ms": 0}, format="json"
    )
    assert response.status_code == 400
    assert "No public function" in response.data["function"][0]
    assert not ScheduledFunction.objects.exists()


def test_api_refusals_say_why(clock):
    anonymous = APIClient().get(API)
    assert anonymous["WWW-Authenticate"].startswith("Basic")
    assert "credentials were not provided" in anonymous.data["detail"]
    viewer = api_client("view only")
    refused = viewer.post(
        API, {"function": "tests.functions:record", "args": {}, "delay_ms": 0}, format="json"
    )
    assert "permission" in refused.data["detail"]


def test_a_plain_user_with_the_view_permission_may_read_over_the_api(clock):
    # DRF's DjangoModelPermissions: the permission decides, not is_staff.
    user = get_user_model().objects.create_user("reader")
    user.user_permissions.add(Permission.objects.get(codename="view_scheduledfunction"))
    client = APIClient()
    client.force_authenticate(model_fresh(user))
    assert client.get(API).status_code == 200


# The admin: login for users who are not staff, 403 for staff without the permission.

#        changelist  detail  schedule form  cancel  cancel action  download args
ADMIN_MATRIX = {
    "anonymous": (302, 302, 302, 302, 302, 302),
    "plain user": (302, 302, 302, 302, 302, 302),
    "staff without permissions": (403, 403, 403, 403, 403, 403),
    "view only": (200, 200, 403, 403, 403, 200),
    "view and add": (200, 200, 200, 403, 403, 200),
    "view and change": (200, 200, 403, 302, 302, 200),
    "superuser": (200, 200, 200, 302, 302, 200),
}


@pytest.mark.parametrize("role", list(ADMIN_MATRIX))
def test_admin_permission_matrix(role, clock):
    first = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    second = scheduler.run_after(60_000, functions.increment, {"name": "b"})
    client = admin_client(role)
    expected = ADMIN_MATRIX[role]
    responses = (
        client.get(CHANGELIST),
        client.get(f"{CHANGELIST}{first}/change/"),
        client.get(ADD),
        client.post(f"{CHANGELIST}{first}/cancel/"),
        client.post(
            CHANGELIST, {"action": "cancel_selected", "index": "0", "_selected_action": [second]}
        ),
        client.get(f"{CHANGELIST}{first}/args.json"),
    )
    assert tuple(response.status_code for response in responses) == expected
    if expected[0] == 302:
        assert "/admin/login/" in responses[0]["Location"]
    may_cancel = role in ("view and change", "superuser")
    canceled = State.CANCELED if may_cancel else State.PENDING
    assert ScheduledFunction.objects.get(pk=first).state == canceled
    assert ScheduledFunction.objects.get(pk=second).state == canceled


@pytest.mark.parametrize(
    ("role", "cancel_button", "schedule_link", "cancel_action"),
    [
        ("view only", False, False, False),
        ("view and add", False, True, False),
        ("view and change", True, False, True),
        ("superuser", True, True, True),
    ],
)
def test_admin_shows_only_what_the_user_may_do(
    role, cancel_button, schedule_link, cancel_action, clock
):
    pending = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    client = admin_client(role)
    listing = client.get(CHANGELIST).content.decode()
    detail = client.get(f"{CHANGELIST}{pending}/change/").content.decode()
    assert ('class="cs-cancel-button"' in detail) is cancel_button
    assert (f'href="{ADD}"' in listing) is schedule_link
    assert ('value="cancel_selected"' in listing) is cancel_action
    # Rows are never edited: no save buttons, whoever looks.
    assert 'name="_save"' not in detail


def test_internal_functions_need_their_own_permission_in_the_admin(clock):
    adder = make_user("view and add")
    client = Client()
    client.force_login(adder)
    form = client.get(ADD).content.decode()
    assert "tests:internal_record" not in form
    refused = client.post(ADD, {"function": "tests:internal_record", "args": "{}", "delay_ms": "0"})
    assert refused.status_code == 400
    assert "No public function" in refused.content.decode()
    assert not ScheduledFunction.objects.exists()

    adder.user_permissions.add(Permission.objects.get(codename="schedule_internal_function"))
    client.force_login(model_fresh(adder))
    assert "tests:internal_record" in client.get(ADD).content.decode()
    accepted = client.post(
        ADD, {"function": "tests:internal_record", "args": "{}", "delay_ms": "0"}
    )
    assert accepted.status_code == 302
    assert ScheduledFunction.objects.get().name == "tests:internal_record"
