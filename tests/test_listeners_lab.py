"""The hosts' event listeners on the real lab: what `virsh` does beside the portal shows
in the API, the audit log and the websocket within a second; one process across all
nodes listens to a host, and another takes over when it dies."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from audit.models import AuditEvent
from hosts.models import Host
from lab import layout, machines
from listeners.models import HostListener, ListenerState
from listeners.services import INVENTORY_GROUP
from migrations_app.models import Migration
from migrations_app.worker.runner import migration_execute
from tests import labtools
from tests.processes import Listeners
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

STALE_S = 3
# The listeners of one test start their own lease clock: small, so a takeover is quick.
LISTENER_ENV = {"PORTAL_LISTENER_STALE_AFTER_S": str(STALE_S), "PORTAL_LISTENER_HEARTBEAT_S": "0.5"}


@pytest.fixture
def listeners(tmp_path, lab_registered):
    started: list[Listeners] = []

    def start(name: str = "listeners") -> Listeners:
        process = Listeners(tmp_path / f"{name}.log", env=LISTENER_ENV)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        print(process.log.read_text()[-3000:])


def wait_listening(hosts, owner_not: str = "", timeout: float = 30) -> dict[str, HostListener]:
    names = {host.name for host in hosts}

    def ready():
        rows = {
            row.host.name: row
            for row in HostListener.objects.select_related("host").filter(host__name__in=names)
        }
        if len(rows) == len(names) and all(
            row.state == ListenerState.LISTENING and row.owner != owner_not for row in rows.values()
        ):
            return rows
        return None

    return labtools.wait_for(ready, timeout=timeout, what="every host's listener to listen")


class InventorySocket:
    """A member of the inventory group on the real channel layer: what a page receives."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(INVENTORY_GROUP, self.channel)

    def wait(self, predicate, timeout: float) -> dict:
        async def receive() -> dict:
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "no matching inventory message in time"
                message = await asyncio.wait_for(self.layer.receive(self.channel), remaining)
                if predicate(message):
                    return message

        return async_to_sync(receive)()

    def close(self) -> None:
        async_to_sync(self.layer.group_discard)(INVENTORY_GROUP, self.channel)


def api_state(api, uuid: str, host: str) -> str | None:
    rows = api.get("/api/vms/", {"search": layout.TINY_VM_NAME}).json()["results"]
    return next((row["state"] for row in rows if row["host"] == host), None)


def test_virsh_changes_show_within_a_second_and_are_audited(api, lab_hosts, tiny_vm, listeners):
    listeners()
    wait_listening(lab_hosts)
    first = tiny_vm.source
    socket = InventorySocket()
    try:
        changed_at = time.monotonic()
        machines.virsh(first, "destroy", tiny_vm.uuid)
        # libvirt says "shutdown" (host) first, then "stopped" (destroyed).
        message = socket.wait(
            lambda m: m["vm"]["uuid"] == tiny_vm.uuid and m["event"] == "stopped/destroyed", 5
        )
        seen_after = time.monotonic() - changed_at
        state = labtools.wait_for(
            lambda: api_state(api, tiny_vm.uuid, first.name) == "shut_off",
            timeout=5,
            what="the API to show the VM shut off",
            interval=0.05,
        )
        api_after = time.monotonic() - changed_at
        assert state
        assert message["host"] == first.name
        assert message["event"] == "stopped/destroyed"
        assert message["vm"]["state_reason"] == "destroyed"
        assert seen_after < 1.0 and api_after < 1.0, (seen_after, api_after)

        audited = AuditEvent.objects.get(event_type="vm.changed_outside")
        assert audited.detail["host"] == first.name
        assert audited.detail["event"] == "stopped"
        assert audited.detail["reason"] == "destroyed"
        assert audited.after == {"state": "shut_off", "state_reason": "destroyed"}

        changed_at = time.monotonic()
        machines.virsh(first, "start", tiny_vm.uuid)
        socket.wait(lambda m: m["vm"]["uuid"] == tiny_vm.uuid and m["vm"]["state"] == "running", 5)
        assert time.monotonic() - changed_at < 1.5
        assert api_state(api, tiny_vm.uuid, first.name) == "running"
    finally:
        socket.close()
        if labtools.domstate(first, tiny_vm.uuid) != "running":
            machines.virsh(first, "start", tiny_vm.uuid, check=False)


def test_a_portal_migration_is_not_a_change_outside(api, lab_hosts, tiny_vm, listeners):
    listeners()
    wait_listening(lab_hosts)
    before = AuditEvent.objects.filter(event_type="vm.changed_outside").count()
    destination = tiny_vm.other(tiny_vm.source)
    migration_id = labtools.request_migration(
        api, tiny_vm.uuid, remote_host=destination.name, storage="copy", delete_source=True
    )
    assert migration_execute(migration_id=migration_id) == "succeeded"
    # The inventory already follows the migration's own events on both hosts.
    labtools.wait_for(
        lambda: api_state(api, tiny_vm.uuid, destination.name) == "running",
        timeout=5,
        what="the destination's row",
    )
    time.sleep(1)  # late events (the source's undefine) are applied by now
    assert AuditEvent.objects.filter(event_type="vm.changed_outside").count() == before


