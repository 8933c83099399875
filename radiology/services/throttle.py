"""Sign-in throttling: too many failures for one account or from one address lock
it for a while, with an audited lockout and a clear message.

Failures are rows in the database (``AuthFailure``), so every web process and host
sees the same counts without a shared cache. Settings: ``AUTH_FAILURES_PER_ACCOUNT``
(default 5) and ``AUTH_FAILURES_PER_ADDRESS`` (default 20) within
``AUTH_LOCKOUT_WINDOW_S`` (default 900 s); a lock lasts until the oldest counted
failure leaves the window.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..audit import audit_record
from ..models import AuditEvent, AuthFailure

__all__ = ["client_address", "locked_for", "record_failure", "forget_account"]


def _limits() -> dict[str, int]:
    return {
        AuthFailure.Scope.ACCOUNT: settings.AUTH_FAILURES_PER_ACCOUNT,
        AuthFailure.Scope.ADDRESS: settings.AUTH_FAILURES_PER_ADDRESS,
    }


def _window() -> timedelta:
    return timedelta(seconds=settings.AUTH_LOCKOUT_WINDOW_S)


def client_address(request) -> str:
    """The client's address as the server saw it (``REMOTE_ADDR``; a proxy in
    front must set it, e.g. gunicorn's ``--forwarded-allow-ips``)."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")[:150]


def locked_for(*, username: str | None, address: str) -> int:
    """Seconds until a sign-in for ``username`` from ``address`` may be tried
    again; 0 when it may be tried now."""
    now = timezone.now()
    since = now - _window()
    wait = 0
    for scope, key in (
        (AuthFailure.Scope.ACCOUNT, (username or "").strip().lower()),
        (AuthFailure.Scope.ADDRESS, address),
    ):
        if not key:
            continue
        recent = AuthFailure.objects.filter(scope=scope, key=key, at__gte=since)
        limit = _limits()[scope]
        if recent.count() >= limit:
            oldest = recent.order_by("-at")[limit - 1].at
            wait = max(wait, int((oldest + _window() - now).total_seconds()) + 1)
    return wait


def record_failure(*, username: str | None, address: str, via: str) -> None:
    """Count one failure; the one that reaches a limit is audited as a lockout."""
    now = timezone.now()
    with transaction.atomic():
        before = locked_for(username=username, address=address)
        name = (username or "").strip().lower()
        if name:
            AuthFailure.objects.create(
                scope=AuthFailure.Scope.ACCOUNT, key=name[:150], at=now
            )
        AuthFailure.objects.create(scope=AuthFailure.Scope.ADDRESS, key=address, at=now)
        after = locked_for(username=username, address=address)
        if after and not before:
            audit_record(
                action=AuditEvent.Action.AUTH_LOCKOUT,
                target_type="account" if name else "address",
                target_id=(name or address)[:64],
                extra_data={
                    "username": name,
                    "address": address,
                    "via": via,
                    "locked_s": after,
                },
            )
    # Old rows are of no use: keep the table small.
    AuthFailure.objects.filter(at__lt=now - 4 * _window()).delete()


def forget_account(username: str) -> None:
    """A successful sign-in clears the account's failures (not the address's)."""
    AuthFailure.objects.filter(
        scope=AuthFailure.Scope.ACCOUNT, key=username.strip().lower()
    ).delete()
