"""Append-only, hash-chained audit log: writing events and verifying the chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from .models import AuditChainHead, AuditEvent

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def normalise(extra: dict[str, Any] | None) -> dict[str, Any]:
    """What the JSON column gives back: the hash is computed on the stored value."""
    return json.loads(canonical_json(extra or {}))


def event_hash(
    *,
    prev_hash: str,
    created_at,
    actor_name: str,
    action: str,
    target_type: str,
    target_id: str,
    study_id: int | None,
    extra_data: dict[str, Any],
) -> str:
    payload = {
        "prev_hash": prev_hash,
        "created_at": created_at.isoformat(timespec="microseconds"),
        "actor": actor_name,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "study_id": study_id,
        "extra_data": extra_data,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


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

    Args:
        action: an ``AuditEvent.Action`` value.
        actor: the user who acted, or None for the system (a worker, a sweep).
        target: a model instance; its class name and pk fill target_type/target_id.
        study: the study the event concerns, so the log can be filtered by access.
        extra_data: JSON-safe details of the event.
    """
    if target is not None:
        target_type = target_type or type(target).__name__.lower()
        target_id = target_id or str(target.pk)
    actor_user = actor if actor is not None and actor.is_authenticated else None
    actor_name = actor_user.get_username() if actor_user else "system"
    extra = normalise(extra_data)
    with transaction.atomic():
        head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
        if head is None:
            head, _ = AuditChainHead.objects.get_or_create(
                pk=1, defaults={"last_hash": GENESIS_HASH, "count": 0}
            )
            head = AuditChainHead.objects.select_for_update().get(pk=1)
        created_at = timezone.now()
        study_id = study.pk if study is not None else None
        digest = event_hash(
            prev_hash=head.last_hash,
            created_at=created_at,
            actor_name=actor_name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            study_id=study_id,
            extra_data=extra,
        )
        event = AuditEvent.objects.create(
            created_at=created_at,
            actor=actor_user,
            actor_name=actor_name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            study_id=study_id,
            extra_data=extra,
            prev_hash=head.last_hash,
            hash=digest,
        )
        AuditChainHead.objects.filter(pk=1).update(
            last_hash=digest, count=head.count + 1
        )
    return event


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    count: int
    broken_event_id: int | None = None
    reason: str = ""


def audit_verify() -> AuditVerification:
    """Recompute the chain from the first event; stop at the first that fails."""
    prev = GENESIS_HASH
    count = 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != prev:
            return AuditVerification(
                False, count, event.pk, "prev_hash does not match the previous event"
            )
        expected = event_hash(
            prev_hash=event.prev_hash,
            created_at=event.created_at,
            actor_name=event.actor_name,
            action=event.action,
            target_type=event.target_type,
            target_id=event.target_id,
            study_id=event.study_id,
            extra_data=event.extra_data,
        )
        if expected != event.hash:
            return AuditVerification(
                False, count, event.pk, "content does not match its hash"
            )
        prev = event.hash
        count += 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None and count:
        return AuditVerification(
            False, count, None, "the chain head row is missing: events may be removed"
        )
    if head is not None and (head.count != count or head.last_hash != prev):
        return AuditVerification(
            False,
            count,
            None,
            f"chain head records {head.count} events ending {head.last_hash[:12]}, "
            f"found {count} ending {prev[:12]}: events were removed",
        )
    return AuditVerification(True, count)
