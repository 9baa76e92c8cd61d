"""Worst-case size and memory of a list page and a detail page, over the API and in the admin.

A list row carries a preview of its arguments and error, never the whole, so a
full page of 500 rows stays within a few megabytes however large the rows'
arguments are. A detail carries the arguments in full: its worst case follows
from MAX_ARGS_BYTES. The figures printed here (``pytest -s``) are the ones in
docs/api.rst; the assertions keep them true.
"""

import json
import tracemalloc

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State

from . import functions

pytestmark = pytest.mark.django_db

API = "/api/scheduled-functions/"
CHANGELIST = "/admin/convex_scheduler/scheduledfunction/"
MIB = 1024 * 1024
#: The character whose encoding is longest in the API's UTF-8 JSON: 4 bytes.
WIDE = "\U0001f600"
#: A character the JSON encoder escapes to six bytes (\u0001); valid in every database.
ESCAPED = "\x01"


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", None)


@pytest.fixture
def api(superuser):
    client = APIClient()
    client.force_authenticate(superuser)
    return client


def measure(call):
    """``call()``'s result and the peak of Python memory allocated while it ran."""
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def worst_rows(clock, count, args_bytes):
    """``count`` finished rows as large as a row gets where the list shows it.

    The longest name, arguments of ``args_bytes`` made of the widest
    characters, and an error whose single line is made of escaped ones.
    """
    now = clock.now()
    args = {"name": WIDE * (args_bytes // 4)}
    # Batches of 8 keep each INSERT under MariaDB's 16 MiB max_allowed_packet.
    ScheduledFunction.objects.bulk_create(
        batch_size=8,
        objs=(
            ScheduledFunction(
            name=WIDE * 255,
            kind="action",
            args=args,
            state=State.FAILED,
            scheduled_time=now,
            creation_time=now,
            started_time=now,
            completed_time=now,
            error=ESCAPED * (args_bytes // 4),
            attempts=1,
            )
            for _ in range(count)
        ),
    )


def test_a_list_page_is_bounded_however_large_the_arguments(api, clock, capsys):
    worst_rows(clock, 500, 256 * 1024)
    (response, peak) = measure(lambda: api.get(API, {"page_size": 10_000}))
    assert response.status_code == 200
    rows = response.json()["results"]
    assert len(rows) == 500  # the cap, whatever was asked
    size = len(response.content)
    per_row = max(len(json.dumps(row, ensure_ascii=False).encode()) for row in rows)
    with capsys.disabled():
        print(
            f"\nAPI list page, 500 worst-case rows with 256 KiB arguments each: "
            f"{size / MIB:.2f} MiB, at most {per_row} bytes a row, "
            f"peak Python memory {peak / MIB:.1f} MiB"
        )
    assert len(rows[0]["args_preview"]) == 200
    assert len(rows[0]["error_preview"]) == 200
    assert rows[0]["args_size"] >= 256 * 1024 - 16
    assert size < 2 * MIB
    # The arguments (125 MiB in all) never reach the web process.
    assert peak < 32 * MIB


def test_an_admin_list_page_never_loads_arguments(client, superuser, clock, capsys):
    worst_rows(clock, 100, 256 * 1024)
    client.force_login(superuser)
    (response, peak) = measure(lambda: client.get(CHANGELIST))
    assert response.status_code == 200
    with capsys.disabled():
        print(
            f"\nadmin list page, 100 rows with 256 KiB arguments each: "
            f"{len(response.content) / 1024:.0f} KiB, peak Python memory {peak / MIB:.1f} MiB"
        )
    assert len(response.content) < 2 * MIB
    assert peak < 32 * MIB


@pytest.mark.parametrize(
    "shape",
    [
        # The most Python objects per byte of JSON: about two million empty lists.
        "many small values",
        # The most bytes of JSON per stored byte: one string of escaped characters.
        "one long escaped string",
    ],
)
def test_a_detail_is_bounded_by_the_argument_limit(api, clock, shape, capsys):
    limit = 4 * MIB
    if shape == "many small values":
        args = {"name": [[] for _ in range((limit - 20) // 3)]}
    else:
        args = {"name": ESCAPED * ((limit - 20) // 6)}
    text = json.dumps(args, separators=(",", ":"))
    assert len(text.encode()) <= limit
    pk = scheduler.run_after(0, functions.increment, {"name": "a"})
    ScheduledFunction.objects.filter(pk=pk).update(args=args)
    del args
    (response, peak) = measure(lambda: api.get(f"{API}{pk}/"))
    assert response.status_code == 200
    size = len(response.content)
    with capsys.disabled():
        print(
            f"\nAPI detail, 4 MiB of arguments as {shape}: response {size / MIB:.2f} MiB, "
            f"peak Python memory {peak / MIB:.0f} MiB"
        )
    assert size < limit * 1.25
    assert peak < 512 * MIB


def test_an_admin_detail_page_is_bounded_by_what_it_shows(client, superuser, clock, capsys):
    args = {"name": [[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]] for _ in range(4 * MIB // 40)]}
    pk = scheduler.run_after(0, functions.increment, {"name": "a"})
    ScheduledFunction.objects.filter(pk=pk).update(args=args)
    client.force_login(superuser)
    (response, peak) = measure(lambda: client.get(f"{CHANGELIST}{pk}/change/"))
    assert response.status_code == 200
    page = response.content.decode()
    with capsys.disabled():
        print(
            f"\nadmin detail, 4 MiB of nested arguments: page {len(page) / 1024:.0f} KiB, "
            f"peak Python memory {peak / MIB:.1f} MiB"
        )
    # Collapsed, cut, and a link to the whole.
    assert '<details class="cs-large">' in page
    assert f"{CHANGELIST}{pk}/args.json" in page
    assert len(page) < 512 * 1024
    assert peak < 32 * MIB
    download = client.get(f"{CHANGELIST}{pk}/args.json")
    assert download["Content-Disposition"].startswith("attachment")
    assert json.loads(download.content) == args
