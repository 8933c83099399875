"""The project's own middleware: body size limit, JSON errors, security headers.

Sign-in is Django's ``LoginRequiredMiddleware`` (``settings.MIDDLEWARE``): every
view needs it unless marked ``login_not_required`` (``radiology.urls``).
"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse


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


class JsonErrorsMiddleware:
    """Failures under ``/api/`` and ``/dicomweb/`` answer as JSON problems, never
    as an HTML error page: a database conflict is a 409 with its reason, anything
    else a 500 naming the error's kind and an ID to find it in the log."""

    _PREFIXES = ("/api/", "/dicomweb/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        import logging
        import uuid

        from django.db import IntegrityError

        if not request.path_info.startswith(self._PREFIXES):
            return None
        error_id = uuid.uuid4().hex[:12]
        logging.getLogger("radiology.errors").exception(
            "%s %s failed (error %s)", request.method, request.path_info, error_id
        )
        if isinstance(exception, IntegrityError):
            status = 409
            detail = (
                "the request conflicts with what is stored (a database constraint "
                "refused it); nothing was changed"
            )
        else:
            status = 500
            detail = (
                f"internal error ({type(exception).__name__}); the request was not "
                "completed"
            )
        response = JsonResponse({"detail": detail, "error_id": error_id}, status=status)
        response["Cache-Control"] = "no-store"
        return response


#: The pages' Content-Security-Policy: scripts, styles, fonts and connections from
#: this origin only, no inline script or style, images also from data:/blob: (the
#: viewer's canvases), never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    """A strict Content-Security-Policy on every page (the Django admin and the
    API's Swagger page, which bring their own inline scripts, excepted), and
    ``Cache-Control: no-store`` on JSON and DICOMweb responses, which carry
    patient data."""

    _CSP_EXEMPT = ("/admin/", "/api/docs")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        path = request.path_info
        if not path.startswith(self._CSP_EXEMPT):
            response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        kind = response.get("Content-Type", "")
        if path.startswith("/dicomweb/") or (
            path.startswith("/api/") and "json" in kind
        ):
            response["Cache-Control"] = "no-store"
        return response
