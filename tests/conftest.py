from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.fixture(scope="session")
def lab_hosts():
    """Two real lab hypervisors (libvirtd + QEMU + sshd), started once per session."""
    if os.geteuid() != 0:
        pytest.fail(
            "LAB TESTS NEED ROOT: the lab hosts use unshare, bind mounts and a system "
            "libvirtd. Run the suite as root (CI does).",
            pytrace=False,
        )
    from tests import lab_session

    hosts = lab_session.up()
    yield hosts
    if not os.environ.get("PORTAL_KEEP_TEST_LAB"):
        lab_session.down()


@pytest.fixture
def lab_config():
    from tests import lab_session

    return lab_session.CONFIG


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_user(
        username="admin", password="admin-pass-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def viewer_user(db):
    return get_user_model().objects.create_user(username="viewer", password="viewer-pass-123")


@pytest.fixture
def api(admin_user) -> APIClient:
    """An API client that authenticates the way scripts do: with a DRF token."""
    client = APIClient()
    token = Token.objects.create(user=admin_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def viewer_api(viewer_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(viewer_user)
    return client
