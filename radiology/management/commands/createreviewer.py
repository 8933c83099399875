"""``manage.py createreviewer USER --password-stdin [--group NAME] [--token]``."""

from __future__ import annotations

import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from radiology.services.tokens import token_create


class Command(BaseCommand):
    help = "Create (or update the password of) a reviewer account."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password-stdin", action="store_true", required=True)
        parser.add_argument("--group", default="radiology", help="department group")
        parser.add_argument("--staff", action="store_true", help="may use the admin")
        parser.add_argument(
            "--token", action="store_true", help="print a new API token"
        )

    def handle(self, *args, **options):
        password = sys.stdin.readline().rstrip("\n")
        with transaction.atomic():
            user, created = get_user_model().objects.get_or_create(
                username=options["username"]
            )
            # Django's password validators (AUTH_PASSWORD_VALIDATORS): length,
            # common passwords, similarity to the user name, all digits.
            try:
                validate_password(password, user=user)
            except ValidationError as exc:
                raise CommandError("createreviewer: " + " ".join(exc.messages)) from exc
            user.set_password(password)
            user.is_staff = user.is_staff or options["staff"]
            user.save()
            group, _ = Group.objects.get_or_create(name=options["group"])
            user.groups.add(group)
            if options["token"]:
                token, key = token_create(user=user, name="createreviewer")
                self.stdout.write(
                    f"token {key} (expires {token.expires_at:%Y-%m-%d}; list and "
                    "revoke at /api/tokens)"
                )
        self.stdout.write(
            f"{'created' if created else 'updated'} reviewer {user.username} "
            f"in group {options['group']}"
        )
