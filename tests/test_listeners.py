"""The listeners without hosts: whose change an event is, back-off, and the lease
(claim, renew, takeover after the stale limit, fencing of a lost lease)."""

from __future__ import annotations

import pytest
from django.db.models import F

from audit.models import AuditEvent
from hosts.hypervisor import DomainEvent, DomainInfo
from hosts.models import Host
from listeners import rules
from listeners.lease import listener_claim, listener_release, listener_renew
from listeners.models import HostListener, ListenerState
from listeners.selectors import hosts_due_for_poll, hosts_listened_ids, listener_view
from listeners.services import host_event_apply
from vms.models import VM


def event(kind="lifecycle", name="", detail=""):
    return DomainEvent("6f1c0f5e-0000-4000-8000-000000000001", "vm1", kind, name, detail)


@pytest.mark.parametrize(
    "given, active, recent, outside",
    [
        (event("lifecycle", "stopped", "destroyed"), False, False, True),
        (event("lifecycle", "stopped", "shutdown"), False, False, True),
        (event("lifecycle", "suspended", "paused"), False, False, True),
        (event("reboot"), False, False, True),
        # virsh migrate, with no portal migration: someone else's
        (event("lifecycle", "started", "migrated"), False, False, True),
        (event("job_completed"), False, False, True),
        # during a portal migration, the record tells (settlement reads the reason)
        (event("lifecycle", "stopped", "destroyed"), True, False, False),
        (event("lifecycle", "started", "migrated"), True, True, False),
        # just after one: its own late events are its own, the rest is not
        (event("lifecycle", "undefined", "removed"), False, True, False),
        (event("lifecycle", "stopped", "migrated"), False, True, False),
        (event("job_completed"), False, True, False),
        (event("lifecycle", "stopped", "destroyed"), False, True, True),
        (event("lifecycle", "undefined", "removed"), False, False, True),
        # the notice that a shutdown began: the stop that follows is the change
        (event("lifecycle", "shutdown", "host"), False, False, False),
    ],
)
def test_changed_outside(given, active, recent, outside):
    assert (
        rules.changed_outside(given, migration_active=active, migration_ended_recently=recent)
        is outside
    )


@pytest.mark.parametrize(
    "attempt, seconds", [(0, 1.0), (1, 2.0), (2, 4.0), (4, 16.0), (5, 30.0), (50, 30.0)]
)
def test_retry_after(attempt, seconds):
    assert rules.retry_after_s(attempt) == seconds


def test_a_completed_job_alone_changes_no_row():
    assert not rules.changes_state(event("job_completed"))
    assert rules.changes_state(event("reboot"))
    assert rules.changes_state(event("lifecycle", "stopped", "destroyed"))


@pytest.fixture
def host(db):
    return Host.objects.create(name="h1", address="192.0.2.21")


def make_stale(host_id: int) -> None:
    HostListener.objects.filter(pk=host_id).update(heartbeat_at=F("heartbeat_at") - _ago(600))


def _ago(seconds: int):
    from datetime import timedelta

    return timedelta(seconds=seconds)


def test_one_owner_at_a_time_and_a_stale_one_is_taken_over(host):
    first = listener_claim(host_id=host.pk, owner="node-a:1")
    assert first == 1
    assert listener_claim(host_id=host.pk, owner="node-b:2") is None  # a live owner keeps it
    assert listener_renew(host_id=host.pk, epoch=first)

    make_stale(host.pk)
    second = listener_claim(host_id=host.pk, owner="node-b:2")
    assert second == 2
    assert HostListener.objects.get(pk=host.pk).owner == "node-b:2"
    assert not listener_renew(host_id=host.pk, epoch=first)  # the old owner learns it lost

    listener_release(host_id=host.pk, epoch=second)
    assert listener_claim(host_id=host.pk, owner="node-a:3") == 3  # released: free at once


def info(state="shut_off", reason="destroyed") -> DomainInfo:
    return DomainInfo(
        uuid="6f1c0f5e-0000-4000-8000-000000000001", name="vm1", state=state, persistent=True,
        vcpus=1, memory_kib=1024, max_memory_kib=1024, arch="x86_64", machine_type="pc",
        domain_type="qemu", disks=[], has_hostdev=False, state_reason=reason,
    )  # fmt: skip


def test_an_event_updates_the_row_and_audits_a_change_outside(host):
    from django.utils import timezone

    epoch = listener_claim(host_id=host.pk, owner="me")
    VM.objects.create(
        uuid=info().uuid, name="vm1", host=host, state="running", vcpus=1, memory_kib=1024,
        max_memory_kib=1024, persistent=True, last_synced_at=timezone.now(),
    )  # fmt: skip
    applied = host_event_apply(
        host_id=host.pk,
        epoch=epoch,
        event=event("lifecycle", "stopped", "destroyed"),
        info=info(),
        read_at=timezone.now(),
    )
    assert applied
    vm = VM.objects.get(host=host)
    assert (vm.state, vm.state_reason) == ("shut_off", "destroyed")
    audited = AuditEvent.objects.get(event_type="vm.changed_outside")
    assert audited.detail["event"] == "stopped" and audited.detail["reason"] == "destroyed"
    assert audited.before == {"state": "running", "state_reason": ""}
    assert HostListener.objects.get(pk=host.pk).events_seen == 1


def test_a_lost_lease_writes_nothing(host):
    from django.utils import timezone

    old = listener_claim(host_id=host.pk, owner="old")
    make_stale(host.pk)
    listener_claim(host_id=host.pk, owner="new")
    applied = host_event_apply(
        host_id=host.pk,
        epoch=old,
        event=event("lifecycle", "stopped", "destroyed"),
        info=info(),
        read_at=timezone.now(),
    )
    assert not applied
    assert not VM.objects.exists()
    assert not AuditEvent.objects.filter(event_type="vm.changed_outside").exists()


def test_polling_skips_listened_hosts_until_the_safety_net_is_due(host, settings):
    from django.utils import timezone

    other = Host.objects.create(name="h2", address="192.0.2.22")
    epoch = listener_claim(host_id=host.pk, owner="me")
    assert set(hosts_due_for_poll()) == {host, other}  # connecting: not listening yet
    HostListener.objects.filter(pk=host.pk, epoch=epoch).update(state=ListenerState.LISTENING)
    Host.objects.filter(pk=host.pk).update(last_seen_at=timezone.now())
    assert hosts_listened_ids() == {host.pk}
    assert set(hosts_due_for_poll()) == {other}
    Host.objects.filter(pk=host.pk).update(last_seen_at=timezone.now() - _ago(3600))
    assert set(hosts_due_for_poll()) == {host, other}  # the safety net's full read
    make_stale(host.pk)
    assert hosts_listened_ids() == set()
    assert listener_view(host)["state"] == "none"
