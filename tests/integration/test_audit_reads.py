"""Audited reads do not wait for a write holding the audit chain head (issue 18
item 10): on PostgreSQL they queue, signed, and join the chain at the next fold."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.http import Http404

from radiology import selectors
from radiology.audit import audit_fold_queue, audit_record, audit_verify
from radiology.models import AuditEvent, AuditQueuedEvent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HOLD_S = 2.0
READ_WITHIN_S = 0.5


@contextmanager
def write_holding_the_head(hold_s: float = HOLD_S) -> Iterator[None]:
    """Another connection appends a write event and keeps its transaction (and so
    the chain head's row lock) open for ``hold_s``, as a slow upload does."""
    locked = threading.Event()

    def write() -> None:
        try:
            with transaction.atomic():
                audit_record(
                    action=AuditEvent.Action.UPLOAD,
                    target_type="upload",
                    target_id="slow",
                )
                locked.set()
                time.sleep(hold_s)
        finally:
            connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    assert locked.wait(10), "the writer never took the chain head"
    try:
        yield
    finally:
        writer.join()


def _timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def test_audit_log_page_view_does_not_wait_for_a_write(client, make_user):
    auditor = make_user("auditor", is_staff=True)
    client.force_login(auditor)
    assert client.get("/api/audit").status_code == 200  # warm: appended directly

    with write_holding_the_head():
        elapsed_s, response = _timed(lambda: client.get("/api/audit?limit=5"))
        assert response.status_code == 200
        assert elapsed_s < READ_WITHIN_S, f"the read waited {elapsed_s:.2f} s"
        (queued,) = AuditQueuedEvent.objects.all()
        assert queued.action == AuditEvent.Action.AUDIT_READ

    assert audit_fold_queue() == 1
    chain = list(AuditEvent.objects.order_by("id"))
    assert [(e.action, e.target_id) for e in chain] == [
        (AuditEvent.Action.AUDIT_READ, ""),
        (AuditEvent.Action.UPLOAD, "slow"),
        (AuditEvent.Action.AUDIT_READ, ""),
    ]
    assert chain[-1].queued_as == queued.nonce
    assert chain[-1].extra_data["filters"]["action"] == ""
    result = audit_verify()
    assert result.ok and result.count == 3 and result.queued == 0, result.summary()


def test_denied_access_does_not_wait_and_the_next_write_folds_it(make_user):
    reader = make_user("reader")
    audit_record(action=AuditEvent.Action.UPLOAD, target_type="upload", target_id="1")
    with write_holding_the_head():
        elapsed_s, _ = _timed(
            lambda: pytest.raises(Http404, selectors.series_for, reader, 999_999)
        )
        assert elapsed_s < READ_WITHIN_S, f"the refusal waited {elapsed_s:.2f} s"
        assert AuditQueuedEvent.objects.count() == 1

    audit_record(action=AuditEvent.Action.UPLOAD, target_type="upload", target_id="2")
    assert [(e.action, e.target_id) for e in AuditEvent.objects.order_by("id")] == [
        (AuditEvent.Action.UPLOAD, "1"),
        (AuditEvent.Action.UPLOAD, "slow"),
        (AuditEvent.Action.ACCESS_DENIED, "999999"),
        (AuditEvent.Action.UPLOAD, "2"),
    ]
    assert not AuditQueuedEvent.objects.exists()
    assert audit_verify().ok


def test_read_with_the_head_free_folds_right_after_commit(make_user):
    """The fold after a queued read's commit: with no write in the way it runs at
    once, so a quiet system needs no beat task to complete the chain."""
    reader = make_user("reader")
    audit_record(action=AuditEvent.Action.UPLOAD, target_type="upload", target_id="1")
    with write_holding_the_head(hold_s=0.5):
        with transaction.atomic():
            with pytest.raises(Http404):
                selectors.series_for(reader, 1)
            queued_while_held = AuditQueuedEvent.objects.count()
            time.sleep(0.8)  # the write commits before this read does
    assert queued_while_held == 1
    assert not AuditQueuedEvent.objects.exists()
    assert AuditEvent.objects.latest("id").action == AuditEvent.Action.ACCESS_DENIED
    assert audit_verify().ok


def test_concurrent_reads_and_writes_keep_one_chain(make_user):
    """Reads that queue and folds that race writers lose, fork and repeat nothing."""
    reader = make_user("reader")
    audit_record(action=AuditEvent.Action.UPLOAD, target_type="upload", target_id="0")
    per_thread = 40

    def run(action: str, name: str) -> None:
        try:
            for i in range(per_thread):
                with transaction.atomic():
                    audit_record(
                        action=action,
                        actor=reader,
                        target_type=name,
                        target_id=str(i),
                    )
                    time.sleep(0.005)  # a write's transaction goes on a little
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(action, f"{action}-{n}"))
        for n in range(2)
        for action in (AuditEvent.Action.UPLOAD, AuditEvent.Action.AUDIT_READ)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit_fold_queue()

    result = audit_verify()
    assert result.ok and result.queued == 0, result.summary()
    assert result.count == 1 + 4 * per_thread
    chain = list(AuditEvent.objects.order_by("id"))
    assert len({e.prev_hash for e in chain}) == len(chain), "the chain forked"
    for name in {e.target_type for e in chain} - {"upload"}:
        ids = [e.target_id for e in chain if e.target_type == name]
        assert ids == [str(i) for i in range(per_thread)], name
    assert any(e.queued_as for e in chain), "no read had to queue"


def test_verify_is_not_fooled_by_a_write_committed_while_it_runs(monkeypatch):
    """A write that commits (and appends its checkpoint) while verify_audit runs is
    either wholly in verify's snapshot or wholly after it, never half."""
    from radiology.audit import chain

    audit_record(action=AuditEvent.Action.UPLOAD, target_type="upload", target_id="0")
    read_log = chain.read_checkpoints

    def write_then_read(path, keys):
        def write() -> None:
            try:
                audit_record(
                    action=AuditEvent.Action.UPLOAD, target_type="upload", target_id="1"
                )
            finally:
                connection.close()

        writer = threading.Thread(target=write)
        writer.start()
        writer.join()
        return read_log(path, keys)

    monkeypatch.setattr(chain, "read_checkpoints", write_then_read)
    result = audit_verify()
    assert result.ok, result.summary()
