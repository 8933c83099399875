"""The sign-in form, throttled (services/throttle.py)."""

from __future__ import annotations

import math

from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from .services.throttle import (
    client_address,
    forget_account,
    locked_for,
    record_failure,
)


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's sign-in form that refuses, with how long to wait, an account or
    address with too many recent failures (even with the right password), and
    counts every failure."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request) if self.request else "unknown"
        wait = locked_for(username=username, address=address)
        if wait:
            raise ValidationError(
                f"Too many failed sign-ins for this account or from this address: "
                f"try again in {math.ceil(wait / 60)} minute(s).",
                code="locked",
            )
        try:
            cleaned = super().clean()
        except ValidationError as exc:
            if exc.code == "invalid_login":
                record_failure(username=username, address=address, via="sign-in")
            raise
        forget_account(username)
        return cleaned
