"""TLS on real lab hosts: certificates issued over ssh (the host's keys made on the
host), TLS-only libvirtds, peer-to-peer migrations with QEMU's stream encrypted, and
the failures that must stop a migration before anything moves.

Two TLS-only lab hosts of their own (LabConfig.tls_hosts), apart from the session's
lab: until certificates are installed their libvirtd listens on the unix socket only,
afterwards on TLS only. Needs root (marker ``lab``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditEvent
from audit.services import Actor
from hosts.access import tls, tls_services
from hosts.models import Host
from lab import layout, lifecycle, machines, proc
from migrations_app.models import Migration
from migrations_app.worker.runner import migration_execute
from tests import lab_session, labtools
from tests.labtools import request_migration
from tests.test_browser_e2e import page, portal  # noqa: F401  (fixtures of the browser test)

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

VM_NAME = "tls-tiny"
_first = ipaddress.IPv4Address(os.environ.get("TEST_LAB_FIRST_ADDRESS", "127.0.0.12"))
FIRST_ADDRESS = os.environ.get("TEST_TLS_LAB_FIRST_ADDRESS", str(_first + 5))


def _config() -> layout.LabConfig:
    data = Path(settings.DATA_DIR)
    return layout.LabConfig(
        root=data / "test-lab-tls",
        image_cache=Path(os.environ.get("TEST_LAB_IMAGE_CACHE", data / "guest-images")),
        first_address=FIRST_ADDRESS,
        name_prefix="tlslab",
        private_paths=lab_session.PRIVATE_PATHS,
        start_vms=False,
        tls_hosts=(1, 2),
    )


def _tiny_xml() -> str:
    return f"""<domain type='qemu'>
  <name>{VM_NAME}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices><emulator>{layout.QEMU}</emulator><memballoon model='none'/></devices>
