"""API tokens: created with a lifetime, listed and revoked by their owner or staff,
their use audited (at most once an hour per token, so the log stays readable)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..audit import audit_record
from ..models import ApiToken, AuditEvent
from .jobs import JobRequestError

__all__ = ["token_create", "token_revoke", "token_for_key", "tokens_visible_to"]

#: How often one token's use is written to the audit log.
USE_AUDIT_EVERY = timedelta(hours=1)


def token_create(*, user, name: str = "default", days: int | None = None, actor=None):
    """A new token for ``user``: returns ``(token row, key)``; the key is shown
    once and only its SHA-256 is stored."""
    days = settings.API_TOKEN_LIFETIME_DAYS if days is None else int(days)
    if not 1 <= days <= 3650:
        raise JobRequestError(f"token: lifetime must be 1 to 3650 days, got {days}")
    key = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=(name or "default")[:100],
            key_sha256=hashlib.sha256(key.encode()).hexdigest(),
            expires_at=timezone.now() + timedelta(days=days),
        )
        audit_record(
            action=AuditEvent.Action.TOKEN_CREATED,
            actor=actor or user,
            target=token,
            extra_data={"owner": user.get_username(), "name": token.name, "days": days},
        )
    return token, key


def tokens_visible_to(user):
    """A user's own tokens; staff see everyone's."""
    qs = ApiToken.objects.select_related("user").order_by("-created_at")
    return qs if user.is_staff else qs.filter(user=user)


def token_revoke(*, token_id: int, actor) -> ApiToken:
    """Revoke a token of ``actor`` (or anyone's, for staff); 404-like error else."""
    token = tokens_visible_to(actor).filter(pk=token_id).first()
    if token is None:
        raise JobRequestError(f"token: no token {token_id}")
    if token.revoked_at is None:
        with transaction.atomic():
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            audit_record(
                action=AuditEvent.Action.TOKEN_REVOKED,
                actor=actor,
                target=token,
                extra_data={"owner": token.user.get_username(), "name": token.name},
            )
    return token


def token_for_key(key: str, *, address: str) -> ApiToken | None:
    """The usable token with this key, its use recorded; ``None`` for an unknown,
    revoked or expired key."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    token = ApiToken.objects.select_related("user").filter(key_sha256=digest).first()
    now = timezone.now()
    if token is None or not token.usable(now):
        return None
    if token.last_used_at is None or now - token.last_used_at >= USE_AUDIT_EVERY:
        with transaction.atomic():
            audit_record(
                action=AuditEvent.Action.TOKEN_USED,
                actor=token.user,
                target=token,
                extra_data={"name": token.name, "address": address},
            )
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token
