"""Access events that found the chain head locked: signed rows waiting to be folded.

A read (an audit-log query, a denied access, a token's use, a lockout) must not wait
for a write's transaction to release the chain head. It is written here instead, in
the caller's transaction, HMAC-signed under the audit key with a random nonce, and
whoever next holds the head folds the committed queue into the chain in id order
(chain.py). Ids are taken at insert, not at commit, so a row committed late joins
after a higher id folded before it: chain order is fold order, and each event keeps
its own ``created_at``.
The folded event carries the nonce inside its keyed hash and the checkpoint log
records every queued nonce, so a queued event cannot be forged, edited, dropped or
folded twice without ``verify_audit`` saying so.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any

from ..errors import AuditKeyError
from ..models import AuditEvent, AuditQueuedEvent, AuditRecord
from .canonical import canonical_json
from .checkpoints import schedule_queued_mark
from .keys import AuditKeys

__all__ = ["ACCESS_ACTIONS", "enqueue", "event_fields", "queued_problem"]

#: Events of someone reading or being turned away: they queue rather than wait.
ACCESS_ACTIONS = frozenset(
    {
        AuditEvent.Action.AUDIT_READ,
        AuditEvent.Action.ACCESS_DENIED,
        AuditEvent.Action.TOKEN_USED,
        AuditEvent.Action.AUTH_LOCKOUT,
    }
)


def _mac(row: AuditQueuedEvent, keys: AuditKeys) -> str:
    payload = {
        "queued": row.nonce,
        "chain": row.chain_id,
        "key": row.key_id,
        "created_at": row.created_at.isoformat(timespec="microseconds"),
        "actor": row.actor_name,
        "action": row.action,
        "target_type": row.target_type,
        "target_id": row.target_id,
        "study_id": row.study_id,
        "extra_data": row.extra_data,
    }
    return keys.sign(row.key_id, canonical_json(payload))


def enqueue(
    *, fields: dict[str, Any], chain_id: str, keys: AuditKeys
) -> AuditQueuedEvent:
    """Write one signed queued event in the caller's transaction; once that commits,
    its nonce goes to the checkpoint log.

    Args:
        fields: the event's content, as ``AuditEvent`` fields (``extra_data``
            already normalised).
        chain_id: the chain it is to be folded into.
        keys: the audit keys; the current one signs.
    """
    row = AuditQueuedEvent(
        **fields, nonce=uuid.uuid4().hex, chain_id=chain_id, key_id=keys.current
    )
    row.mac = _mac(row, keys)
    row.save()
    schedule_queued_mark(chain=chain_id, nonce=row.nonce)
    return row


def queued_problem(row: AuditQueuedEvent, *, keys: AuditKeys, chain_id: str) -> str:
    """Why this queued event must not be folded, or ``""`` when its signature holds."""
    if row.chain_id != chain_id:
        return f"belongs to another chain ({row.chain_id or 'none'})"
    try:
        expected = _mac(row, keys)
    except AuditKeyError as exc:
        return str(exc)
    if not hmac.compare_digest(expected, row.mac):
        return "does not match its signature: edited or forged"
    return ""


def event_fields(row: AuditQueuedEvent) -> dict[str, Any]:
    """The content a queued event brings to the chain: its ``AuditRecord`` fields."""
    return {
        field.attname: getattr(row, field.attname)
        for field in AuditRecord._meta.get_fields()
    }
