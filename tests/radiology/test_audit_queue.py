"""Access events queued while a write holds the chain head: signed, folded in order,
and every way of tampering with the queue caught by verify_audit.

SQLite has no row locks, so ``audit_record`` never finds the head busy here; these
tests queue through ``enqueue``, the step it takes then (the busy head itself is
exercised on PostgreSQL in tests/integration/test_audit_reads.py).
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings as django_settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from radiology import tasks
from radiology.audit import audit_fold_queue, audit_record, audit_verify, normalise
from radiology.audit.chain import event_hash
from radiology.audit.keys import signing_keys
from radiology.audit.queue import ACCESS_ACTIONS, enqueue
from radiology.models import (
    AuditChainHead,
    AuditEvent,
    AuditImmutableError,
    AuditQueuedEvent,
)

pytestmark = pytest.mark.django_db


def _write(actor, i=0):
    return audit_record(
        action=AuditEvent.Action.UPLOAD, actor=actor, extra_data={"i": i}
    )


def _queue(actor, i=0, action=AuditEvent.Action.AUDIT_READ, chain_id=None):
    """What ``audit_record`` does with an access event when a write holds the head."""
    return enqueue(
        fields={
            "created_at": timezone.now(),
            "actor": actor,
            "actor_name": actor.get_username(),
            "action": action,
            "target_type": "audit",
            "target_id": "",
            "study_id": None,
            "extra_data": normalise({"i": i}),
        },
        chain_id=chain_id or AuditChainHead.objects.get(pk=1).chain_id,
        keys=signing_keys(),
    )


def _committed_queue(capture, actor, n=1):
    rows = []
    for i in range(n):
        with capture(execute=True):
            rows.append(_queue(actor, i))
    return rows


def _tamper_queue(sql, params):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _checkpoint_lines():
    path = django_settings.AUDIT_CHECKPOINT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reads_refusals_token_uses_and_lockouts_are_the_queued_kinds():
    assert ACCESS_ACTIONS == {
        AuditEvent.Action.AUDIT_READ,
        AuditEvent.Action.ACCESS_DENIED,
        AuditEvent.Action.TOKEN_USED,
        AuditEvent.Action.AUTH_LOCKOUT,
    }


def test_next_write_folds_the_queue_first_in_id_order(alice):
    first = _write(alice, 0)
    queued = [_queue(alice, i) for i in (1, 2)]
    last = _write(alice, 3)
    chain = list(AuditEvent.objects.order_by("id"))
    assert [e.extra_data["i"] for e in chain] == [0, 1, 2, 3]
    assert [e.queued_as for e in chain] == ["", queued[0].nonce, queued[1].nonce, ""]
    assert chain[0] == first and chain[-1] == last
    assert [e.created_at for e in chain[1:3]] == [q.created_at for q in queued]
    assert last.prev_hash == chain[2].hash
    assert not AuditQueuedEvent.objects.exists()
    head = AuditChainHead.objects.get(pk=1)
    assert head.count == 4 and head.last_hash == last.hash
    assert audit_verify().ok and audit_verify().count == 4


def test_beat_task_folds_and_checkpoints(alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _write(alice)
    (row,) = _committed_queue(django_capture_on_commit_callbacks, alice)
    assert audit_verify().queued == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.fold_audit_queue() == 1
    lines = _checkpoint_lines()
    assert lines[1]["queued"] == row.nonce
    assert lines[2]["count"] == 2
    assert AuditEvent.objects.latest("id").queued_as == row.nonce
    result = audit_verify()
    assert result.ok and result.queued == 0 and result.anchored == 2
    assert audit_fold_queue() == 0


def test_beat_task_runs_every_30_s_and_a_stale_run_expires():
    entry = django_settings.CELERY_BEAT_SCHEDULE["fold-audit-queue"]
    assert entry == {
        "task": "radiology.tasks.fold_audit_queue",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    }
    from radiology.tasks import fold_audit_queue

    assert (fold_audit_queue.soft_time_limit, fold_audit_queue.time_limit) == (60, 90)


def test_verify_reports_queued_events(alice, capsys):
    from django.core.management import call_command

    _write(alice)
    _queue(alice)
    call_command("verify_audit")
    out = capsys.readouterr().out.strip()
    assert out == "ok 1 events, no checkpoint yet, 1 queued access events to fold"


def test_folded_event_signs_its_nonce(alice):
    _write(alice)
    row = _queue(alice)
    audit_fold_queue()
    event = AuditEvent.objects.get(queued_as=row.nonce)
    chain_id = AuditChainHead.objects.get(pk=1).chain_id
    event.queued_as = ""
    assert event_hash(event, keys=signing_keys(), chain_id=chain_id) != event.hash


def test_queued_event_cannot_be_updated(alice):
    _write(alice)
    row = _queue(alice)
    row.extra_data = {"i": 99}
    with pytest.raises(AuditImmutableError):
        row.save()
    with pytest.raises(AuditImmutableError):
        AuditQueuedEvent.objects.update(target_id="x")


def test_edited_queued_event_is_caught_and_never_folded(alice):
    _write(alice)
    row = _queue(alice)
    _tamper_queue(
        "UPDATE radiology_auditqueuedevent SET extra_data = %s WHERE id = %s",
        ['{"i": 1000}', row.pk],
    )
    result = audit_verify()
    assert not result.ok
    assert result.reason == (
        f"queued event {row.pk} does not match its signature: edited or forged"
    )
    assert audit_fold_queue() == 0
    assert AuditEvent.objects.count() == 1


def test_forged_queued_event_is_caught_and_never_folded(alice):
    _write(alice)
    genuine = _queue(alice)
    AuditQueuedEvent.objects.create(
        nonce="f" * 32,
        created_at=timezone.now(),
        actor_name="mallory",
        action=AuditEvent.Action.AUDIT_READ,
        chain_id=genuine.chain_id,
        key_id=genuine.key_id,
        mac="0" * 64,
    )
    assert "does not match its signature" in audit_verify().reason
    # The genuine one before it still joins the chain; the forgery stays, reported.
    assert audit_fold_queue() == 1
    assert list(AuditQueuedEvent.objects.values_list("nonce", flat=True)) == ["f" * 32]
    assert not audit_verify().ok


def test_queued_event_for_another_chain_is_caught(alice):
    """A row copied from another install's queue: signed, but not for this chain."""
    _write(alice)
    row = _queue(alice, chain_id="c" * 32)
    assert audit_fold_queue() == 0
    result = audit_verify()
    assert not result.ok and f"queued event {row.pk} belongs to another" in (
        result.reason
    )


