"""Audited-read latency while a write holds the audit chain head (issue 18 item 10).

A writer thread appends an ``upload`` event and keeps its transaction open for
``--hold-s``, as a slow upload does; meanwhile the main thread reads the audit log
through ``selectors.audit_events_for``, which records an ``audit.read`` event.
"before" routes that read the way every event went before reads could queue (wait
for the head: ``ACCESS_ACTIONS`` emptied for the run); "after" is the code as it is.
Each queued read is then folded and the chain verified.

Needs PostgreSQL (SQLite has no row locks): it makes a throwaway database on
``--database-url`` (default ``$DATABASE_URL``), migrates it and drops it afterwards.
``--write`` also saves ``bench/results/audit.json`` and ``audit.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

RESULTS = Path(__file__).parent / "results"


def _setup(url: str, root: Path):
    os.environ.update(
        {
            "DEBUG": "1",
            "VAR_DIR": str(root / "var"),
            "MEDIA_ROOT": str(root / "media"),
            "DATABASE_URL": url,
            "AUDIT_KEY_FILE": str(root / "audit.key"),
            "AUDIT_CHECKPOINT_FILE": str(root / "checkpoints.log"),
            "DJANGO_SETTINGS_MODULE": "radiology.settings",
        }
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return get_user_model().objects.create_user(
        "auditor", password="auditor-pass-123", is_staff=True
    )


def _hold_head(hold_s: float, locked: threading.Event) -> None:
    from django.db import connection, transaction

    from radiology.audit import audit_record

    try:
        with transaction.atomic():
            audit_record(action="upload", target_type="upload", target_id="held")
            locked.set()
            time.sleep(hold_s)
    finally:
        connection.close()


def _read_s(user) -> float:
    from radiology import selectors

    start = time.perf_counter()
    selectors.audit_events_for(user, limit=20)
    return time.perf_counter() - start


def _trial(user, hold_s: float) -> tuple[float, float]:
    """One read during a held write: its latency, then how long the fold took."""
    from radiology.audit import audit_fold_queue

    locked = threading.Event()
    writer = threading.Thread(target=_hold_head, args=(hold_s, locked))
    writer.start()
    locked.wait(30)
    read_s = _read_s(user)
    writer.join()
    start = time.perf_counter()
    audit_fold_queue()
    return read_s, time.perf_counter() - start


def _stats(samples: list[float]) -> dict:
    return {
        "median_s": round(statistics.median(samples), 4),
        "max_s": round(max(samples), 4),
        "samples_s": [round(s, 4) for s in samples],
    }


def _measure(user, *, hold_s: float, trials: int) -> dict:
    from radiology.audit import audit_verify, chain

    access_actions = chain.ACCESS_ACTIONS
    report: dict = {}
    for mode in ("before", "after"):
        chain.ACCESS_ACTIONS = frozenset() if mode == "before" else access_actions
        try:
            idle = [_read_s(user) for _ in range(trials)]
            during, folds = zip(
                *(_trial(user, hold_s) for _ in range(trials)), strict=True
            )
        finally:
            chain.ACCESS_ACTIONS = access_actions
        report[mode] = {
            "read_during_write": _stats(list(during)),
            "read_idle": _stats(idle),
            "fold_after_write_s": round(statistics.median(folds), 4),
        }
    result = audit_verify()
    report["chain"] = {"ok": result.ok, "summary": result.summary()}
    return report


def _markdown(result: dict) -> str:
    rows = [
        f"| {mode} | {r['read_during_write']['median_s']} | "
        f"{r['read_during_write']['max_s']} | {r['read_idle']['median_s']} | "
        f"{r['fold_after_write_s']} |"
        for mode, r in ((m, result[m]) for m in ("before", "after"))
    ]
    return "\n".join(
        [
            "# Audited reads during a write (issue 18 item 10)",
            "",
            f"`python -m bench audit --write` on {result['database']}, "
            f"{result['trials']} trials; a write holds the audit chain head for "
            f"{result['hold_s']} s while the audit log is read (which records an "
            "`audit.read` event). Before: the read waits for the head, as every "
            "event did; after: it queues a signed event and returns, and the fold "
            "appends it once the write commits.",
            "",
            "| reads | during the write: median (s) | max (s) | "
            "head free: median (s) | fold after the write (s) |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Chain after the run: {result['chain']['summary']}.",
            "",
        ]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench audit", description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", ""),
        help="a PostgreSQL server to make the throwaway database on",
    )
    parser.add_argument("--hold-s", type=float, default=2.0)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="save to bench/results")
    args = parser.parse_args(argv)
    server = urlparse(args.database_url)
    if server.scheme not in {"postgres", "postgresql"}:
        parser.error("needs --database-url postgres://... (SQLite has no row locks)")

    import psycopg

    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(args.database_url, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            user = _setup(urlunparse(server._replace(path=f"/{name}")), Path(tmp))
            from django.db import connection, connections

            version = connection.cursor().connection.info.server_version
            report = _measure(user, hold_s=args.hold_s, trials=args.trials)
            connections.close_all()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    result = {
        "benchmark": "audit",
        "database": f"PostgreSQL {version // 10000}.{version % 10000}",
        "hold_s": args.hold_s,
        "trials": args.trials,
        **report,
    }
    print(json.dumps(result, indent=2))
    if args.write:
        (RESULTS / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "audit.md").write_text(_markdown(result))
    return 0 if report["chain"]["ok"] else 1
