import socket
import threading

import pytest
from django.db import connection, transaction

from convex_scheduler import scheduler
from convex_scheduler.wakeup import Doorbell, _Notify, ring_doorbells

from . import functions


def test_doorbell_wakes_and_removes_its_socket(tmp_path):
    woken = threading.Event()
    stopped = threading.Event()
    bell = Doorbell(tmp_path, "worker-1", woken.set, stopped)
    bell.start()
    ring_doorbells(tmp_path)
    assert woken.wait(10)
    stopped.set()
    bell.join(10)
    assert not (tmp_path / "worker-1.sock").exists()


def test_ringing_removes_sockets_of_dead_workers(tmp_path):
    stale = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens
    ring_doorbells(tmp_path)
    assert not stale.exists()


def test_ringing_a_missing_folder_is_harmless(tmp_path):
    ring_doorbells(tmp_path / "nobody-here")


@pytest.mark.django_db
def test_one_wake_up_per_transaction_and_only_for_what_is_due_soon(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        for _ in range(3):
            scheduler.run_after(0, functions.increment, {"name": "a"})
        scheduler.run_after(3_600_000, functions.increment, {"name": "a"})
    assert [type(callback) for callback in callbacks] == [_Notify]


@pytest.mark.django_db
def test_nothing_due_soon_wakes_nobody(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        scheduler.run_after(3_600_000, functions.increment, {"name": "a"})
    assert callbacks == []
    assert connection.vendor