</domain>
"""


@pytest.fixture(scope="module")
def tls_lab():
    if os.geteuid() != 0:
        pytest.fail("LAB TESTS NEED ROOT", pytrace=False)
    config = _config()
    hosts = lifecycle.up(config, hosts=2)
    placed = [h for h in hosts if labtools.domstate(h, VM_NAME) is not None]
    if not placed:
        xml = layout.host_dir(config, hosts[0]) / "state" / "tls-tiny.xml"
        xml.write_text(_tiny_xml())
        machines.virsh(hosts[0], "define", str(xml))
        placed = [hosts[0]]
    if not any(labtools.domstate(h, VM_NAME) == "running" for h in placed):
        machines.virsh(placed[0], "start", VM_NAME)
    try:
        yield config, hosts
    finally:
        if not os.environ.get("PORTAL_KEEP_TEST_LAB"):
            lifecycle.down(config)


def _uuid(hosts) -> str:
    for host in hosts:
        found = machines.virsh(host, "domuuid", VM_NAME, check=False)
        if found.returncode == 0:
            return found.stdout.strip()
    raise AssertionError(f"{VM_NAME} is defined nowhere")


def _source_and_other(hosts):
    running = [h for h in hosts if labtools.domstate(h, VM_NAME) == "running"]
    assert len(running) == 1, {h.name: labtools.domstate(h, VM_NAME) for h in hosts}
    return running[0], next(h for h in hosts if h is not running[0])


def _register_over_ssh(api, lab_host: layout.LabHost) -> Host:
    created = api.post(
        "/api/hosts/",
        {"name": lab_host.name, "address": lab_host.address, "transport": "ssh"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    labtools.ssh_access(api, pk, lab_host)
    return Host.objects.get(pk=pk)


def _issue(api, host: Host) -> dict:
    response = api.post(f"/api/hosts/{host.pk}/tls/", {}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def _to_tls(api, host: Host) -> dict:
    changed = api.patch(f"/api/hosts/{host.pk}/", {"transport": "tls"}, format="json")
    assert changed.status_code == 200, changed.json()
    refreshed = api.post(f"/api/hosts/{host.pk}/refresh/").json()
    assert refreshed["status"] == "reachable", refreshed["last_error"]
    return refreshed


@pytest.fixture
def tls_registered(api, tls_lab):
    """Both TLS-only hosts registered, certificates issued over ssh, reached over tls."""
    _config_, hosts = tls_lab
    registered = {}
    for lab_host in hosts:
        host = _register_over_ssh(api, lab_host)
        _issue(api, host)
        _to_tls(api, host)
        registered[lab_host.name] = Host.objects.get(pk=host.pk)
    return registered


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pki(config, host: layout.LabHost) -> Path:
    return layout.host_dir(config, host) / "pki"


def _listening(address: str, port: int) -> bool:
    return proc.listening(address, port)


def test_certificates_are_made_over_ssh_and_keys_stay_on_the_host(api, tls_lab):
    config, hosts = tls_lab
    lab_host = hosts[1]
    pki = _pki(config, lab_host)
    if not (pki / "libvirt" / "servercert.pem").exists():
        # A fresh TLS-only host: no network listener at all, only the unix socket.
        assert not _listening(lab_host.address, layout.LIBVIRT_TLS_PORT)
        assert not _listening(lab_host.address, layout.LIBVIRT_TCP_PORT)
        assert machines.virsh(lab_host, "uri").stdout.strip() == "qemu:///system"
    host = _register_over_ssh(api, lab_host)

    body = _issue(api, host)
    keys = {name: pki / "libvirt" / "private" / name for name in ("serverkey.pem", "clientkey.pem")}
    for key in keys.values():
        assert oct(key.stat().st_mode & 0o777) == "0o600", key
    first_keys = {name: _sha(path) for name, path in keys.items()}
    server_pem = (pki / "libvirt" / "servercert.pem").read_text()
    info = tls.cert_info(server_pem)
    assert body["tls_server_fingerprint"] == info.fingerprint
    assert set(info.names) == {lab_host.address, lab_host.name}
    assert (pki / "CA" / "cacert.pem").read_text() == tls_services.portal_ca().cert_pem
    # QEMU's copies, made on the host.
    qemu = pki / "qemu"
    assert sorted(p.name for p in qemu.iterdir()) == [
        "ca-cert.pem",
        "client-cert.pem",
        "client-key.pem",
        "server-cert.pem",
        "server-key.pem",
    ]
    assert _sha(qemu / "server-key.pem") == first_keys["serverkey.pem"]
    assert oct((qemu / "client-key.pem").stat().st_mode & 0o777) == "0o600"
    # The private keys never reached the portal: no file of its data folder holds them.
    # grep in a process of its own: reading the SQLite files here would drop this
    # process's locks on them (POSIX locks are per process) and corrupt the WAL.
    for name in keys:
        key_text = "".join(keys[name].read_text().splitlines()[1:-1])
        needle = key_text[len(key_text) // 2 : len(key_text) // 2 + 40]
        found = subprocess.run(
            ["grep", "-rlF", f"--exclude-dir={config.root.name}", needle, str(settings.DATA_DIR)],
            capture_output=True,
            text=True,
        )
        assert found.stdout.split() == [], f"{name} is in the portal's files: {found.stdout}"
    # libvirtd was restarted by the lab's `systemctl` and serves TLS only.
    assert _listening(lab_host.address, layout.LIBVIRT_TLS_PORT)
    assert not _listening(lab_host.address, layout.LIBVIRT_TCP_PORT)
    served = tls.served_certificate(lab_host.address, layout.LIBVIRT_TLS_PORT)
    assert tls.cert_info(served).fingerprint == info.fingerprint

    # Again: the same keys, a new certificate; each run audited.
    again = _issue(api, host)
    assert {name: _sha(path) for name, path in keys.items()} == first_keys
    assert again["tls_server_fingerprint"] != body["tls_server_fingerprint"]
    events = list(
        AuditEvent.objects.filter(target_id=str(host.pk)).values_list("event_type", flat=True)
    )
    assert events.count("host.tls_issued") == 2
    assert events.count("host.libvirtd_restarted") == 2
    assert again["tls_server_not_after"] and again["tls_client_not_after"]
    refreshed = _to_tls(api, host)
    assert refreshed["libvirt_uri"] == f"qemu+tls://{lab_host.address}/system"


def _watch_tls_creds(lab_host: layout.LabHost, stop: threading.Event, seen: list[str]) -> None:
    """Poll the source QEMU's migration parameters from one virsh shell: a tiny guest's
    stream has its TLS credentials for under a second, shorter than starting a virsh
    process and connecting takes on a busy machine."""
    # virsh's shell echoes each command and prints its prompt without a newline: the
    # mark is quoted in the command so that only echo's output contains it whole.
    mark = b"tls-watch-mark"
    poll = f"qemu-monitor-command --hmp {VM_NAME} 'info migrate_parameters'\n"
    poll += 'echo tls-watch-"mark"\n'
    shell = subprocess.Popen(
        machines.virsh_argv(lab_host),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not stop.is_set() and shell.poll() is None:
            shell.stdin.write(poll.encode())
            shell.stdin.flush()
            answer = b""
            while mark not in answer:
                chunk = os.read(shell.stdout.fileno(), 65536)
                if not chunk:
                    return
                answer += chunk
            match = re.search(rb"^tls-creds: (.*)$", answer, re.MULTILINE)
            value = match.group(1).decode().strip().strip("'\"") if match else ""
            if value:
                seen.append(value)
    finally:
        shell.kill()
        shell.wait()


def _migrate(api, hosts, destination: layout.LabHost, *, tls_on: bool, watch=None):
    uuid = _uuid(hosts)
    migration_id = request_migration(api, uuid, remote_host=destination.name, tls=tls_on)
    stop, seen = threading.Event(), []
    watcher = None
    if watch is not None:
        watcher = threading.Thread(target=_watch_tls_creds, args=(watch, stop, seen), daemon=True)
        watcher.start()
    try:
        status = migration_execute(migration_id=migration_id)
    finally:
        stop.set()
        if watcher:
            watcher.join(15)
    return Migration.objects.get(pk=migration_id), status, seen


def test_migrations_between_tls_hosts_encrypted_and_not(api, tls_lab, tls_registered):
    config, hosts = tls_lab
    source, destination = _source_and_other(hosts)
    for host in tls_registered.values():
        assert host.transport == "tls"

    migration, status, seen = _migrate(api, hosts, destination, tls_on=True, watch=source)
    assert status == "succeeded", migration.error
    assert migration.tls is True
    assert labtools.running_on(hosts, _uuid(hosts)) == [destination.name]
    # While it ran, the source QEMU's migration had TLS credentials.
    assert seen, "tls-creds never seen set on the source during the migration"
    assert set(seen) == {"objlibvirt_migrate_tls0"}, seen
    check = next(c for c in migration.checks if c["name"] == "tls_certificates")
    assert check["status"] == "pass", check

    # Back without tls: works too, and QEMU's stream had no TLS credentials.
    migration, status, seen = _migrate(api, hosts, source, tls_on=False, watch=destination)
    assert status == "succeeded", migration.error
    assert seen == []
    assert labtools.running_on(hosts, _uuid(hosts)) == [source.name]

    # Proof that the first one really used TLS: without QEMU's certificates on the
    # destination, a tls migration fails (and the VM keeps running where it was).
    qemu = _pki(config, destination) / "qemu"
    saved = {p.name: p.read_bytes() for p in qemu.iterdir()}
    for path in qemu.iterdir():
        path.unlink()
    try:
        migration, status, _ = _migrate(api, hosts, destination, tls_on=True)
        assert status == "failed"
        assert migration.failure_reason == "libvirt", migration.error
        assert labtools.running_on(hosts, _uuid(hosts)) == [source.name]
        # ...while one without TLS still goes.
        migration, status, _ = _migrate(api, hosts, destination, tls_on=False)
        assert status == "succeeded", migration.error
        migration, status, _ = _migrate(api, hosts, source, tls_on=False)
        assert status == "succeeded", migration.error
    finally:
        for name, data in saved.items():
            (qemu / name).write_bytes(data)
            (qemu / name).chmod(0o600 if name.endswith("key.pem") else 0o644)


def _refused(api, hosts, destination, *, tls_on: bool) -> Migration:
    before = labtools.where(hosts, _uuid(hosts))
    migration, status, _ = _migrate(api, hosts, destination, tls_on=tls_on)
    assert status == "failed"
    assert migration.failure_reason == "precheck", migration.error
    assert labtools.where(hosts, _uuid(hosts)) == before  # nothing moved
    return migration


def _tls_check(migration: Migration) -> dict:
    return next(c for c in migration.checks if c["name"] == "tls_certificates")


def test_expired_certificate_fails_before_anything_moves(api, tls_lab, tls_registered):
    _config, hosts = tls_lab
    source, destination = _source_and_other(hosts)
    src = tls_registered[source.name]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    tls_services.host_tls_issue(host=src, actor=Actor.system("test"), client_not_after=past)
    migration = _refused(api, hosts, destination, tls_on=True)
    check = _tls_check(migration)
    assert check["status"] == "fail"
    assert f"the TLS client certificate of {source.name} expired on" in check["message"]
    assert f'"Issue TLS certificates" on the host page of {source.name}' in check["message"]
    # Renewed, it goes.
    _issue(api, src)
    migration, status, _ = _migrate(api, hosts, destination, tls_on=True)
    assert status == "succeeded", migration.error


def test_destination_without_certificates_is_refused(api, tls_lab):
    _config, hosts = tls_lab
    source, destination = _source_and_other(hosts)
    src = _register_over_ssh(api, source)
    _issue(api, src)
    _to_tls(api, src)
    dst = _register_over_ssh(api, destination)  # reached over ssh, no certificates
    api.post(f"/api/hosts/{dst.pk}/refresh/")
    migration = _refused(api, hosts, destination, tls_on=True)
    check = _tls_check(migration)
    assert check["message"] == (
        f"needed for the tls option: {destination.name} has no TLS certificates from the "
        f'portal: set up ssh access, then "Issue TLS certificates" on the host page of '
        f"{destination.name}"
    )
    # The check endpoint says the same before anything is recorded.
    response = api.post(
        f"/api/vms/{_uuid(hosts)}/migrate/check/",
        {"remote_host": destination.name, "tls": True},
        format="json",
    )
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["tls_certificates"]["status"] == "fail"


def test_a_certificate_of_another_ca_is_named(api, tls_lab, tls_registered):
    config, hosts = tls_lab
    source, destination = _source_and_other(hosts)
    dst = tls_registered[destination.name]
    pki = _pki(config, destination)
    # Someone installs a server certificate from another CA for the host's own key.
    csr = subprocess.run(
        ["nsenter", "-t", Path(destination.holder_pid_file).read_text().strip(), "-m"]
        + ["openssl", "req", "-new", "-key", "/etc/pki/libvirt/private/serverkey.pem"]
        + ["-subj", "/CN=x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rogue = tls.ca_create(name="Rogue CA")
    pem = tls.csr_sign(
        rogue, csr, kind="server", host_name=destination.name, address=destination.address
    )
    (pki / "libvirt" / "servercert.pem").write_text(pem)
    (pki / "CA" / "cacert.pem").write_text(rogue.cert_pem)
    subprocess.run(
        ["nsenter", "-t", Path(destination.holder_pid_file).read_text().strip(), "-m"]
        + ["/usr/local/sbin/systemctl", "restart", "libvirtd"],
        check=True,
        timeout=90,
    )
    try:
        migration = _refused(api, hosts, destination, tls_on=False)
        message = _tls_check(migration)["message"]
        assert (
            f"the certificate {destination.name} serves on {destination.address}:16514 was not "
            "issued by the portal's CA (its issuer is CN=Rogue CA)"
        ) in message
        assert f'"Issue TLS certificates" on the host page of {destination.name}' in message
    finally:
        _issue(api, dst)  # the portal's own again
    assert tls_services.host_tls_served_problem(Host.objects.get(pk=dst.pk)) is None


@pytest.mark.browser
def test_encrypted_migration_from_the_dialog(api, tls_lab, tls_registered, portal, page):  # noqa: F811
    """The migrate dialog between two TLS-only hosts, with "Encrypt the migration
    stream" ticked: the record says tls, and the VM runs on the other host only."""
    from playwright.sync_api import expect

    from tests.test_browser_e2e import ARTIFACTS, _log_in

    _config_, hosts = tls_lab
    uuid = _uuid(hosts)
    source, destination = _source_and_other(hosts)
    _log_in(page, portal)
    page.goto(f"{portal.url}/vms/{uuid}/")
    expect(page.locator("h1")).to_contain_text(VM_NAME)
    page.click("#vm-actions summary")
    page.get_by_role("button", name="Migrate…").click()
    dialog = page.locator("#migrate-dialog")
    expect(dialog).to_be_visible()
    dialog.locator(f"#mig-host-choices [data-host='{destination.name}']").click()
    dialog.locator("#mig-advanced summary").click()
    dialog.locator("input[name=tls]").check()
    dialog.get_by_role("button", name="Start").click()
    expect(dialog.locator("[data-field=outcome]")).to_contain_text(
        "Migration succeeded", timeout=120_000
    )
    dialog.screenshot(path=str(ARTIFACTS / "tls-encrypted-migration.png"))
    record = Migration.objects.filter(vm_uuid=uuid).latest("pk")
    assert (record.status, record.tls) == ("succeeded", True), record.error
    assert record.destination.transport == "tls"
    states = {h.name: labtools.domstate(h, VM_NAME) for h in hosts}
    assert states[destination.name] == "running" and states[source.name] != "running"
    assert page.js_errors == []
