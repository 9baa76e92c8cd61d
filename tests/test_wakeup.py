import logging
import socket
import threading

import pytest
from django.db import connection, transaction

from convex_scheduler import scheduler, wakeup
from convex_scheduler.wakeup import ring_doorbells
from convex_scheduler.worker.listeners import Doorbell

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


def test_ringing_a_missing_folder_is_harmless(tmp_path, caplog):
    """No folder means no worker on this machine: nothing to log, nothing made."""
    missing = tmp_path / "nobody-here"
    with caplog.at_level(logging.DEBUG, logger="convex_scheduler"):
        ring_doorbells(missing)
    assert caplog.records == []
    assert not missing.exists()


@pytest.mark.django_db
def test_one_doorbell_per_transaction_and_only_for_what_is_due_soon(
    django_capture_on_commit_callbacks, monkeypatch
):
    rings = []
    monkeypatch.setattr(wakeup, "ring_doorbells", rings.append)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
            for _ in range(3):
                scheduler.run_after(0, functions.increment, {"name": "a"})
            scheduler.run_after(3_600_000, functions.increment, {"name": "a"})
        if connection.vendor == "postgresql":
            assert callbacks == []  # pg_notify went with the inserts
        else:
            assert len(callbacks) == 3  # one per schedule due soon, none for the later one
    # However many callbacks, each committed transaction rang once.
    expected = 0 if connection.vendor == "postgresql" else 2
    assert len(rings) == expected


@pytest.mark.django_db
def test_a_rolled_back_transaction_rings_nobody_and_the_next_one_rings(
    django_capture_on_commit_callbacks, monkeypatch
):
    rings = []
    monkeypatch.setattr(wakeup, "ring_doorbells", rings.append)
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            scheduler.run_after(0, functions.increment, {"name": "a"})
            transaction.set_rollback(True)
        assert rings == []
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        scheduler.run_after(0, functions.increment, {"name": "a"})
    assert len(rings) == (0 if connection.vendor == "postgresql" else 1)


@pytest.mark.django_db
def test_nothing_due_soon_rings_nobody(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        scheduler.run_after(3_600_000, functions.increment, {"name": "a"})
    assert callbacks == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_postgresql_notifies_on_commit_only_for_what_is_due_soon():
    from django.db import connections

    listener = connections.create_connection("default")
    try:
        listener.ensure_connection()
        listener.connection.autocommit = True
        listener.connection.execute("LISTEN convex_scheduler")

        def received():
            return list(listener.connection.notifies(timeout=0.5, stop_after=1))

        scheduler.run_after(3_600_000, functions.increment, {"name": "a"})
        assert received() == []
        try:
            with transaction.atomic():
                scheduler.run_after(0, functions.increment, {"name": "a"})
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        assert received() == []
        with transaction.atomic():
            scheduler.run_after(0, functions.increment, {"name": "a"})
            scheduler.run_after(0, functions.increment, {"name": "a"})
        assert [note.channel for note in received()] == ["convex_scheduler"]
        assert received() == []  # folded to one per transaction
    finally:
        listener.close()


def test_a_doorbell_folder_others_can_enter_is_refused(tmp_path):
    from convex_scheduler.wakeup import UnsafeDoorbellDir, check_private_dir

    folder = tmp_path / "bells"
    folder.mkdir(mode=0o700)
    check_private_dir(folder)
    folder.chmod(0o777)
    with pytest.raises(UnsafeDoorbellDir, match="mode 777"):
        check_private_dir(folder)
    with pytest.raises(UnsafeDoorbellDir, match="mode 777"):
        Doorbell(folder, "worker-1", lambda: None, threading.Event())


def test_a_symlinked_doorbell_folder_is_refused(tmp_path):
    from convex_scheduler.wakeup import UnsafeDoorbellDir, check_private_dir

    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UnsafeDoorbellDir, match="not a folder"):
        check_private_dir(link)


def test_a_doorbell_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    import os

    from convex_scheduler.wakeup import UnsafeDoorbellDir, check_private_dir

    folder = tmp_path / "bells"
    folder.mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(folder).st_uid + 1)
    with pytest.raises(UnsafeDoorbellDir, match="belongs to user id"):
        check_private_dir(folder)


def test_ringing_never_follows_symlinks_and_skips_unsafe_folders(tmp_path, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "victim.sock"
    victim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    victim.bind(str(target))
    victim.setblocking(False)
    folder = tmp_path / "bells"
    folder.mkdir(mode=0o700)
    (folder / "planted.sock").symlink_to(target)
    try:
        ring_doorbells(folder)
        with pytest.raises(BlockingIOError):
            victim.recv(64)  # nothing arrived through the link
        assert (folder / "planted.sock").is_symlink()  # and it was not touched
        folder.chmod(0o755)
        ring_doorbells(folder)
        assert "not ringing local workers" in caplog.text
    finally:
        victim.close()
