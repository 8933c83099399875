"""URL routes: pages, the JSON API under /api/, DICOMweb, the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import URLPattern, URLResolver, include, path

from . import views
from .api import api
from .forms import ThrottledAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("dicomweb/", include("radiology.dicomweb.urls")),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(authentication_form=ThrottledAuthenticationForm),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("", views.studies, name="studies"),
    path("upload/", views.upload, name="upload"),
    path("series/<int:pk>/", views.series_detail, name="series-detail"),
    path("series/<int:pk>/view/", views.series_view, name="series-view"),
    path("jobs/<int:pk>/compare/", views.compare, name="compare"),
    path("audit/", views.audit_log, name="audit"),
    path("models/", views.model_registry, name="models"),
]

#: Routes whose views authenticate each request themselves, so Django's
#: LoginRequiredMiddleware must not redirect them to the login page: the API and
#: DICOMweb answer 401 (token or session), the admin sends to its own login page.
SELF_AUTHENTICATING = ("admin/", "api/", "dicomweb/")


def _login_not_required(entries: list[URLPattern | URLResolver]) -> None:
    for entry in entries:
        if isinstance(entry, URLResolver):
            _login_not_required(entry.url_patterns)
        elif getattr(entry.callback, "login_required", True):
            # (the admin's login, a bound method, is already marked)
            login_not_required(entry.callback)


_login_not_required(
    [entry for entry in urlpatterns if str(entry.pattern) in SELF_AUTHENTICATING]
)
