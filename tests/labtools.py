"""Helpers for tests that look at the lab hosts directly with virsh (the ground truth)."""

from __future__ import annotations

import re
import time

from lab import layout, machines

ACTIVE = {"running", "paused", "in shutdown", "blocked"}


def domstate(host: layout.LabHost, domain: str) -> str | None:
    """virsh's state of `domain` (name or UUID) on `host`, or None if not defined there."""
    result = machines.virsh(host, "domstate", domain, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def where(hosts: list[layout.LabHost], uuid: str) -> dict[str, str]:
    """host name -> state, for every host that has the domain."""
    states = {h.name: domstate(h, uuid) for h in hosts}
    return {name: state for name, state in states.items() if state is not None}


def running_on(hosts: list[layout.LabHost], uuid: str) -> list[str]:
    return [name for name, state in where(hosts, uuid).items() if state == "running"]


def restart_where_running(hosts: list[layout.LabHost], uuid: str) -> None:
    """Power the domain off and on again where it runs (a guest whose kernel is dead)."""
    for host in hosts:
        if host.name in running_on([host], uuid):
            machines.virsh(host, "destroy", uuid)
            machines.virsh(host, "start", uuid)


def persistent(host: layout.LabHost, uuid: str) -> bool:
    """Is the domain's definition kept by libvirt (not only a running transient copy)?"""
    info = machines.virsh(host, "dominfo", uuid).stdout
    return re.search(r"^Persistent:\s+yes", info, re.MULTILINE) is not None


def domain_name(host: layout.LabHost, uuid: str) -> str:
    return machines.virsh(host, "domname", uuid).stdout.strip()


def normalize(
    hosts: list[layout.LabHost], uuid: str, *, home: layout.LabHost | None = None
) -> None:
    """Leave the domain defined and running on exactly one host, nothing elsewhere.

    Keeps it where it runs (or on `home` if it runs nowhere); removes every other
    definition, so the next test's pre-checks see a clean destination.
    """
    by_name = {h.name: h for h in hosts}
    states = where(hosts, uuid)
    keep = next((n for n, s in states.items() if s == "running"), None)
    paused = next((n for n, s in states.items() if s == "paused"), None)
    if keep is None and paused is not None:  # a test left it paused: resume it there
        keep = paused
        machines.virsh(by_name[keep], "resume", uuid)
    if keep is None:
        keep = home.name if home and home.name in states else next(iter(states))
        machines.virsh(by_name[keep], "start", uuid)
    for name, state in states.items():
        if name == keep:
            continue
        if state in ACTIVE:
            machines.virsh(by_name[name], "destroy", uuid, check=False)
        machines.virsh(by_name[name], "undefine", uuid, check=False)
    if domstate(by_name[keep], uuid) != "running":
        raise AssertionError(f"{uuid} is not running on {keep} after normalize")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class VMPlacement:
    """The lab hosts seen from one VM: where it runs, where it would go."""

    def __init__(self, hosts: list[layout.LabHost], uuid: str) -> None:
        self.hosts = hosts
        self.uuid = uuid
        self.by_name = {h.name: h for h in hosts}

    @property
    def source(self) -> layout.LabHost:
        (running,) = running_on(self.hosts, self.uuid)
        return self.by_name[running]

    def other(self, host: layout.LabHost) -> layout.LabHost:
        return next(h for h in self.hosts if h.name != host.name)


def request_migration(api, uuid: str, **payload) -> int:
    """POST the migrate action; asserts 202 + Location and returns the migration id."""
    response = api.post(f"/api/vms/{uuid}/migrate/", payload, format="json")
    assert response.status_code == 202, response.json()
    assert response["Location"] == f"/api/migrations/{response.json()['id']}/"
    return response.json()["id"]


def ssh_access(api, host_pk: int, lab_host: layout.LabHost) -> dict:
    """POST the host's ssh-access with the lab host's ssh user and password (used once);
    asserts 200 and that the host is now reached over ssh. Returns the host's JSON."""
    response = api.post(
        f"/api/hosts/{host_pk}/ssh-access/",
        {"user": lab_host.ssh_user, "password": lab_host.ssh_password},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["transport"] == "ssh"
    return response.json()


def disk_capacity(host: layout.LabHost, uuid: str, target: str) -> int:
    output = machines.virsh(host, "domblkinfo", uuid, target).stdout
    return int(re.search(r"Capacity:\s+(\d+)", output)[1])


def run_in_thread(migration_id: int):
    """Run the engine for `migration_id` in a thread of this process, as a worker would."""
    import threading

    from django.db import connection

    from migrations_app.worker.runner import migration_execute

    def target() -> None:
        try:
            migration_execute(migration_id=migration_id)
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def wait_until_migrating(migration_id: int, min_percent: float = 3.0):
    from migrations_app.models import Migration

    return wait_for(
        lambda: Migration.objects.filter(
            pk=migration_id, status="migrating", percent__gte=min_percent
        ).first(),
        timeout=90,
        what=f"migration {migration_id} to pass {min_percent}%",
    )


def lift_bandwidth_limit(api, migration_id: int, timeout: float = 20) -> None:
    """Tune the running migration to unlimited bandwidth so that it ends quickly.

    A 409 is retried while the record still says migrating: the job may be between two
    states libvirt will not tune in, or have just ended on its own (a guest slowed by a
    loaded machine dirties less than the limit, and the last pass then fits). It fails
    with the API's answer if the migration stays running and untunable."""
    from migrations_app.models import Migration

    deadline = time.monotonic() + timeout
    while True:
        response = api.post(
            f"/api/migrations/{migration_id}/tune/", {"bandwidth_mib_s": 0}, format="json"
        )
        if response.status_code == 200:
            return
        assert response.status_code == 409, (response.status_code, response.json())
        if Migration.objects.get(pk=migration_id).status != "migrating":
            return  # it ended by itself; the caller checks how
        assert time.monotonic() < deadline, f"tuning kept failing: {response.json()}"
        time.sleep(0.5)


def events_of(migration_id: int) -> list[str]:
    from audit.models import AuditEvent

    return list(
        AuditEvent.objects.filter(
            target_type="migrations_app.migration", target_id=str(migration_id)
        )
        .order_by("occurred_at", "id")
        .values_list("event_type", flat=True)
    )


def wait_final(migration_id: int, timeout: float = 180, interval: float = 0.2):
    """The migration once it is final (succeeded, failed or cancelled)."""
    from migrations_app.domain.lifecycle import FINAL_STATUSES
    from migrations_app.models import Migration

    return wait_for(
        lambda: Migration.objects.filter(pk=migration_id, status__in=FINAL_STATUSES).first(),
        timeout=timeout,
        what=f"migration {migration_id} to be final",
        interval=interval,
    )


def remove_extra_guests(config: layout.LabConfig) -> None:
    """Destroy and undefine every extra guest (LabConfig.extra_vms) on every running
    lab host, wherever migrations left it: the lab is as the other tests expect it."""
    for host in machines.status(config):
        if not host.running:
            continue
        names = machines.virsh(host, "list", "--all", "--name").stdout.split()
        for name in names:
            if "-extra-" in name:
                machines.virsh(host, "destroy", name, check=False)
                machines.virsh(host, "undefine", name, check=False)