def test_a_dead_listener_is_taken_over_within_the_stale_limit(api, lab_hosts, tiny_vm, listeners):
    first_process = listeners("first")
    rows = wait_listening(lab_hosts)
    owner = next(iter(rows.values())).owner
    assert {row.owner for row in rows.values()} == {owner}  # one process holds them all
    second_process = listeners("second")
    time.sleep(2 * STALE_S)
    # A live owner keeps its hosts: the second process takes none.
    assert set(HostListener.objects.values_list("owner", flat=True)) == {owner}
    epochs = dict(HostListener.objects.values_list("host_id", "epoch"))

    first_process.kill()
    killed_at = time.monotonic()
    taken = wait_listening(lab_hosts, owner_not=owner, timeout=STALE_S + 20)
    assert time.monotonic() - killed_at < STALE_S + 15
    assert all(row.epoch == epochs[row.host_id] + 1 for row in taken.values())
    assert second_process.process.poll() is None

    # The new owner listens for real: a change is seen at once.
    first = tiny_vm.source
    machines.virsh(first, "suspend", tiny_vm.uuid)
    try:
        labtools.wait_for(
            lambda: api_state(api, tiny_vm.uuid, first.name) == "paused",
            timeout=2,
            what="the new listener to see the pause",
            interval=0.05,
        )
    finally:
        machines.virsh(first, "resume", tiny_vm.uuid, check=False)


def test_the_host_page_shows_its_listener(browser, lab_hosts, listeners):
    listeners()
    wait_listening(lab_hosts)
    host = Host.objects.get(name=lab_hosts[0].name)
    page = browser.get(f"/hosts/{host.pk}/").content.decode()
    assert 'data-field="listener-state">Listening' in page


def test_the_listener_reconnects_after_libvirtd_comes_back(
    api, lab_hosts, lab_config, tiny_vm, listeners
):
    listeners()
    wait_listening(lab_hosts)
    first = tiny_vm.source
    machines.kill_libvirtd(first)
    try:
        row = labtools.wait_for(
            lambda: HostListener.objects.filter(
                host__name=first.name, state=ListenerState.RETRYING
            ).first(),
            timeout=30,
            what="the listener to notice libvirtd is gone",
        )
        assert row.last_error
        events_before = HostListener.objects.get(host__name=first.name).events_seen
    finally:
        machines.start_libvirtd(first, lab_config)
    # Most likely before the listener's next try (its back-off grew while libvirtd was
    # down): then the read of the whole host on reconnecting brings it.
    machines.virsh(first, "suspend", tiny_vm.uuid)
    try:
        wait_listening([first], timeout=60)
        labtools.wait_for(
            lambda: api_state(api, tiny_vm.uuid, first.name) == "paused",
            timeout=5,
            what="the pause made while the listener reconnected",
            interval=0.05,
        )
        machines.virsh(first, "resume", tiny_vm.uuid)
        labtools.wait_for(
            lambda: api_state(api, tiny_vm.uuid, first.name) == "running",
            timeout=2,
            what="the resume, seen by the reconnected listener",
            interval=0.05,
        )
        assert HostListener.objects.get(host__name=first.name).events_seen > events_before
    finally:
        if labtools.domstate(first, tiny_vm.uuid) == "paused":
            machines.virsh(first, "resume", tiny_vm.uuid, check=False)


def test_virsh_migrate_while_the_portal_waits_is_seen_at_once(api, lab_hosts, linux_vm, listeners):
    """A queued migration has not touched the VM yet: `virsh migrate` beside it is a
    change outside the portal, seen on both hosts within a second of virsh returning."""
    from tests.test_outside_matrix_lab import _migrated_away_outside

    listeners()
    wait_listening(lab_hosts)
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = labtools.request_migration(api, linux_vm.uuid, remote_host=destination.name)
    assert Migration.objects.get(pk=migration_id).status == "queued"
    _migrated_away_outside(source, destination, linux_vm.uuid)
    moved_at = time.monotonic()

    def rows() -> dict[str, str]:
        found = api.get("/api/vms/", {"search": layout.LINUX_VM_NAME}).json()["results"]
        return {row["host"]: row["state"] for row in found if row["state"] != "gone"}

    labtools.wait_for(
        lambda: rows() == {destination.name: "running"},
        timeout=5,
        what="the API to show the VM on the destination only",
        interval=0.05,
    )
    assert time.monotonic() - moved_at < 1.0

    def audited() -> set[tuple[str, str, str]]:
        return {
            (event.detail["host"], event.detail["event"], event.detail["reason"])
            for event in AuditEvent.objects.filter(event_type="vm.changed_outside")
        }

    # The source's own events follow in their order.
    expected = {(destination.name, "started", "migrated"), (source.name, "stopped", "migrated")}
    try:
        labtools.wait_for(
            lambda: expected <= audited(), timeout=5, what="both hosts' events in the audit log"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {sorted(audited())}") from None
    assert VM.objects.get(uuid=linux_vm.uuid, host__name=source.name).state == "gone"
