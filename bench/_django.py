"""A throwaway Django set-up (SQLite, media, var/) in a temp folder for benchmarks."""

from __future__ import annotations

import os
from pathlib import Path


def throwaway_django(root: Path, username: str | None = None):
    """Point settings at ``root``, set Django up, migrate; returns a new user or None.

    Call once per process, before importing anything that touches models.
    """
    os.environ.update(
        {
            "DEBUG": "1",
            "VAR_DIR": str(root / "var"),
            "MEDIA_ROOT": str(root / "media"),
            "DATABASE_URL": f"sqlite:///{root / 'db.sqlite3'}",
            "DJANGO_SETTINGS_MODULE": "radiology.settings",
        }
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if username is None:
        return None
    return get_user_model().objects.create_user(
        username, password=f"{username}-pass-123"
    )