def test_deleted_queued_event_is_caught_by_its_mark(
    alice, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _write(alice)
    rows = _committed_queue(django_capture_on_commit_callbacks, alice, n=2)
    AuditQueuedEvent.objects.filter(pk=rows[0].pk).delete()
    result = audit_verify()
    assert not result.ok and result.missing == 1
    assert result.reason.startswith(
        f"1 queued access events are neither queued nor in the chain "
        f"(the first, {rows[0].nonce}, queued at"
    )


def test_rolled_back_queued_event_leaves_no_mark(
    alice, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _write(alice)
        try:
            with transaction.atomic():
                _queue(alice)
                raise RuntimeError("roll the read back")
        except RuntimeError:
            pass
    assert not any("queued" in line for line in _checkpoint_lines())
    assert audit_verify().ok


def test_replayed_queued_event_is_caught_and_never_folded_again(alice):
    _write(alice)
    row = _queue(alice)
    audit_fold_queue()
    replay = AuditQueuedEvent(
        **{
            f.attname: getattr(row, f.attname)
            for f in AuditQueuedEvent._meta.concrete_fields
        }
    )
    replay.save()
    event = AuditEvent.objects.get(queued_as=row.nonce)
    result = audit_verify()
    assert not result.ok
    assert result.reason == (
        f"queued event {replay.pk} is already in the chain as event {event.pk}"
    )
    assert audit_fold_queue() == 0
    assert AuditEvent.objects.filter(queued_as=row.nonce).count() == 1


def test_database_refuses_a_nonce_folded_twice(alice):
    _write(alice)
    row = _queue(alice)
    audit_fold_queue()
    event = AuditEvent.objects.get(queued_as=row.nonce)
    again = AuditEvent(
        created_at=event.created_at,
        actor_name=event.actor_name,
        action=event.action,
        extra_data=event.extra_data,
        prev_hash=event.hash,
        hash="e" * 64,
        key_id=event.key_id,
        queued_as=row.nonce,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        again.save()


def test_nonce_folded_twice_is_caught(alice):
    """A fold that ran twice (with the key, past the unique index) still shows."""
    _write(alice)
    row = _queue(alice)
    audit_fold_queue()
    event = AuditEvent.objects.get(queued_as=row.nonce)
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX radiology_audit_folded_once")
    head = AuditChainHead.objects.get(pk=1)
    again = AuditEvent(
        created_at=event.created_at,
        actor_name=event.actor_name,
        action=event.action,
        extra_data=event.extra_data,
        prev_hash=head.last_hash,
        key_id=event.key_id,
        queued_as=row.nonce,
    )
    again.hash = event_hash(again, keys=signing_keys(), chain_id=head.chain_id)
    again.save()
    AuditChainHead.objects.filter(pk=1).update(last_hash=again.hash, count=3)
    result = audit_verify()
    assert not result.ok and result.broken_event_id == again.pk
    assert result.reason == (
        f"queued event {row.nonce} is folded twice, first as event {event.pk}"
    )
