"""The audit log: append-only in the model and the database; chain verification."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from radiology.audit import GENESIS_HASH, audit_record, audit_verify
from radiology.models import AuditEvent, AuditImmutableError

pytestmark = pytest.mark.django_db


def _events(n, actor=None):
    return [
        audit_record(action=AuditEvent.Action.UPLOAD, actor=actor, extra_data={"i": i})
        for i in range(n)
    ]


def test_events_chain_from_genesis(alice):
    first, second = _events(2, alice)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert audit_verify().ok and audit_verify().count == 2


def test_save_of_existing_event_is_refused(alice):
    (event,) = _events(1, alice)
    event.extra_data = {"i": 99}
    with pytest.raises(AuditImmutableError):
        event.save()


@pytest.mark.parametrize("operation", ["update", "delete"])
def test_queryset_writes_are_refused(alice, operation):
    _events(1, alice)
    with pytest.raises(AuditImmutableError):
        if operation == "update":
            AuditEvent.objects.all().update(action="export")
        else:
            AuditEvent.objects.all().delete()


def test_database_trigger_refuses_raw_update(alice):
    (event,) = _events(1, alice)
    with pytest.raises(DatabaseError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE radiology_auditevent SET target_id = 'x' WHERE id = %s",
                [event.pk],
            )


def _tamper(sql, params):
    """What a database superuser could do: drop the guard, then edit."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DROP TRIGGER radiology_auditevent_no_update")
        else:
            cursor.execute("ALTER TABLE radiology_auditevent DISABLE TRIGGER USER")
        cursor.execute(sql, params)


def test_tampered_event_is_found_by_verify_audit(alice, capsys):
    events = _events(4, alice)
    _tamper(
        "UPDATE radiology_auditevent SET extra_data = %s WHERE id = %s",
        ['{"i": 1000}', events[2].pk],
    )
    result = audit_verify()
    assert not result.ok
    assert result.broken_event_id == events[2].pk
    with pytest.raises(SystemExit) as exit_info:
        call_command("verify_audit")
    assert exit_info.value.code == 1
    assert f"event {events[2].pk}" in capsys.readouterr().err


def test_deleted_last_event_is_found(alice):
    events = _events(3, alice)
    _tamper("DELETE FROM radiology_auditevent WHERE id = %s", [events[-1].pk])
    result = audit_verify()
    assert not result.ok and "removed" in result.reason


def test_verify_audit_command_prints_count(alice, capsys):
    _events(3, alice)
    call_command("verify_audit")
    assert capsys.readouterr().out.strip() == "ok 3 events"
