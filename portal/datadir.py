"""The data folder (PORTAL_DATA_DIR) is made by the processes that use it: manage.py,
the ASGI/WSGI entry points and the test run; never by importing the settings, so that
a test run as another user, or on a read-only checkout, can import them."""

from pathlib import Path

from django.conf import settings


def data_dir_ensure() -> None:
    """The data folder (SQLite creates its file, not its folder) and STATIC_ROOT in it
    (WhiteNoise warns about a missing one)."""
    Path(settings.DATA_DIR).mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(exist_ok=True)
