"""Login is required everywhere except the login page, static files and health check."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse

_OPEN_PREFIXES = ("/accounts/login/", "/healthz")


class LoginRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        static = "/" + settings.STATIC_URL.lstrip("/")
        if (
            request.user.is_authenticated
            or path.startswith(_OPEN_PREFIXES)
            or path.startswith(static)
            or path.startswith("/admin/")  # the admin has its own login
            or path.startswith("/api/")  # the API answers 401 itself (token or session)
            or path.startswith("/dicomweb/")  # DICOMweb answers 401 itself
        ):
            return self.get_response(request)
        return redirect_to_login(request.get_full_path())


class RequestSizeLimitMiddleware:
    """Refuse a body over ``UPLOAD_MAX_BYTES`` before anything reads it (413)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.UPLOAD_MAX_BYTES:
            return JsonResponse(
                {
                    "detail": f"request body is {length} bytes; the limit is "
                    f"{settings.UPLOAD_MAX_BYTES} bytes (UPLOAD_MAX_BYTES)"
                },
                status=413,
            )
        return self.get_response(request)
