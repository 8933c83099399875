"""Who is calling ``/api/`` and ``/dicomweb/``: API tokens, the session, CSRF."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer, django_auth
from ninja.utils import check_csrf

from .services.throttle import client_address, locked_for, record_failure
from .services.tokens import token_for_key

__all__ = ["API_AUTH", "TokenAuth", "authenticate", "csrf_failed", "user_for_token"]

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def user_for_token(request: HttpRequest, key: str):
    """The owner of the usable API token ``key`` (also set as ``request.user``), or
    ``None``: an unknown, revoked or expired key counts as a wrong password, and an
    address locked for guessing gets ``None`` until the lock ends."""
    address = client_address(request)
    if locked_for(username=None, address=address):
        return None
    found = token_for_key(key, address=address)
    if found is None:
        record_failure(username=None, address=address, via="api token")
        return None
    request.user = found.user
    return found.user


class TokenAuth(HttpBearer):
    """``Authorization: Bearer <API token>`` for django-ninja."""

    def authenticate(self, request: HttpRequest, token: str):
        return user_for_token(request, token)


#: The API's authentication: a Bearer token, else the session; django-ninja runs
#: :func:`ninja.utils.check_csrf` (as :func:`csrf_failed` does) for the session.
API_AUTH = [TokenAuth(), django_auth]


def authenticate(request: HttpRequest) -> tuple[object | None, bool]:
    """``(user, came with a bearer token)``; the session user when there is no token,
    ``None`` for an anonymous caller or a bad token."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return user_for_token(request, token.strip()), True
    user = getattr(request, "user", None)
    return (user if user is not None and user.is_authenticated else None), False


def csrf_failed(request: HttpRequest, *, by_token: bool) -> bool:
    """Whether a request must be refused for CSRF: a session (cookie) request that
    changes something without a valid token. Bearer requests carry no ambient
    credential, so they need none; this is the check django-ninja applies to the
    API's session requests."""
    if by_token or request.method in _SAFE_METHODS:
        return False
    return check_csrf(request) is not None
