"""``manage.py harden_db --role NAME``: a PostgreSQL role for the app that cannot
rewrite history: SELECT and INSERT on the audit log, never UPDATE, DELETE or TRUNCATE;
on the queue of signed access events, SELECT, INSERT and DELETE (the fold), never
UPDATE or TRUNCATE.

Run it as the database owner (the role that runs ``migrate``), then point the web
server and workers at the new role (``DATABASE_URL=postgres://NAME:...``). The
owner keeps its rights for migrations; the app role never owns a table, so it
cannot drop the append-only trigger either.
"""

from __future__ import annotations

import re
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from psycopg import sql

from radiology.models import AuditEvent, AuditQueuedEvent

_ROLE_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Command(BaseCommand):
    help = (
        "Create or update a PostgreSQL login role for the app: full use of the app's "
        "tables, but only SELECT and INSERT on the audit log."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--role", required=True, help="role name, e.g. radiology_app"
        )
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the role's password from the first line of standard input",
        )

    def handle(self, *args, role: str, password_stdin: bool, **options):
        if connection.vendor != "postgresql":
            raise CommandError(
                f"harden_db: needs PostgreSQL (DATABASE_URL), this database is "
                f"{connection.vendor}"
            )
        if not _ROLE_RE.fullmatch(role):
            raise CommandError(
                "harden_db: role must be lower-case letters, digits and _, "
                f"got {role!r}"
            )
        password = sys.stdin.readline().rstrip("\n") if password_stdin else None
        if password_stdin and not password:
            raise CommandError("harden_db: --password-stdin read an empty password")
        audit_table = AuditEvent._meta.db_table
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_database()")
            owner, database = cursor.fetchone()
            if role == owner:
                raise CommandError(
                    f"harden_db: {role!r} is the role running this command (the owner "
                    "of the tables); choose another name for the app role"
                )
            cursor.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tableowner = %s",
                [role],
            )
            owned = [row[0] for row in cursor.fetchall()]
            if owned:
                raise CommandError(
                    f"harden_db: {role!r} owns {', '.join(owned)}; an owner can drop "
                    "the audit trigger: run migrations as another role, reassign them"
                )
            for statement in _statements(role, password, database, audit_table):
                cursor.execute(statement)
            for statement in _queue_statements(role):
                cursor.execute(statement)
            cursor.execute(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = %s AND table_name = %s ORDER BY privilege_type",
                [role, audit_table],
            )
            audit_grants = [row[0] for row in cursor.fetchall()]
        if sorted(audit_grants) != ["INSERT", "SELECT"]:
            raise CommandError(
                f"harden_db: {role!r} ends with {audit_grants} on {audit_table}, "
                "expected INSERT and SELECT only"
            )
        self.stdout.write(
            f"ok role {role}: {audit_table} {' '.join(audit_grants)}; other tables "
            "SELECT INSERT UPDATE DELETE"
        )


def _queue_statements(role: str):
    """Queued access events are folded (deleted) into the chain, never edited."""
    table = sql.Identifier(AuditQueuedEvent._meta.db_table)
    yield sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(table, sql.Identifier(role))
    yield sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC").format(table)
    yield sql.SQL("GRANT SELECT, INSERT, DELETE ON TABLE {} TO {}").format(
        table, sql.Identifier(role)
    )


def _statements(role: str, password: str | None, database: str, audit_table: str):
    name = sql.Identifier(role)
    yield sql.SQL(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN "
        "CREATE ROLE {} LOGIN; END IF; END $$"
    ).format(sql.Literal(role), name)
    yield sql.SQL(
        "ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        "NOBYPASSRLS NOINHERIT"
    ).format(name)
    if password is not None:
        yield sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, sql.Literal(password))
    yield sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
        sql.Identifier(database), name
    )
    yield sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name)
    yield sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(name)
    yield sql.SQL(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
    ).format(name)
    yield sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(
        name
    )
    # Tables a later migration creates get the same rights; the audit table does not
    # come back, so its narrower grant below stays the last word.
    yield sql.SQL(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, "
        "DELETE ON TABLES TO {}"
    ).format(name)
    yield sql.SQL(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT "
        "ON SEQUENCES TO {}"
    ).format(name)
    yield sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
        sql.Identifier(audit_table), name
    )
    yield sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC").format(
        sql.Identifier(audit_table)
    )
    yield sql.SQL("GRANT SELECT, INSERT ON TABLE {} TO {}").format(
        sql.Identifier(audit_table), name
    )
