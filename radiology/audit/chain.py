"""Writing events onto the keyed hash chain; verifying it against its checkpoints."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..errors import AuditKeyError
from ..models import AuditChainHead, AuditEvent
from .checkpoints import Checkpoint, read_checkpoints, schedule_checkpoint
from .keys import AuditKeys, signing_keys

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def normalise(extra: dict[str, Any] | None) -> dict[str, Any]:
    """What the JSON column gives back: the hash is computed on the stored value."""
    return json.loads(canonical_json(extra or {}))


def event_hash(event: AuditEvent, *, keys: AuditKeys, chain_id: str) -> str:
    """HMAC-SHA256 under the event's key of its content, link and chain id; with no
    key id, the plain SHA-256 that events written before keyed hashing carry."""
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


def audit_record(
    *,
    action: str,
    actor=None,
    target=None,
    target_type: str = "",
    target_id: str = "",
    study=None,
    extra_data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction.

    The event's hash is keyed with the current audit key; once the transaction
    commits, a signed checkpoint of the new head is appended outside the database.

    Args:
        action: an ``AuditEvent.Action`` value.
        actor: the user who acted, or None for the system (a worker, a sweep).
        target: a model instance; its class name and pk fill target_type/target_id.
        study: the study the event concerns, so the log can be filtered by access.
        extra_data: JSON-safe details of the event.

    Raises:
        AuditKeyError: the audit key file is missing or malformed; nothing is written.
    """
    if target is not None:
        target_type = target_type or type(target).__name__.lower()
        target_id = target_id or str(target.pk)
    actor_user = actor if actor is not None and actor.is_authenticated else None
    actor_name = actor_user.get_username() if actor_user else "system"
    extra = normalise(extra_data)
    keys = signing_keys()
    with transaction.atomic():
        head = _locked_head()
        event = AuditEvent(
            created_at=timezone.now(),
            actor=actor_user,
            actor_name=actor_name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            study_id=study.pk if study is not None else None,
            extra_data=extra,
            prev_hash=head.last_hash,
            key_id=keys.current,
        )
        digest = event.hash = event_hash(event, keys=keys, chain_id=head.chain_id)
        event.save()
        AuditChainHead.objects.filter(pk=1).update(
            last_hash=digest, count=head.count + 1
        )
        schedule_checkpoint(
            chain=head.chain_id,
            count=head.count + 1,
            head=digest,
            unkeyed=head.unkeyed_count,
        )
    return event


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of :func:`audit_verify`.

    ``missing`` counts events a checkpoint saw that the database no longer has;
    ``anchored`` is how many events the newest matching checkpoint covers, written
    at ``anchored_at``.
    """

    ok: bool
    count: int
    broken_event_id: int | None = None
    reason: str = ""
    missing: int = 0
    anchored: int = 0
    anchored_at: str = ""
    unkeyed: int = 0

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
        return ", ".join(parts)


def _fail(count: int, reason: str, **extra: Any) -> AuditVerification:
    return AuditVerification(False, count, reason=reason, **extra)


def audit_verify() -> AuditVerification:
    """Recompute the chain from the first event, then hold it against the checkpoints.

    Fails at the first event whose link or keyed hash does not match, at an event
    whose hash differs from a checkpoint of that position (rewritten or restored from
    an earlier copy), and when a checkpoint saw more events than the database holds
    (truncated), naming how many are missing.
    """
    try:
        keys = signing_keys()
    except AuditKeyError as exc:
        return _fail(0, str(exc))
    head = AuditChainHead.objects.filter(pk=1).first()
    chain_id = head.chain_id if head is not None else ""
    log = read_checkpoints(Path(settings.AUDIT_CHECKPOINT_FILE), keys)
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
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
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
    return _against_checkpoints(head, mine, count, prev, unkeyed)


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
