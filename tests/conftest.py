"""Shared fixtures: isolated media, users, and loud failures for missing CI services."""

from __future__ import annotations

import os

import hypothesis  # noqa: F401  (see below)
import pytest

# Imported up front, in the main thread: hypothesis' pytest plugin otherwise imports it
# at the end of the session, and CPython 3.11.7's parser can then fail with "AST
# constructor recursion depth mismatch" after live-server threads have compiled code.

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip with a visible reason locally; fail in CI, where every part must run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """``TEST_DATABASE_NAME`` names the test database, so two runs can share one
    PostgreSQL server without dropping each other's."""
    from django.conf import settings

    if os.environ.get("TEST_DATABASE_NAME"):
        database = settings.DATABASES["default"]
        database.setdefault("TEST", {})["NAME"] = os.environ["TEST_DATABASE_NAME"]


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path_factory):
    """Every test stores files in a fresh folder, never in the developer's var/."""
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _isolated_audit_anchor(settings, monkeypatch, tmp_path_factory):
    """Each test's audit chain gets its own key and checkpoint log (and so do the
    workers and commands it starts), as each install has its own."""
    from radiology.audit.keys import add_key

    folder = tmp_path_factory.mktemp("audit")
    add_key(folder / "audit.key")
    for name, path in (
        ("AUDIT_KEY_FILE", folder / "audit.key"),
        ("AUDIT_CHECKPOINT_FILE", folder / "checkpoints.log"),
    ):
        setattr(settings, name, path)
        monkeypatch.setenv(name, str(path))


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    def make(username: str, group: str | None = None, **extra):
        user = get_user_model().objects.create_user(
            username=username, password="review-pass-123", **extra
        )
        if group:
            user.groups.add(Group.objects.get_or_create(name=group)[0])
        return user

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice", group="neuro")


@pytest.fixture
def bob(make_user):
    return make_user("bob", group="chest")


def install_tiny_models(settings, root, versions=("1.0.0",), model_card=None):
    """Write identity ``tiny`` bundles (one per version) under ``root`` and make it the
    models root: fast, deterministic stand-ins where the model is not under test."""
    import inference
    from tests.inference.inference_fixtures import REDCNN, identity_weights, metadata

    for version in versions:
        inference.write_bundle(
            root / "tiny" / version,
            metadata=metadata("tiny", version),
            state_dict=identity_weights(REDCNN),
            model_card=model_card,
        )
    (root / "DEFAULT").write_text("tiny\n")
    settings.MODELS_ROOT = root
    settings.DENOISE_DEFAULT_MODEL = ""
    inference.clear_cache()
    return root
