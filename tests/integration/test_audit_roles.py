"""The app's PostgreSQL role cannot rewrite the audit log; an owner's edit is caught."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from radiology.audit import audit_record, audit_verify
from radiology.models import AuditEvent

from .conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "app-role-pass-" + uuid.uuid4().hex[:8]

APP_WORK = """
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings")
django.setup()
from radiology.audit import audit_record, audit_verify
for i in range(3):
    audit_record(action="upload", target_type="app-role", target_id=str(i))
result = audit_verify()
print("ok" if result.ok else f"broken {result}", result.count)
"""


@pytest.fixture
def app_role(monkeypatch):
    """A hardened role made by the command; dropped again afterwards."""
    role = f"radiology_app_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    out = io.StringIO()
    call_command("harden_db", "--role", role, "--password-stdin", stdout=out)
    assert out.getvalue().startswith(f"ok role {role}")
    try:
        yield role
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP OWNED BY "{role}"')
            cursor.execute(f'DROP ROLE "{role}"')


def _connect(role: str) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        dbname=db["NAME"],
        user=role,
        password=PASSWORD,
        autocommit=True,
    )


def _role_url(role: str) -> str:
    db = connection.settings_dict
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    return f"postgres://{role}:{PASSWORD}@{host}:{port}/{db['NAME']}"


def test_app_role_can_read_and_append_but_not_rewrite(alice, app_role):
    event = audit_record(action="upload", actor=alice, target_type="t", target_id="1")
    with _connect(app_role) as conn:
        count = conn.execute("SELECT count(*) FROM radiology_auditevent").fetchone()[0]
        assert count >= 1
        for statement in (
            f"UPDATE radiology_auditevent SET action = 'x' WHERE id = {event.pk}",
            f"DELETE FROM radiology_auditevent WHERE id = {event.pk}",
            "TRUNCATE radiology_auditevent",
            "ALTER TABLE radiology_auditevent DISABLE TRIGGER ALL",
            "DROP TRIGGER radiology_auditevent_no_update ON radiology_auditevent",
        ):
            with pytest.raises(psycopg.Error) as info:
                conn.execute(statement)
            # Refused by privileges, before the append-only trigger is even asked.
            assert info.value.sqlstate == "42501", (statement, info.value)
    assert AuditEvent.objects.filter(pk=event.pk, action="upload").exists()
    assert audit_verify().ok


def test_app_role_can_queue_and_fold_but_not_edit_queued_events(app_role):
    with _connect(app_role) as conn:
        conn.execute("SELECT count(*) FROM radiology_auditqueuedevent")
        conn.execute("DELETE FROM radiology_auditqueuedevent WHERE id = -1")
        for statement in (
            "UPDATE radiology_auditqueuedevent SET action = 'x'",
            "TRUNCATE radiology_auditqueuedevent",
        ):
            with pytest.raises(psycopg.Error) as info:
                conn.execute(statement)
            assert info.value.sqlstate == "42501", (statement, info.value)


def test_app_role_runs_the_app_and_extends_the_chain(alice, app_role, tmp_path):
    audit_record(action="upload", actor=alice, target_type="t", target_id="1")
    script = tmp_path / "app_work.py"
    script.write_text(APP_WORK)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env={**_clean_env(), "DATABASE_URL": _role_url(app_role), "DEBUG": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok", "4"]


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def test_superuser_edit_is_caught_by_verify_audit_at_that_row(alice, capsys):
    events = [
        audit_record(action="upload", actor=alice, target_type="t", target_id=str(i))
        for i in range(5)
    ]
    tampered = events[2]
    with connection.cursor() as cursor:
        # A superuser can switch the trigger off; only the hash chain is left to tell.
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(
                "UPDATE radiology_auditevent SET extra_data = %s WHERE id = %s",
                ['{"rewritten": true}', tampered.pk],
            )
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")
    with pytest.raises(SystemExit) as info:
        call_command("verify_audit")
    assert info.value.code == 1
    assert f"broken at event {tampered.pk}" in capsys.readouterr().err


def test_harden_db_refuses_the_owner_role():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (owner,) = cursor.fetchone()
    with pytest.raises(CommandError, match="the role running this command"):
        call_command("harden_db", "--role", owner)
