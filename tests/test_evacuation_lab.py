"""Evacuating a real lab host with real django-q2 workers (issue #21, item 7): the
evacuation's waves run back to back, a VM starts as soon as a slot frees, not when
the whole first wave has ended."""

from __future__ import annotations

import pytest

from hosts.models import Host
from lab import domains, guest_images
from migrations_app.models import Migration, MigrationBatch
from tests import labtools

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

EXTRA = 4


@pytest.fixture
def extras_on_source(linux_vm, lab_config):
    """EXTRA small guests beside the Linux guest on its host, removed after."""
    labtools.remove_extra_guests(lab_config)
    domains.extra_vms_start_on(lab_config, linux_vm.source, EXTRA)
    yield linux_vm.source
    labtools.remove_extra_guests(lab_config)


def test_an_evacuation_starts_the_next_vm_when_a_slot_frees(
    api, linux_vm, extras_on_source, workers, settings, lab_config
):
    source = extras_on_source
    # Filled RAM, so that its capped copy lasts (an earlier test may have restarted it).
    domains.wait_for_console(lab_config, guest_images.MARKER_FILLED, timeout=180)
    host = Host.objects.get(name=source.name)
    assert api.post(f"/api/hosts/{host.pk}/refresh/").status_code == 200
    response = api.post(
        f"/api/hosts/{host.pk}/evacuate/",
        {"dry_run": False, "bandwidth_mib_s": 400},
        format="json",
    )
    assert response.status_code == 202, response.json()
    plan = response.json()
    # Every evacuating migration carries the limit asked for.
    limits = Migration.objects.filter(batch_id=plan["batch"]).values_list(
        "bandwidth_mib_s", flat=True
    )
    assert set(limits) == {400}, limits
    # Largest first: the Linux guest leads the first wave (outgoing limit 2).
    assert plan["migrations"][0]["vm_uuid"] == linux_vm.uuid
    assert [row["wave"] for row in plan["migrations"][:2]] == [1, 1]
    assert max(row["wave"] for row in plan["migrations"]) >= 3
    batch_id = plan["batch"]
    # The Linux guest crosses slowly (its filled RAM at 15 MiB/s while it rewrites 8 MiB/s:
    # many seconds) while the small ones take a second or two each: set before any
    # worker runs.
    slow = Migration.objects.get(batch_id=batch_id, vm_uuid=linux_vm.uuid)
    Migration.objects.filter(pk=slow.pk).update(bandwidth_mib_s=15)
    workers.start()

    batch = labtools.wait_for(
        lambda: MigrationBatch.objects.filter(pk=batch_id, finished_at__isnull=False).first(),
        timeout=300,
        what=f"evacuation batch {batch_id} to finish",
        interval=0.5,
    )
    children = list(batch.children.order_by("started_at"))
    t0 = batch.created_at
    timeline = [
        f"{c.vm_name} -> {c.destination.name} {c.status} "
        f"{(c.started_at - t0).total_seconds():.1f}-{(c.finished_at - t0).total_seconds():.1f}s"
        f" {c.error}"
        for c in children
    ]
    assert batch.status == "succeeded", timeline
    slow.refresh_from_db()
    # Waves back to back: while the slow VM of the first wave still crossed, the other
    # slot took the next VMs one after another, each as soon as the one before ended
    # (waves as barriers would have started none of them before it ended).
    behind = [
        c
        for c in children
        if c != slow and slow.started_at < c.started_at and c.finished_at < slow.finished_at
    ]
    assert len(behind) >= 2, timeline
    # Never more than the limit out of the host at once.
    for child in children:
        at_once = [c for c in children if c.started_at <= child.started_at < c.finished_at]
        assert len(at_once) <= settings.MIGRATION_MAX_OUTGOING_PER_HOST
    # Every VM runs on exactly one host, none on the evacuated one.
    for child in children:
        running = labtools.running_on(linux_vm.hosts, str(child.vm_uuid))
        assert len(running) == 1 and running != [source.name], (child.vm_name, running)
