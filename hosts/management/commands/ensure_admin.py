"""Create the first administrator if there is none (used by `make demo`)."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create an admin user from DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD, "
        "or with a generated password that is printed once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        user = User.objects.filter(username=username).first()
        if user is not None and password is None:
            self.stdout.write(f"admin user '{username}' exists (password unchanged)")
            return
        generated = password is None
        password = password or secrets.token_urlsafe(12)
        if user is None:
            user = User.objects.create_superuser(username=username, email="", password=password)
        else:
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
        if generated:
            self.stdout.write(
                self.style.SUCCESS(f"admin user: {username}   password: {password}")
                + "\n(generated now and shown only this once; set DJANGO_SUPERUSER_PASSWORD"
                " to choose it)"
            )
        else:
            self.stdout.write(f"admin user '{username}' ready (password from environment)")
