"""Issue #22 item 6: the migration page shows where the request came from (the audit
event's client address) only to who may read the audit log: auditors and staff."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from audit.events import EventType
from audit.models import AuditEvent
from tests.test_roles import _user, world  # noqa: F401  (world: a fixture)

pytestmark = pytest.mark.django_db

ADDRESS = "198.51.100.77"


@pytest.mark.parametrize(
    ("principal", "sees"),
    [("viewer", False), ("operator", False), ("host admin", False), ("staff", True)],
)
def test_only_audit_readers_see_the_requesters_address(world, principal, sees):  # noqa: F811
    AuditEvent.objects.create(
        event_type=EventType.MIGRATION_REQUESTED,
        actor_name="admin",
        auth_method="session",
        source_ip=ADDRESS,
        target_type="migrations_app.migration",
        target_id=str(world["migration"]),
        target_repr="migration",
    )
    client = Client()
    client.force_login(_user(principal))
    assert (ADDRESS in _page(client, world)) is sees
    if principal == "viewer":  # an auditor who may also read every migration sees it
        user = get_user_model().objects.get(username="viewer")
        user.groups.add(Group.objects.get(name="auditor"))
        assert ADDRESS in _page(client, world)


def _page(client: Client, rows: dict) -> str:
    response = client.get(f"/migrations/{rows['migration']}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "session" in page  # the event is listed either way
    return page
