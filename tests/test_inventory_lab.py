"""Host and VM inventory against the real lab hypervisors (libvirtd + QEMU)."""

import re
import uuid

import pytest
from django.test import Client

from audit.models import AuditEvent
from hosts.models import Host
from lab import layout, machines
from listeners.tasks import poll_hosts
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.django_db]


def _dominfo(host: layout.LabHost, name: str) -> dict[str, str]:
    output = machines.virsh(host, "dominfo", name).stdout
    return {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in output.splitlines())
        if value
    }


def _refresh(api, host_id: int) -> dict:
    response = api.post(f"/api/hosts/{host_id}/refresh/")
    assert response.status_code == 200, response.json()
    return response.json()


def test_lab_hosts_register_refresh_and_report_capabilities(api, lab_hosts, lab_registered):
    for lab_host in lab_hosts:
        body = _refresh(api, lab_registered[lab_host.name].pk)
        assert body["status"] == "reachable", body["last_error"]
        assert body["libvirt_uri"] == f"qemu+tcp://{lab_host.address}/system"
        assert body["hypervisor_type"] == "QEMU"
        assert body["arch"] == "x86_64"
        capabilities = machines.virsh(lab_host, "capabilities").stdout
        assert body["host_uuid"] == re.search(r"<uuid>([0-9a-f-]+)</uuid>", capabilities)[1]
        assert (
            body["libvirt_version"]
            == re.search(r"libvirt ([\d.]+)", machines.virsh(lab_host, "version").stdout)[1]
        )
        assert body["memory_total_bytes"] > body["memory_free_bytes"] > 0
        assert body["migration_features"]["live"] is True
        assert "tcp" in body["migration_features"]["uri_transports"]
    # Hosts of one machine must still look like distinct hypervisors to libvirt.
    uuids = {api.get(f"/api/hosts/{h.pk}/").json()["host_uuid"] for h in lab_registered.values()}
    assert len(uuids) == len(lab_hosts) >= 2


def test_lab_vm_is_listed_as_virsh_reports_it(api, linux_vm, tiny_vm):
    first = linux_vm.source
    _refresh(api, Host.objects.get(name=first.name).pk)
    _refresh(api, Host.objects.get(name=tiny_vm.source.name).pk)
    listing = api.get("/api/vms/", {"host": first.name, "search": layout.LINUX_VM_NAME}).json()
    assert listing["count"] == 1
    vm = listing["results"][0]
    info = _dominfo(first, layout.LINUX_VM_NAME)
    assert vm["uuid"] == info["UUID"]
    assert vm["state"] == "running" == info["State"]
    assert vm["vcpus"] == int(info["CPU(s)"])
    assert vm["memory_kib"] == int(info["Used memory"].split()[0])
    assert vm["max_memory_kib"] == int(info["Max memory"].split()[0])
    assert vm["persistent"] is (info["Persistent"] == "yes")
    assert vm["arch"] == "x86_64"
    assert vm["domain_type"] == "qemu"
    assert vm["has_hostdev"] is False
    # The Linux guest's data disk is on the shared folder; the tiny guest's is local.
    assert [d["on_shared_storage"] for d in vm["disks"]] == [True]
    assert vm["disks"][0]["size_bytes"] > 0
    tiny = api.get("/api/vms/", {"host": tiny_vm.source.name, "search": layout.TINY_VM_NAME}).json()
    assert tiny["count"] == 1
    assert [d["on_shared_storage"] for d in tiny["results"][0]["disks"]] == [False]

    detail = api.get(f"/api/vms/{vm['uuid']}/").json()
    assert detail["name"] == layout.LINUX_VM_NAME
    assert detail["host"] == first.name
    by_prefix = api.get("/api/vms/", {"search": vm["uuid"][:8]}).json()
    assert [r["uuid"] for r in by_prefix["results"]] == [vm["uuid"]]
    running = api.get("/api/vms/", {"state": "running", "host": first.name}).json()
    assert layout.LINUX_VM_NAME in {r["name"] for r in running["results"]}
    bad_state = api.get("/api/vms/", {"state": "flying"})
    assert bad_state.status_code == 400
    assert "state" in bad_state.json()


def test_stopping_with_virsh_then_periodic_sync_shows_shut_off(api, lab_hosts, tiny_vm):
    first = tiny_vm.source
    machines.virsh(first, "destroy", layout.TINY_VM_NAME)
    try:
        statuses = poll_hosts()  # the function the django-q2 schedule runs
        assert statuses == {h.name: "reachable" for h in lab_hosts}
        vm = VM.objects.get(host__name=first.name, name=layout.TINY_VM_NAME)
        assert vm.state == "shut_off"
        assert _dominfo(first, layout.TINY_VM_NAME)["State"] == "shut off"
        api_state = api.get(f"/api/vms/{vm.uuid}/").json()["state"]
        assert api_state == "shut_off"
    finally:
        machines.virsh(first, "start", layout.TINY_VM_NAME)
    poll_hosts()
    assert VM.objects.get(host__name=first.name, name=layout.TINY_VM_NAME).state == "running"


def test_vanished_domain_is_marked_gone_not_deleted(api, lab_hosts, lab_registered, tmp_path):
    second = lab_hosts[1]
    second_id = lab_registered[second.name].pk
    name = f"ephemeral-{uuid.uuid4().hex[:8]}"
    xml = tmp_path / "domain.xml"
    xml.write_text(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
    )
    machines.virsh(second, "define", str(xml))
    try:
        _refresh(api, second_id)
        vm = VM.objects.get(host__name=second.name, name=name)
        assert vm.state == "shut_off"
        assert vm.persistent is True
    finally:
        machines.virsh(second, "undefine", name)
    _refresh(api, second_id)
    vm.refresh_from_db()
    assert vm.state == "gone"
    assert vm.gone_at is not None
    assert AuditEvent.objects.filter(event_type="vm.gone", target_id=str(vm.pk)).exists()
    gone = api.get("/api/vms/", {"state": "gone"}).json()
    assert [r["name"] for r in gone["results"]] == [name]


def test_unreachable_host_shows_the_error(api):
    # Nothing listens on 127.0.0.99: the connection is refused at once.
    host = api.post(
        "/api/hosts/",
        {"name": "nowhere", "address": "127.0.0.99", "transport": "tcp"},
        format="json",
    ).json()
    body = _refresh(api, host["id"])
    assert body["status"] == "unreachable"
    assert "127.0.0.99:16509" in body["last_error"]
    assert "refused" in body["last_error"].lower()
    assert body["last_error_at"] is not None
    assert AuditEvent.objects.filter(event_type="host.unreachable").count() == 1
    # A second failed refresh is not a new state change.
    _refresh(api, host["id"])
    assert AuditEvent.objects.filter(event_type="host.unreachable").count() == 1


def test_dashboard_shows_hosts_and_running_vm(api, admin_user, lab_hosts, linux_vm):
    browser = Client()
    assert browser.get("/").status_code == 302  # login first
    assert browser.login(username="admin", password="admin-pass-123")
    page = browser.get("/").content.decode()
    for lab_host in lab_hosts:
        assert f'data-host="{lab_host.name}"' in page
    vm = VM.objects.get(host__name=linux_vm.source.name, name=layout.LINUX_VM_NAME)
    row = re.search(rf'<tr data-vm="{vm.uuid}">(.*?)</tr>', page, re.S)[1]
    assert "Running" in row and linux_vm.source.name in row
