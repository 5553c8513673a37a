from __future__ import annotations

import os
import uuid
import warnings

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

# The tests contact the lab's loopback addresses only: anything else is refused before
# a packet is sent (hosts.networks), here and in the portal processes tests start.
TEST_HOST_NETWORKS = "127.0.0.0/8,::1/128"


def pytest_configure(config):
    from django.conf import settings

    from portal.datadir import data_dir_ensure

    data_dir_ensure()  # the test database goes there; settings do not make it
    os.environ.setdefault("PORTAL_HOST_NETWORKS", TEST_HOST_NETWORKS)
    if not settings.HOST_NETWORKS:
        settings.HOST_NETWORKS = os.environ["PORTAL_HOST_NETWORKS"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(request):
    """Users made in-process hash their password with MD5: PBKDF2 costs about 0.3 s per
    user and most tests make two. Lab and browser tests keep the real hashers: their
    portal may run in another process, which must check the passwords."""
    if any(request.node.get_closest_marker(m) is not None for m in ("lab", "browser")):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    yield


@pytest.fixture(autouse=True)
def _private_cache(settings):
    """Each test gets an empty cache of its own: the login throttle counts failures per
    client address there, and every test client comes from 127.0.0.1, so failures of
    one test (or of an earlier run, in a Redis that outlives it) must not lock another
    test's logins. Portal processes started by the tests keep the profile's cache."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"test-{uuid.uuid4().hex}",
        }
    }
    # Nor does a token remembered by an earlier test (portal/authentication.py).
    from portal.authentication import tokens_forget

    tokens_forget()
    yield


@pytest.fixture(scope="session")
def lab_hosts():
    """The real lab hypervisors (libvirtd + QEMU + sshd; 3 unless TEST_LAB_HOSTS says
    otherwise), started once per session. Faults are always undone at the end, even
    when the lab is kept (PORTAL_KEEP_TEST_LAB)."""
    if os.geteuid() != 0:
        pytest.fail(
            "LAB TESTS NEED ROOT: the lab hosts use unshare, bind mounts and a system "
            "libvirtd. Run the suite as root (CI does).",
            pytrace=False,
        )
    from tests import lab_session

    hosts = lab_session.up()
    # Tests measure what crosses: the guest must have filled its RAM first (~10 s).
    from lab import domains, guest_images

    domains.wait_for_console(lab_session.CONFIG, guest_images.MARKER_FILLED, timeout=180)
    try:
        yield hosts
    finally:
        lab_session.heal()
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
def browser(admin_user) -> Client:
    """The pages as the admin sees them (Django's test client, logged in)."""
    client = Client()
    assert client.login(username="admin", password="admin-pass-123")
    return client


@pytest.fixture
def viewer_browser(viewer_user) -> Client:
    client = Client()
    assert client.login(username="viewer", password="viewer-pass-123")
    return client


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


def running_vm_on(source):
    """A running VM row `web-1` on `source` (no hypervisor behind it)."""
    import uuid

    from django.utils import timezone

    from vms.models import VM

    return VM.objects.create(
        uuid=uuid.uuid4(),
        name="web-1",
        host=source,
        state="running",
        persistent=True,
        vcpus=1,
        memory_kib=262144,
        max_memory_kib=262144,
        last_synced_at=timezone.now(),
    )


@pytest.fixture
def vm(db):
    """A running VM row on host `src`, with a second host `dst`: no hypervisor behind
    them (for API tests that stop before libvirt)."""
    from hosts.models import Host

    source = Host.objects.create(name="src", address="192.0.2.10")
    Host.objects.create(name="dst", address="192.0.2.11")
    return running_vm_on(source)


@pytest.fixture(scope="session")
def vm_uuids(lab_hosts) -> dict[str, str]:
    """UUIDs of the lab's two VMs, wherever earlier tests moved them."""
    from lab import layout, machines

    uuids = {}
    for name in (layout.LINUX_VM_NAME, layout.TINY_VM_NAME):
        for host in lab_hosts:
            result = machines.virsh(host, "domuuid", name, check=False)
            if result.returncode == 0:
                uuids[name] = result.stdout.strip()
                break
    assert set(uuids) == {layout.LINUX_VM_NAME, layout.TINY_VM_NAME}, uuids
    return uuids


@pytest.fixture
def lab_registered(api, lab_hosts, lab_config):
    """The lab hosts registered through the API (transport tcp, given explicitly: the
    default is ssh) and refreshed: name -> Host."""
    from hosts.models import Host
    from lab import layout

    shared = str(layout.shared_storage_dir(lab_config))
    for lab_host in lab_hosts:
        response = api.post(
            "/api/hosts/",
            {
                "name": lab_host.name,
                "address": lab_host.address,
                "transport": "tcp",
                "shared_storage_paths": [shared],
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
        refreshed = api.post(f"/api/hosts/{response.json()['id']}/refresh/").json()
        assert refreshed["status"] == "reachable", refreshed["last_error"]
    return {h.name: h for h in Host.objects.all()}


def _placed_vm(lab_hosts, uuid):
    from tests import labtools

    labtools.normalize(lab_hosts, uuid)
    yield labtools.VMPlacement(lab_hosts, uuid)
    labtools.normalize(lab_hosts, uuid)


class LabGuestCrashed(UserWarning):
    """The lab's Linux guest kernel crashed (and rebooted itself): docs/reliability.md."""


_guest_crashes_reported = 0


def _linux_guest_ready(config, hosts, uuid: str) -> None:
    """The guest filled its RAM in its current boot. A kernel crash of an earlier boot
    is reported loudly (a warning in the summary and the console's lines), once. A guest
    whose kernel crashed without rebooting (a lab defined before oops=panic) is powered
    off and on again."""
    global _guest_crashes_reported
    from lab import domains, guest_images, layout
    from tests import labtools

    try:
        domains.wait_for_filled_guest(config, timeout=30)
    except layout.LabError:
        _earlier, current = domains.console_boots(config)
        if any(sign in current for sign in guest_images.CRASH_SIGNS):
            labtools.restart_where_running(hosts, uuid)
        domains.wait_for_filled_guest(config, timeout=150)
    earlier, _current = domains.console_boots(config)
    crashed = [part for part in earlier if any(s in part for s in guest_images.CRASH_SIGNS)]
    for part in crashed[_guest_crashes_reported:]:
        signs = [line for line in part.splitlines() if "BUG" in line or "Oops" in line][:3]
        text = f"LAB GUEST CRASHED and rebooted (its kernel): {signs}"
        print(text)
        warnings.warn(LabGuestCrashed(text), stacklevel=2)
    _guest_crashes_reported = len(crashed)


@pytest.fixture
def linux_vm(lab_hosts, vm_uuids, lab_registered, lab_config):
    """The filled Linux guest, running on exactly one host, put back that way after."""
    from lab import layout
    from tests import labtools

    uuid = vm_uuids[layout.LINUX_VM_NAME]
    labtools.normalize(lab_hosts, uuid)
    _linux_guest_ready(lab_config, lab_hosts, uuid)
    yield labtools.VMPlacement(lab_hosts, uuid)
    labtools.normalize(lab_hosts, uuid)


@pytest.fixture
def tiny_vm(lab_hosts, vm_uuids, lab_registered):
    from lab import layout

    yield from _placed_vm(lab_hosts, vm_uuids[layout.TINY_VM_NAME])


@pytest.fixture
def workers(tmp_path):
    """Real task worker processes (`manage.py run_workers`: django-q2 cluster and the
    reconciler loop) on the test database; not started yet."""
    from django_q.brokers import get_broker

    from tests.processes import Workers

    get_broker().purge_queue()  # tasks of earlier in-process tests must not run here
    started = Workers(tmp_path / "workers.log")
    yield started
    started.kill()
    print(started.log.read_text()[-5000:])


@pytest.fixture
def running_workers(workers):
    workers.start()
    return workers
