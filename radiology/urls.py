"""URL routes: pages, the JSON API under /api/, the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

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
