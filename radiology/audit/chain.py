"""Writing events onto the keyed hash chain; verifying it against its checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from ..errors import AuditKeyError
from ..models import AuditChainHead, AuditEvent, AuditQueuedEvent
from .canonical import canonical_json, normalise
from .checkpoints import Checkpoint, QueuedMark, read_checkpoints, schedule_checkpoint
from .keys import AuditKeys, signing_keys
from .queue import ACCESS_ACTIONS, enqueue, event_fields, queued_problem

__all__ = [
    "GENESIS_HASH",
    "AuditVerification",
    "audit_fold_queue",
    "audit_record",
    "audit_verify",
    "canonical_json",
    "normalise",
]

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
#: PostgreSQL's SQLSTATE for ``FOR UPDATE NOWAIT`` finding the row locked.
LOCK_NOT_AVAILABLE = "55P03"
#: Queued events folded per transaction, so a write that folds stays short.
FOLD_BATCH = 500


def event_hash(event: AuditEvent, *, keys: AuditKeys, chain_id: str) -> str:
    """HMAC-SHA256 under the event's key of its content, link and chain id (and the
    nonce it was queued as); with no key id, the plain SHA-256 that events written
    before keyed hashing carry."""
    payload = {
        "prev_hash": event.prev_hash,
        "created_at": event.created_at.isoformat(timespec="microseconds"),
        "actor": event.actor_name,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "study_id": event.study_id,
        "extra_data": event.extra_data,
    }
    if not event.key_id:
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
    payload |= {"chain": chain_id, "key": event.key_id}
    if event.queued_as:
        payload["queued_as"] = event.queued_as
    return keys.sign(event.key_id, canonical_json(payload))


def _locked_head() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        AuditChainHead.objects.get_or_create(
            pk=1,
            defaults={
                "last_hash": GENESIS_HASH,
                "count": 0,
                "chain_id": uuid.uuid4().hex,
            },
        )
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def _head_if_free() -> AuditChainHead | None:
    """The locked head, or None at once when another transaction holds it.

    Only PostgreSQL can tell; SQLite locks the whole database for any write, so
    there the head is simply taken. The chain's first event, which creates the
    head row, waits as before.
    """
    if not connection.features.has_select_for_update_nowait:
        return _locked_head()
    try:
        with transaction.atomic():
            head = (
                AuditChainHead.objects.select_for_update(nowait=True)
                .filter(pk=1)
                .first()
            )
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        return None
    return head if head is not None else _locked_head()


def _append(
    head: AuditChainHead, fields: dict[str, Any], keys: AuditKeys, queued_as: str = ""
) -> AuditEvent:
    event = AuditEvent(
        **fields, prev_hash=head.last_hash, key_id=keys.current, queued_as=queued_as
    )
    event.hash = event_hash(event, keys=keys, chain_id=head.chain_id)
    event.save()
    head.last_hash, head.count = event.hash, head.count + 1
    return event


def _move_head(head: AuditChainHead) -> None:
    AuditChainHead.objects.filter(pk=1).update(
        last_hash=head.last_hash, count=head.count
    )
    schedule_checkpoint(
        chain=head.chain_id,
        count=head.count,
        head=head.last_hash,
        unkeyed=head.unkeyed_count,
    )


def _fold(head: AuditChainHead, keys: AuditKeys) -> int:
    """Append queued events to the locked head in id order; delete what was folded.

    A queued event whose signature fails, or whose nonce is already in the chain,
    is left in the queue, where ``verify_audit`` reports it.
    """
    rows = list(AuditQueuedEvent.objects.order_by("id")[:FOLD_BATCH])
    if not rows:
        return 0
    already = set(
        AuditEvent.objects.filter(queued_as__in=[r.nonce for r in rows]).values_list(
            "queued_as", flat=True
        )
    )
    folded = []
    for row in rows:
        problem = (
            "is already in the chain"
            if row.nonce in already
            else queued_problem(row, keys=keys, chain_id=head.chain_id)
        )
        if problem:
            logger.error(
                "audit: queued event %s %s; left in the queue for verify_audit",
                row.pk,
                problem,
            )
            continue
        _append(head, event_fields(row), keys, queued_as=row.nonce)
        folded.append(row.pk)
    AuditQueuedEvent.objects.filter(pk__in=folded).delete()
    return len(folded)


def audit_fold_queue(*, wait: bool = True) -> int:
    """Fold queued access events into the chain, oldest first, and checkpoint it.

    Args:
        wait: block until the chain head is free (the beat task, default); False:
            give up at once if a write holds it, leaving the queue to that write's
            next event or the beat task (the fold after a queued read commits).

    Returns:
        How many events were folded.
    """
    keys = signing_keys()
    total = 0
    while True:
        with transaction.atomic():
            head = _locked_head() if wait else _head_if_free()
            if head is None:
                return total
            folded = _fold(head, keys)
            if folded:
                _move_head(head)
        total += folded
        if folded < FOLD_BATCH:
            return total


def _fold_after_commit() -> None:
    audit_fold_queue(wait=False)


def audit_record(
    *,
    action: str,
    actor=None,
    target=None,
    target_type: str = "",
    target_id: str = "",
    study=None,
    extra_data: dict[str, Any] | None = None,
) -> AuditEvent | AuditQueuedEvent:
    """Append one event to the chain, inside the caller's transaction.

    The event's hash is keyed with the current audit key; once the transaction
    commits, a signed checkpoint of the new head is appended outside the database.
    Queued access events go first, so the chain keeps their order.

    An access event (``queue.ACCESS_ACTIONS``: a read, a refusal, a token's use)
    that finds the head locked by another transaction does not wait for it: it is
    queued, signed, in the caller's transaction, and folded into the chain later
    (after this commit if the head is free by then, else by the head's next holder
    or the ``fold_audit_queue`` beat task). Other events wait for the head.

    Args:
        action: an ``AuditEvent.Action`` value.
        actor: the user who acted, or None for the system (a worker, a sweep).
        target: a model instance; its class name and pk fill target_type/target_id.
        study: the study the event concerns, so the log can be filtered by access.
        extra_data: JSON-safe details of the event.

    Returns:
        The new ``AuditEvent``, or the ``AuditQueuedEvent`` an access event became.

    Raises:
        AuditKeyError: the audit key file is missing or malformed; nothing is written.
    """
    if target is not None:
        target_type = target_type or type(target).__name__.lower()
        target_id = target_id or str(target.pk)
    actor_user = actor if actor is not None and actor.is_authenticated else None
    fields = {
        "created_at": timezone.now(),
        "actor": actor_user,
        "actor_name": actor_user.get_username() if actor_user else "system",
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "study_id": study.pk if study is not None else None,
        "extra_data": normalise(extra_data),
    }
    keys = signing_keys()
    with transaction.atomic():
        head = _head_if_free() if action in ACCESS_ACTIONS else _locked_head()
        if head is None:
            chain_id = AuditChainHead.objects.values_list("chain_id", flat=True).get(
                pk=1
            )
            queued = enqueue(fields=fields, chain_id=chain_id, keys=keys)
            transaction.on_commit(_fold_after_commit, robust=True)
            return queued
        _fold(head, keys)
        event = _append(head, fields, keys)
        _move_head(head)
    return event


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of :func:`audit_verify`.

    ``missing`` counts events a checkpoint saw that the database no longer has;
    ``anchored`` is how many events the newest matching checkpoint covers, written
    at ``anchored_at``; ``queued`` how many access events wait to be folded.
    """

    ok: bool
    count: int
    broken_event_id: int | None = None
    reason: str = ""
    missing: int = 0
    anchored: int = 0
    anchored_at: str = ""
    unkeyed: int = 0
    queued: int = 0

    def summary(self) -> str:
        """One line for people: ``ok 12 events, ...`` or what broke."""
        if not self.ok:
            where = f"event {self.broken_event_id}" if self.broken_event_id else "chain"
            return f"broken at {where}: {self.reason}"
        parts = [f"ok {self.count} events"]
        if self.anchored:
            parts.append(f"checkpoint of {self.anchored_at} covers {self.anchored}")
        elif self.count:
            parts.append("no checkpoint yet")
        if self.unkeyed:
            parts.append(f"the first {self.unkeyed} predate keyed hashing")
        if self.queued:
            parts.append(f"{self.queued} queued access events to fold")
        return ", ".join(parts)


def _fail(count: int, reason: str, **extra: Any) -> AuditVerification:
    return AuditVerification(False, count, reason=reason, **extra)


def audit_verify() -> AuditVerification:
    """Recompute the chain from the first event, then hold it against the checkpoints.

    Fails at the first event whose link or keyed hash does not match, at an event
    whose hash differs from a checkpoint of that position (rewritten or restored from
    an earlier copy), and when a checkpoint saw more events than the database holds
    (truncated), naming how many are missing. Queued access events must hold their
    signatures, and each nonce the checkpoint log saw queued must be in the queue or
    folded into the chain, once.

    On PostgreSQL, called outside a transaction, it reads one snapshot, so events
    appended or folded meanwhile do not look like tampering.
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return _verify()


def _verify() -> AuditVerification:
    try:
        keys = signing_keys()
    except AuditKeyError as exc:
        return _fail(0, str(exc))
    # The log first: its lines are appended after their transactions commit, so the
    # snapshot taken by the first query below holds everything the log has seen.
    log = read_checkpoints(Path(settings.AUDIT_CHECKPOINT_FILE), keys)
    head = AuditChainHead.objects.filter(pk=1).first()
    chain_id = head.chain_id if head is not None else ""
    if log.problems:
        return _fail(0, "; ".join(log.problems[:3]))
    others = [cps[-1] for chain, cps in log.by_chain.items() if chain != chain_id]
    if others:
        last = max(others, key=lambda cp: cp.count)
        return _fail(
            0,
            f"the checkpoint log anchors another chain than this database's "
            f"({last.count} events, last at {last.at}): the database was replaced "
            "or its chain started again",
            missing=last.count,
        )
    mine: dict[int, list[Checkpoint]] = {}
    for checkpoint in log.by_chain.get(chain_id, []):
        mine.setdefault(checkpoint.count, []).append(checkpoint)
    prev = GENESIS_HASH
    count = unkeyed = 0
    folded: dict[str, int] = {}
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.queued_as in folded:
            return AuditVerification(
                False,
                count,
                event.pk,
                f"queued event {event.queued_as} is folded twice, first as event "
                f"{folded[event.queued_as]}",
            )
        if event.queued_as:
            folded[event.queued_as] = event.pk
        if event.prev_hash != prev:
            return AuditVerification(
                False, count, event.pk, "prev_hash does not match the previous event"
            )
        if not event.key_id and count > unkeyed:
            return AuditVerification(
                False, count, event.pk, "an unkeyed event after keyed ones"
            )
        try:
            expected = event_hash(event, keys=keys, chain_id=chain_id)
        except AuditKeyError as exc:
            return AuditVerification(False, count, event.pk, str(exc))
        if expected != event.hash:
            return AuditVerification(
                False, count, event.pk, "content does not match its hash"
            )
        prev = event.hash
        count += 1
        unkeyed += not event.key_id
        for checkpoint in mine.get(count, ()):
            if checkpoint.head == prev:
                continue
            return AuditVerification(
                False,
                count - 1,
                event.pk,
                f"differs from the checkpoint of {checkpoint.at} for event "
                f"{count}: the log was rewritten or restored from an earlier copy",
            )
    result = _against_checkpoints(head, mine, count, prev, unkeyed)
    if not result.ok:
        return result
    return _against_queue(
        result,
        keys=keys,
        chain_id=chain_id,
        folded=folded,
        marks=log.queued.get(chain_id, {}),
    )


def _against_queue(
    result: AuditVerification,
    *,
    keys: AuditKeys,
    chain_id: str,
    folded: dict[str, int],
    marks: dict[str, QueuedMark],
) -> AuditVerification:
    waiting = set()
    for row in AuditQueuedEvent.objects.order_by("id").iterator(chunk_size=2000):
        problem = queued_problem(row, keys=keys, chain_id=chain_id)
        if not problem and row.nonce in folded:
            problem = f"is already in the chain as event {folded[row.nonce]}"
        if problem:
            return _fail(result.count, f"queued event {row.pk} {problem}")
        waiting.add(row.nonce)
    gone = [
        mark
        for nonce, mark in marks.items()
        if nonce not in folded and nonce not in waiting
    ]
    if gone:
        first = min(gone, key=lambda mark: mark.line)
        return _fail(
            result.count,
            f"{len(gone)} queued access events are neither queued nor in the chain "
            f"(the first, {first.nonce}, queued at {first.at}): they were deleted",
            missing=len(gone),
        )
    return dataclasses.replace(result, queued=len(waiting))


def _against_checkpoints(
    head: AuditChainHead | None,
    mine: dict[int, list[Checkpoint]],
    count: int,
    last_hash: str,
    unkeyed: int,
) -> AuditVerification:
    newest = mine[max(mine)][-1] if mine else None
    if newest is not None and newest.count > count:
        missing = newest.count - count
        return _fail(
            count,
            f"{missing} events missing: the checkpoint of {newest.at} recorded "
            f"{newest.count}, the database holds {count}; the log was truncated "
            "or restored from an earlier copy",
            missing=missing,
        )
    if newest is not None and unkeyed > newest.unkeyed:
        return _fail(
            count,
            f"{unkeyed} events are unkeyed, the checkpoint of {newest.at} allows "
            f"{newest.unkeyed}: the chain was rewritten without its key",
        )
    if head is None and count:
        return _fail(count, "the chain head row is missing: events may be removed")
    if head is not None and (head.count != count or head.last_hash != last_hash):
        return _fail(
            count,
            f"chain head records {head.count} events ending {head.last_hash[:12]}, "
            f"found {count} ending {last_hash[:12]}: events were removed",
        )
    return AuditVerification(
        True,
        count,
        anchored=newest.count if newest else 0,
        anchored_at=newest.at if newest else "",
        unkeyed=unkeyed,
    )
