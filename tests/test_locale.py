# Japanese text is written with full-width parentheses.
# ruff: noqa: RUF001
"""The Japanese locale: the admin, the API's errors, SchedulingError and the commands' help.

Each test runs with ``LANGUAGE_CODE = "ja"`` and Japanese active, and looks
for the exact translation of a few messages, so a missing or stale compiled
catalogue (``locale/ja/LC_MESSAGES/django.mo``) fails here. That the catalogue
is complete and compiled from the committed ``.po`` is ``scripts/check``'s
"makemessages" check.
"""

import html
from contextlib import contextmanager

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import translation
from rest_framework.test import APIClient

from convex_scheduler import scheduler
from convex_scheduler.exceptions import SchedulingError
from convex_scheduler.management.commands.runscheduler import Command as RunScheduler
from convex_scheduler.management.commands.scheduledfunctions import (
    Command as ScheduledFunctions,
)
from convex_scheduler.models import ScheduledFunction

from . import functions
from .test_api import LIST_URL, grant

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:convex_scheduler_scheduledfunction_changelist")


@contextmanager
def japanese():
    with override_settings(LANGUAGE_CODE="ja"), translation.override("ja"):
        yield


@pytest.fixture
def admin_client(db):
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", None)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def api(db):
    user = get_user_model().objects.create_user("staff", is_staff=True)
    user = grant(user, "view_scheduledfunction", "add_scheduledfunction")
    client = APIClient()
    client.force_authenticate(user)
    return client


def page(response):
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def test_the_changelist_is_in_japanese(admin_client, clock):
    scheduler.run_after(60_000, functions.record, {"label": "a"})
    with japanese():
        text = page(admin_client.get(CHANGELIST))
    # The title (the model's verbose_name_plural) and Django's own admin words.
    assert "<h1>スケジュール済み関数</h1>" in text
    assert "ホーム" in text
    # The overview, the object tools, the action and the columns.
    assert "スケジューラーの遅延:" in text
    assert "なし（予定時刻を過ぎたものはありません）" in text
    assert "稼働中のワーカー: 0" in text
    assert "関数をスケジュール" in text
    assert "該当するものをすべてキャンセル…" in text
    assert "選択されたスケジュール済み関数をキャンセル" in text
    assert "予定時刻" in text
    assert "試行回数" in text
    # State labels are translated; the state values in links and classes are not.
    assert "待機中" in text
    assert "?state__exact=pending" in text
    assert "cs-state-pending" in text


def test_the_change_page_is_in_japanese(admin_client, clock):
    pk = scheduler.run_after(60_000, functions.record, {"label": "a"})
    url = reverse("admin:convex_scheduler_scheduledfunction_change", args=[pk])
    with japanese():
        text = page(admin_client.get(url))
    assert "引数と結果" in text
    assert "スケジュール元とスケジュール先" in text
    assert "次回実行時刻" in text
    assert "引数を JSON でダウンロード" in text
    assert '<button type="submit" class="cs-cancel-button">キャンセル</button>' in text
    assert "アクション" in text  # the kind's label


def test_a_refused_admin_input_is_explained_in_japanese(admin_client):
    with japanese():
        response = admin_client.get(CHANGELIST, {"nope": "1"})
    assert response.status_code == 400
    text = html.unescape(response.content.decode())
    assert "不正なリクエスト" in text
    assert "不明なフィルター 'nope' です。" in text


def test_an_api_400_is_in_japanese(api, clock):
    with japanese():
        response = api.post(
            LIST_URL,
            {"function": "tests.functions:increment", "args": {"name": "a"}, "delay_ms": -1},
            format="json",
        )
    assert response.status_code == 400
    assert response.json() == {
        "delay_ms": ["delay_ms は 0 以上でなければなりません（-1 が指定されました）。"]
    }


def test_an_api_400_from_the_serializer_and_from_the_argument_types(api, clock):
    with japanese():
        bad_time = api.post(
            LIST_URL,
            {"function": "tests.functions:increment", "args": {"name": "a"}, "run_at": "x"},
            format="json",
        )
        bad_type = api.post(
            LIST_URL,
            {"function": "tests.functions:increment", "args": {"name": 5}, "delay_ms": 0},
            format="json",
        )
    assert bad_time.status_code == 400
    assert bad_time.json()["run_at"] == [
        "'x' は正しい ISO 8601 の時刻ではありません（例: 2030-01-01T09:00:00Z）。"
    ]
    assert bad_type.status_code == 400
    assert bad_type.json()["args"] == [
        "'tests.functions:increment' の引数 'name' は str でなければなりません"
        "（int が指定されました）。"
    ]


def test_scheduling_errors_are_in_the_active_language_and_keep_their_field(clock):
    with japanese(), pytest.raises(SchedulingError) as japanese_error:
        scheduler.schedule(functions.increment, {"name": "a"}, allow_internal=False)
    assert str(japanese_error.value) == (
        "delay_ms（今からのミリ秒数）または run_at（時刻）を指定してください。"
    )
    assert japanese_error.value.field is None

    with japanese(), pytest.raises(SchedulingError) as with_field:
        scheduler.run_after(-1, functions.increment, {"name": "a"})
    assert str(with_field.value).startswith("delay_ms は 0 以上でなければなりません")
    assert with_field.value.field == "delay_ms"

    # The message is made when the error is raised: English outside the override.
    with pytest.raises(SchedulingError) as english:
        scheduler.run_after(-1, functions.increment, {"name": "a"})
    assert str(english.value) == "delay_ms must be 0 or more, not -1."
    assert not ScheduledFunction.objects.exists()


def test_the_commands_help_is_in_japanese():
    with japanese():
        worker_help = RunScheduler().create_parser("manage.py", "runscheduler").format_help()
        list_help = ScheduledFunctions().create_parser("manage.py", "scheduledfunctions")
    assert "予定時刻になったスケジュール済み関数を実行します。" in worker_help
    assert "同時に実行する関数の数（既定: CONCURRENCY 設定）。" in worker_help
    assert "スケジュール済み関数の一覧表示" in list_help.format_help()


def test_cron_schedules_in_words_are_japanese_in_the_admin_and_english_in_logs(admin_client):
    from datetime import timedelta

    from convex_scheduler import crons

    digest = crons.register(
        "digest", functions.increment, {"name": "d"}, cron="30 8 * * 1", timezone="Asia/Tokyo"
    )
    sweep = crons.register(
        "sweep", functions.increment, {"name": "s"}, interval=timedelta(minutes=5)
    )
    crons.register("odd", functions.increment, {"name": "o"}, cron="*/7 2-4 * * *")
    with japanese():
        page = html.unescape(
            admin_client.get(reverse("admin:convex_scheduler_cronjob_changelist")).content.decode()
        )
        english = crons.Schedule.of(digest).describe_in_english()
    assert "毎週月曜日 08:30 (Asia/Tokyo)" in page
    assert "5 分 ごと" in page
    # cronsim explains in English only: Japanese shows the expression itself.
    assert "cron 式 */7 2-4 * * *" in page
    assert english == "every Monday at 08:30 (Asia/Tokyo)"
    with translation.override("en"):
        assert crons.describe(sweep) == "every 5 minutes"
