"""The audit chain's anchor outside the database: an append-only log of signed heads.

After every transaction that appends events, one line records the chain's id, its
event count and head hash, signed with the audit key. Whoever can write the database
but not this file (nor read the key) cannot truncate the chain, roll it back to an
earlier copy or start it again without ``verify_audit`` saying how many events went.
After every transaction that queues an access event instead (queue.py), one line
records its nonce, so deleting it from the queue before it is folded shows too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..errors import AuditKeyError
from .keys import AuditKeys, signing_keys

__all__ = [
    "Checkpoint",
    "CheckpointLog",
    "QueuedMark",
    "read_checkpoints",
    "schedule_checkpoint",
    "schedule_queued_mark",
]

logger = logging.getLogger(__name__)


def _canonical(value: dict) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Checkpoint:
    """One signed line: ``count`` events of chain ``chain``, the last hashing ``head``.

    ``unkeyed`` is how many events at the chain's start predate keyed hashing.
    """

    chain: str
    count: int
    head: str
    unkeyed: int
    at: str
    line: int = 0

    def payload(self) -> dict:
        return {
            "chain": self.chain,
            "count": self.count,
            "head": self.head,
            "unkeyed": self.unkeyed,
            "at": self.at,
        }


@dataclass(frozen=True)
class QueuedMark:
    """One signed line: access event ``nonce`` was queued on chain ``chain``."""

    chain: str
    nonce: str
    at: str
    line: int = 0

    def payload(self) -> dict:
        return {"chain": self.chain, "queued": self.nonce, "at": self.at}


@dataclass
class CheckpointLog:
    """What the log says: each chain's checkpoints and queued nonces, and any line
    that fails."""

    by_chain: dict[str, list[Checkpoint]] = field(default_factory=dict)
    queued: dict[str, dict[str, QueuedMark]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _line(record: Checkpoint | QueuedMark, keys: AuditKeys) -> str:
    payload = record.payload()
    mac = keys.sign(keys.current, _canonical(payload))
    return _canonical({**payload, "key": keys.current, "mac": mac}) + "\n"


def append_checkpoint(
    checkpoint: Checkpoint | QueuedMark, path: Path, keys: AuditKeys
) -> None:
    """Append one line in a single ``O_APPEND`` write, whole even across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, _line(checkpoint, keys).encode())
    finally:
        os.close(fd)


def read_checkpoints(path: Path, keys: AuditKeys) -> CheckpointLog:
    """Parse and check every line; a missing file is an empty log."""
    log = CheckpointLog()
    try:
        handle = path.open()
    except FileNotFoundError:
        return log
    with handle:
        for number, raw in enumerate(handle, start=1):
            where = f"checkpoint log {path}, line {number}"
            try:
                record = json.loads(raw)
                names = (
                    ("chain", "queued", "at")
                    if "queued" in record
                    else ("chain", "count", "head", "unkeyed", "at")
                )
                payload = {name: record[name] for name in names}
                key_id, mac = record["key"], record["mac"]
            except (ValueError, KeyError, TypeError):
                log.problems.append(f"{where} is not a checkpoint record")
                continue
            try:
                expected = keys.sign(key_id, _canonical(payload))
            except AuditKeyError:
                log.problems.append(f"{where} is signed by unknown key {key_id!r}")
                continue
            if expected != mac:
                log.problems.append(f"{where} does not match its signature")
                continue
            if "queued" in payload:
                mark = QueuedMark(
                    payload["chain"], payload["queued"], payload["at"], number
                )
                log.queued.setdefault(mark.chain, {})[mark.nonce] = mark
                continue
            log.by_chain.setdefault(payload["chain"], []).append(
                Checkpoint(**payload, line=number)
            )
    return log


@dataclass
class _Pending:
    checkpoint: Checkpoint
    superseded: bool = False
    done: bool = False


_local = threading.local()


def schedule_checkpoint(*, chain: str, count: int, head: str, unkeyed: int) -> None:
    """Write a checkpoint of this head once the current transaction commits.

    Only the last event of a transaction is written: each new one supersedes the one
    before. If a savepoint holding the last one rolls back, that transaction writes
    none, and the next commit's checkpoint covers it; a checkpoint is never written
    for a head that did not commit.
    """
    previous = getattr(_local, "pending", None)
    if previous is not None and not previous.done:
        previous.superseded = True
    pending = _Pending(
        Checkpoint(
            chain=chain,
            count=count,
            head=head,
            unkeyed=unkeyed,
            at=timezone.now().isoformat(timespec="microseconds"),
        )
    )
    _local.pending = pending
    transaction.on_commit(lambda: _write(pending))


def _write(pending: _Pending) -> None:
    pending.done = True
    if not pending.superseded:
        _append_or_log(pending.checkpoint)


def schedule_queued_mark(*, chain: str, nonce: str) -> None:
    """Record, once the current transaction commits, that ``nonce`` was queued."""
    mark = QueuedMark(
        chain=chain, nonce=nonce, at=timezone.now().isoformat(timespec="microseconds")
    )
    transaction.on_commit(lambda: _append_or_log(mark))


def _append_or_log(record: Checkpoint | QueuedMark) -> None:
    path = Path(settings.AUDIT_CHECKPOINT_FILE)
    try:
        append_checkpoint(record, path, signing_keys())
    except (OSError, AuditKeyError):
        # The events are committed; a missed line only leaves them unanchored
        # until the next one, so say so loudly rather than fail the request.
        logger.exception("audit: checkpoint not written to %s", path)
