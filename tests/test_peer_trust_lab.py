"""Peer-to-peer migration over ssh between lab hosts that share nothing with the portal.

The source's libvirtd opens the destination with a key of its own, made on the source
(its private half never leaves it), installed for the destination's user restricted to
libvirt's helper, with the destination's pinned host key in the source's known_hosts.
Checked with the lab hosts' real sshd, libvirtd and QEMU; needs root (marker ``lab``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditEvent
from hosts.access.models import PEER_KEY_PATH, PeerTrust
from hosts.models import Host
from lab import layout
from migrations_app.models import Migration
from migrations_app.worker.runner import migration_execute
from tests import labtools
from tests.labtools import request_migration

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

TRUST_EVENTS = ("host.peer_trust_set_up", "host.peer_trust_removed")


def _in_host_root(lab_config, host: layout.LabHost, relative: str) -> Path:
    """A file of the host's /root, as the lab machine sees it."""
    return layout.host_dir(lab_config, host) / "root" / relative


def _authorized_keys(lab_config, host: layout.LabHost, home: str = "home") -> list[str]:
    path = layout.host_dir(lab_config, host) / home / ".ssh" / "authorized_keys"
    return path.read_text().splitlines() if path.exists() else []


def _ssh_access(api, lab_registered, lab_host: layout.LabHost, *, sudo_only: bool = False) -> Host:
    host = lab_registered[lab_host.name]
    user, password = (
        (lab_host.sudo_user, lab_host.sudo_password)
        if sudo_only
        else (lab_host.ssh_user, lab_host.ssh_password)
    )
    response = api.post(
        f"/api/hosts/{host.pk}/ssh-access/", {"user": user, "password": password}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["ssh_libvirt_via_sudo"] is sudo_only
    return Host.objects.get(pk=host.pk)


def _trust_events() -> list[str]:
    return list(
        AuditEvent.objects.filter(event_type__in=TRUST_EVENTS)
        .order_by("pk")
        .values_list("event_type", flat=True)
    )


def _migrate(api, vm, remote: layout.LabHost, **options) -> Migration:
    migration_id = request_migration(api, vm.uuid, remote_host=remote.name, **options)
    migration_execute(migration_id=migration_id)
    return Migration.objects.get(pk=migration_id)


def test_trust_is_set_up_once_private_key_stays_on_the_source_and_is_undone(
    api, linux_vm, lab_registered, lab_config
):
    lab_src = linux_vm.source
    lab_dst = linux_vm.other(lab_src)
    source = _ssh_access(api, lab_registered, lab_src)
    destination = _ssh_access(api, lab_registered, lab_dst)

    created = api.post(
        "/api/peer-trusts/", {"source": source.pk, "destination": destination.pk}, format="json"
    )
    assert created.status_code == 201, created.json()
    trust = created.json()
    again = api.post(
        "/api/peer-trusts/", {"source": source.pk, "destination": destination.pk}, format="json"
    )
    assert again.json()["id"] == trust["id"]
    assert _trust_events() == ["host.peer_trust_set_up"]  # the second call changed nothing

    # The key pair was made on the source; only its public half is known to the portal.
    private = _in_host_root(lab_config, lab_src, ".ssh/portal_migration_ed25519")
    assert Path(PEER_KEY_PATH).name == private.name
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    public = private.with_suffix(".pub").read_text().split()
    assert trust["source_key"] == f"{public[0]} {public[1]}"
    secret = "".join(private.read_text().splitlines()[1:-1])
    assert secret and secret not in str(list(PeerTrust.objects.values()))
    assert secret not in str(list(AuditEvent.objects.values()))
    grep = subprocess.run(
        # (the middle of the body: its start is the same for every OpenSSH ed25519 key)
        ["grep", "-rlF", secret[len(secret) // 2 : len(secret) // 2 + 40], str(settings.DATA_DIR)],
        capture_output=True,
        text=True,
    )
    leaked = [p for p in grep.stdout.split() if "/test-lab/" not in p]
    assert leaked == [], f"the source's private key is in the portal's files: {leaked}"

    # The destination's user got the key once, restricted to libvirt's helper.
    lines = [line for line in _authorized_keys(lab_config, lab_dst) if public[1] in line]
    assert lines == [trust["authorized_keys_line"]]
    assert lines[0].startswith('restrict,command="virt-ssh-helper qemu:///system" ')
    known = _in_host_root(lab_config, lab_src, ".ssh/known_hosts").read_text().splitlines()
    assert known.count(trust["known_hosts_line"]) == 1
    assert trust["destination_host_key_fingerprint"] == destination.ssh_host_key_fingerprint

    # Direct and tunnelled, there and back (back needs the reverse trust: made on demand).
    for remote, transport in ((lab_dst, "direct"), (lab_src, "tunnelled")):
        migration = _migrate(api, linux_vm, remote, transport=transport, delete_source=True)
        assert migration.status == "succeeded", migration.error
        assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {remote.name: "running"}
    assert PeerTrust.objects.count() == 2  # src -> dst, and dst -> src for the way back
    assert _trust_events().count("host.peer_trust_set_up") == 2

    removed = api.delete(f"/api/peer-trusts/{trust['id']}/")
    assert removed.status_code == 204, removed.json()
    assert not [line for line in _authorized_keys(lab_config, lab_dst) if public[1] in line]
    known = _in_host_root(lab_config, lab_src, ".ssh/known_hosts").read_text().splitlines()
    assert trust["known_hosts_line"] not in known
    assert not private.exists(), "the source's last trust is gone: so is its key pair"
    assert _trust_events()[-1] == "host.peer_trust_removed"


def test_sudo_only_user_is_enough(api, linux_vm, lab_registered, lab_config):
    """A destination user outside group libvirt with full sudo rights: the portal and
    the source reach libvirt through `sudo -n virt-ssh-helper`."""
    lab_src = linux_vm.source
    lab_dst = linux_vm.other(lab_src)
    groups = subprocess.run(["id", "-nG", lab_dst.sudo_user], capture_output=True, text=True)
    assert "libvirt" not in groups.stdout.split()
    _ssh_access(api, lab_registered, lab_src)
    destination = _ssh_access(api, lab_registered, lab_dst, sudo_only=True)
    assert destination.ssh_user == lab_dst.sudo_user
    refreshed = api.post(f"/api/hosts/{destination.pk}/refresh/").json()
    assert refreshed["status"] == "reachable", refreshed["last_error"]

    migration = _migrate(api, linux_vm, lab_dst, delete_source=True)
    assert migration.status == "succeeded", migration.error
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {lab_dst.name: "running"}
    trust = PeerTrust.objects.get(source__name=lab_src.name, destination=destination)
    assert trust.via_sudo
    assert trust.authorized_keys_line.startswith(
        'restrict,command="sudo -n virt-ssh-helper qemu:///system" '
    )
    assert trust.authorized_keys_line in _authorized_keys(lab_config, lab_dst, "home-sudo")


@pytest.mark.parametrize("removed", ["source key", "pinned host key"])
def test_trust_removed_behind_the_portals_back_fails_before_anything_moves(
    api, linux_vm, lab_registered, lab_config, removed
):
    lab_src = linux_vm.source
    lab_dst = linux_vm.other(lab_src)
    source = _ssh_access(api, lab_registered, lab_src)
    destination = _ssh_access(api, lab_registered, lab_dst)
    trust = api.post(
        "/api/peer-trusts/", {"source": source.pk, "destination": destination.pk}, format="json"
    ).json()
    if removed == "source key":
        path = layout.host_dir(lab_config, lab_dst) / "home" / ".ssh" / "authorized_keys"
        line = trust["authorized_keys_line"]
    else:
        path = _in_host_root(lab_config, lab_src, ".ssh/known_hosts")
        line = trust["known_hosts_line"]
    path.write_text("".join(f"{k}\n" for k in path.read_text().splitlines() if k != line))

    failed = _migrate(api, linux_vm, lab_dst, delete_source=True)
    assert failed.status == "failed"
    assert f"{lab_src.name}'s own ssh access to {lab_dst.name} was refused" in failed.error
    assert "sets it up again when the migration is retried" in failed.error
    # Nothing moved: the VM runs where it ran, with its definition, and nowhere else.
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {lab_src.name: "running"}
    assert not PeerTrust.objects.filter(pk=trust["id"]).exists()

    retried = _migrate(api, linux_vm, lab_dst, delete_source=True)
    assert retried.status == "succeeded", retried.error
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {lab_dst.name: "running"}


def test_source_without_ssh_access_fails_the_precheck(api, linux_vm, lab_registered):
    lab_src = linux_vm.source
    lab_dst = linux_vm.other(lab_src)
    _ssh_access(api, lab_registered, lab_dst)  # the source stays a tcp host
    checked = api.post(
        f"/api/vms/{linux_vm.uuid}/migrate/check/", {"remote_host": lab_dst.name}, format="json"
    ).json()
    peer = next(c for c in checked["checks"] if c["name"] == "peer_access")
    assert peer["status"] == "fail"
    assert f"no ssh access to the source {lab_src.name}" in peer["message"]
    migration = _migrate(api, linux_vm, lab_dst)
    assert migration.status == "failed" and migration.failure_reason == "precheck"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {lab_src.name: "running"}
