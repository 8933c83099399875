"""The audit log: append-only in the model and the database; keyed chain verification
against the checkpoint log kept outside the database."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from radiology.audit import GENESIS_HASH, audit_record, audit_verify, canonical_json
from radiology.audit.keys import add_key, load_keys
from radiology.errors import AuditKeyError
from radiology.models import AuditChainHead, AuditEvent, AuditImmutableError

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
            cursor.execute("DROP TRIGGER IF EXISTS radiology_auditevent_no_update")
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
    assert capsys.readouterr().out.strip() == "ok 3 events, no checkpoint yet"


# --- keyed hashing and the checkpoint anchor (what database write access cannot hide)


def _committed(n, capture, actor=None):
    """``n`` events, each in its own committed transaction, so each is checkpointed."""
    events = []
    for i in range(n):
        with capture(execute=True):
            events.append(
                audit_record(
                    action=AuditEvent.Action.UPLOAD, actor=actor, extra_data={"i": i}
                )
            )
    return events


def _checkpoint_lines(settings):
    return [
        json.loads(line)
        for line in settings.AUDIT_CHECKPOINT_FILE.read_text().splitlines()
    ]


def _public_hash(event, prev_hash, extra_data):
    """The pre-key algorithm anyone can run: SHA-256 of the event's fields."""
    payload = {
        "prev_hash": prev_hash,
        "created_at": event.created_at.isoformat(timespec="microseconds"),
        "actor": event.actor_name,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "study_id": event.study_id,
        "extra_data": extra_data,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _rewind_head(count, last_hash, unkeyed=None):
    fields = {"count": count, "last_hash": last_hash}
    if unkeyed is not None:
        fields["unkeyed_count"] = unkeyed
    AuditChainHead.objects.filter(pk=1).update(**fields)


def test_events_are_signed_with_the_current_key(alice, settings):
    (event,) = _events(1, alice)
    keys = load_keys(settings.AUDIT_KEY_FILE)
    assert event.key_id == keys.current
    assert event.hash != _public_hash(event, GENESIS_HASH, event.extra_data)


def test_each_commit_appends_one_signed_checkpoint(
    alice, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        events = _events(3, alice)
    _committed(1, django_capture_on_commit_callbacks)
    lines = _checkpoint_lines(settings)
    head = AuditChainHead.objects.get(pk=1)
    assert [line["count"] for line in lines] == [3, 4]
    assert lines[0]["head"] == events[-1].hash
    assert lines[1]["head"] == head.last_hash and lines[1]["chain"] == head.chain_id
    result = audit_verify()
    assert result.ok and result.anchored == 4


def test_rolled_back_savepoint_never_gets_a_checkpoint(
    alice, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        (kept,) = _events(1, alice)
        try:
            with transaction.atomic():
                _events(1, alice)
                raise RuntimeError("roll this one back")
        except RuntimeError:
            pass
    assert not settings.AUDIT_CHECKPOINT_FILE.exists()
    _committed(1, django_capture_on_commit_callbacks)
    assert [line["count"] for line in _checkpoint_lines(settings)] == [2]
    assert audit_verify().ok


def test_edit_rehashed_with_the_public_algorithm_is_caught(
    alice, django_capture_on_commit_callbacks
):
    events = _committed(4, django_capture_on_commit_callbacks, alice)
    # The attacker rewrites event 2 and every hash after it, with no key to use.
    prev = events[1].hash
    for event in events[2:]:
        extra = {"i": 1000} if event is events[2] else event.extra_data
        digest = _public_hash(event, prev, extra)
        _tamper(
            "UPDATE radiology_auditevent SET extra_data = %s, prev_hash = %s, "
            "hash = %s "
            "WHERE id = %s",
            [json.dumps(extra), prev, digest, event.pk],
        )
        prev = digest
    _rewind_head(4, prev)
    result = audit_verify()
    assert not result.ok and result.broken_event_id == events[2].pk
    assert "does not match its hash" in result.reason


def test_chain_rewritten_as_unkeyed_is_caught_by_the_checkpoint(
    alice, django_capture_on_commit_callbacks
):
    events = _committed(3, django_capture_on_commit_callbacks, alice)
    prev = GENESIS_HASH
    for event in events:
        digest = _public_hash(event, prev, event.extra_data)
        _tamper(
            "UPDATE radiology_auditevent SET prev_hash = %s, hash = %s, key_id = '' "
            "WHERE id = %s",
            [prev, digest, event.pk],
        )
        prev = digest
    _rewind_head(3, prev, unkeyed=3)
    result = audit_verify()
    assert not result.ok
    assert "checkpoint" in result.reason and "rewritten" in result.reason


def test_truncation_reports_how_many_events_are_missing(
    alice, django_capture_on_commit_callbacks, capsys
):
    events = _committed(5, django_capture_on_commit_callbacks, alice)
    for event in events[3:]:
        _tamper("DELETE FROM radiology_auditevent WHERE id = %s", [event.pk])
    _rewind_head(3, events[2].hash)
    result = audit_verify()
    assert not result.ok and result.missing == 2 and result.count == 3
    assert result.reason.startswith("2 events missing")
    with pytest.raises(SystemExit):
        call_command("verify_audit")
    assert "2 events missing" in capsys.readouterr().err


def test_restore_from_an_earlier_copy_is_caught(
    alice, django_capture_on_commit_callbacks
):
    events = _committed(4, django_capture_on_commit_callbacks, alice)
    # The copy held two events; the app then went on appending to it.
    for event in events[2:]:
        _tamper("DELETE FROM radiology_auditevent WHERE id = %s", [event.pk])
    _rewind_head(2, events[1].hash)
    later = _committed(3, django_capture_on_commit_callbacks, alice)
    result = audit_verify()
    assert not result.ok and result.broken_event_id == later[0].pk
    assert "restored from an earlier copy" in result.reason


def test_wiped_log_is_caught(alice, django_capture_on_commit_callbacks):
    events = _committed(2, django_capture_on_commit_callbacks, alice)
    for event in events:
        _tamper("DELETE FROM radiology_auditevent WHERE id = %s", [event.pk])
    AuditChainHead.objects.all().delete()
    result = audit_verify()
    assert not result.ok and result.missing == 2
    assert "replaced" in result.reason
    # A fresh chain started on the wiped database is no better.
    _committed(1, django_capture_on_commit_callbacks, alice)
    assert not audit_verify().ok


def test_forged_checkpoint_line_is_reported(
    alice, settings, django_capture_on_commit_callbacks
):
    _committed(2, django_capture_on_commit_callbacks, alice)
    lines = settings.AUDIT_CHECKPOINT_FILE.read_text().splitlines()
    forged = json.loads(lines[0]) | {"count": 5}
    settings.AUDIT_CHECKPOINT_FILE.write_text(
        json.dumps(forged) + "\n" + lines[1] + "\n"
    )
    result = audit_verify()
    assert not result.ok and "line 1 does not match its signature" in result.reason


def test_rotated_key_keeps_old_events_verifiable(
    alice, settings, django_capture_on_commit_callbacks
):
    old = _committed(2, django_capture_on_commit_callbacks, alice)
    new_id = add_key(settings.AUDIT_KEY_FILE)
    new = _committed(2, django_capture_on_commit_callbacks, alice)
    assert {e.key_id for e in old} == {"k1"} and {e.key_id for e in new} == {new_id}
    assert audit_verify().ok
    # Dropping the retired key's line makes what it signed unverifiable: say so.
    text = settings.AUDIT_KEY_FILE.read_text().splitlines()
    settings.AUDIT_KEY_FILE.write_text("\n".join(text[1:]) + "\n")
    result = audit_verify()
    assert not result.ok and "unknown key 'k1'" in result.reason


def test_unkeyed_events_from_before_keys_verify_as_a_prefix(
    alice, django_capture_on_commit_callbacks
):
    legacy = AuditEvent(
        created_at=timezone.now(), actor_name="alice", action="upload", extra_data={}
    )
    legacy.prev_hash = GENESIS_HASH
    legacy.hash = _public_hash(legacy, GENESIS_HASH, {})
    legacy.save()
    AuditChainHead.objects.create(
        pk=1, last_hash=legacy.hash, count=1, chain_id="c" * 32, unkeyed_count=1
    )
    _committed(2, django_capture_on_commit_callbacks, alice)
    result = audit_verify()
    assert result.ok and result.unkeyed == 1 and result.anchored == 3
    assert "the first 1 predate keyed hashing" in result.summary()


def test_production_refuses_to_write_without_a_key(alice, settings, tmp_path):
    settings.DEBUG = False
    settings.AUDIT_KEY_FILE = tmp_path / "absent.key"
    with pytest.raises(AuditKeyError, match="absent.key cannot be read"):
        audit_record(action=AuditEvent.Action.UPLOAD, actor=alice)
    assert not AuditEvent.objects.exists()
    with pytest.raises(SystemCheckError, match="radiology.E004"):
        call_command("check")


def test_debug_makes_a_missing_key_file(alice, settings, tmp_path):
    settings.DEBUG = True
    settings.AUDIT_KEY_FILE = tmp_path / "made" / "audit.key"
    (event,) = _events(1, alice)
    assert event.key_id == "k1"
    assert settings.AUDIT_KEY_FILE.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("k1 zz\n", "not hexadecimal"),
        ("k1 " + "ab" * 8 + "\n", "at least 32 are needed"),
        ("k1\n", "expected '<key id> <hex secret>'"),
        ("# only a comment\n", "holds no key"),
        ("k1 " + "ab" * 32 + "\nk1 " + "cd" * 32 + "\n", "appears twice"),
    ],
)
def test_malformed_key_file_names_file_line_and_reason(tmp_path, text, reason):
    path = tmp_path / "audit.key"
    path.write_text(text)
    with pytest.raises(AuditKeyError, match=reason) as info:
        load_keys(path)
    assert str(path) in str(info.value)


def test_audit_key_command_rotates_and_lists_without_secrets(alice, settings, capsys):
    _events(2, alice)
    call_command("audit_key", "--new")
    assert capsys.readouterr().out.startswith("ok key k2 signs new events")
    _events(1, alice)
    call_command("audit_key")
    out = capsys.readouterr().out
    assert out.splitlines() == ["k1: 2 events", "k2 (current): 1 events"]
    for secret in load_keys(settings.AUDIT_KEY_FILE).secrets.values():
        assert secret.hex() not in out
    with pytest.raises(CommandError, match="cannot be read"):
        call_command("audit_key", "--file", str(settings.AUDIT_KEY_FILE) + ".none")


def test_processes_starting_together_agree_on_one_first_key(settings, tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    from radiology.audit.keys import _create_first_key

    path = tmp_path / "audit.key"
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_create_first_key, [path] * 8))
    assert list(load_keys(path).secrets) == ["k1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.key"]
