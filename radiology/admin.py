"""Admin for staff: read-only views of the data. Every change goes through the services,
which write the audit events; only API tokens can be revoked here."""

from django.contrib import admin

from .models import (
    ApiToken,
    AuditEvent,
    DenoiseJob,
    Instance,
    Review,
    Series,
    Study,
    Upload,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Study)
class StudyAdmin(ReadOnlyAdmin):
    list_display = ["study_instance_uid", "description", "owner", "group", "created_at"]
    list_filter = ["group"]
    search_fields = ["study_instance_uid", "description", "patient_id"]


@admin.register(Series)
class SeriesAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "modality",
        "description",
        "study",
        "instance_count",
        "derived",
    ]
    list_filter = ["modality", "derived"]
    search_fields = ["series_instance_uid", "description"]


@admin.register(Instance)
class InstanceAdmin(ReadOnlyAdmin):
    list_display = ["sop_instance_uid", "series", "slice_index", "sha256"]
    search_fields = ["sop_instance_uid"]


@admin.register(Upload)
class UploadAdmin(ReadOnlyAdmin):
    list_display = ["uid", "owner", "file_count", "accepted_count", "created_at"]


@admin.register(DenoiseJob)
class DenoiseJobAdmin(ReadOnlyAdmin):
    list_display = ["pk", "series", "model_name", "model_version", "status", "progress"]
    list_filter = ["status", "model_name"]


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ["job", "reviewer", "verdict", "strength", "created_at"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "created_at"]
    readonly_fields = ["key_sha256"]

    def has_add_permission(self, request):
        return False  # tokens are made by ``createreviewer --token``


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "created_at",
        "actor_name",
        "action",
        "target_type",
        "target_id",
    ]
    list_filter = ["action"]
