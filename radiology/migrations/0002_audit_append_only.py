"""Database triggers that refuse changes to audit rows.

PostgreSQL refuses UPDATE and DELETE (TRUNCATE, which only an owner can run, stays
possible for test teardown). SQLite refuses UPDATE only: Django's ``flush`` empties
SQLite tables with DELETE, and the embedded database is a single-user set-up.
"""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION radiology_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused on event %', TG_OP, OLD.id;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER radiology_auditevent_no_update BEFORE UPDATE OR DELETE
    ON radiology_auditevent FOR EACH ROW EXECUTE FUNCTION radiology_audit_append_only();
"""
PG_REVERSE = """
DROP TRIGGER IF EXISTS radiology_auditevent_no_update ON radiology_auditevent;
DROP FUNCTION IF EXISTS radiology_audit_append_only();
"""
SQLITE_FORWARD = [
    """CREATE TRIGGER radiology_auditevent_no_update BEFORE UPDATE ON radiology_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END;""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS radiology_auditevent_no_update;",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        # params=None: the function body's '%' placeholders are PL/pgSQL's, not ours.
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def reverse(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_REVERSE, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_REVERSE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("radiology", "0001_initial")]

    operations = [migrations.RunPython(forward, reverse)]
