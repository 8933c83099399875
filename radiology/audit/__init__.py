"""Append-only audit log: events hash-chained under a secret key, anchored outside the
database by a signed checkpoint log (see README, "Audit trail")."""

from __future__ import annotations

from .canonical import canonical_json, normalise
from .chain import (
    GENESIS_HASH,
    AuditVerification,
    audit_fold_queue,
    audit_record,
    audit_verify,
)

__all__ = [
    "GENESIS_HASH",
    "AuditVerification",
    "audit_fold_queue",
    "audit_record",
    "audit_verify",
    "canonical_json",
    "normalise",
]
