"""TLS use cases: the portal's CA and client files, and a host's certificates over ssh
(the host makes its own keys, which never leave it: only CSRs are signed here)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts import actions
from hosts.access import credentials, tls
from hosts.access.models import CredentialKind
from hosts.access.ssh import as_root
from hosts.access.ssh_services import SshAccessError, remote_run, session_for_host
from hosts.hypervisor import DEFAULT_PORTS
from hosts.models import Host, Transport

logger = logging.getLogger(__name__)

KEY_DIR = "/etc/pki/libvirt/private"
SERVED_WAIT_S = 20.0

# Run as root on the host: makes the two private keys once (kept on renewal) and
# prints a CSR for each. Nothing secret leaves: only the CSRs are printed.
_CSR_SCRIPT = f"""set -eu
umask 077
if ! command -v openssl >/dev/null 2>&1; then
  echo "openssl is not installed on this host (Debian: apt-get install openssl)" >&2
  exit 3
fi
mkdir -p {KEY_DIR}
chmod 700 {KEY_DIR}
for name in serverkey clientkey; do
  key={KEY_DIR}/$name.pem
  if [ ! -s "$key" ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key.tmp"
    mv "$key.tmp" "$key"
  fi
  chmod 600 "$key"
done
openssl req -new -key {KEY_DIR}/serverkey.pem -subj /CN=csr
openssl req -new -key {KEY_DIR}/clientkey.pem -subj /CN=csr
"""

_CSR_PATTERN = re.compile(
    r"-----BEGIN CERTIFICATE REQUEST-----.+?-----END CERTIFICATE REQUEST-----", re.DOTALL
)


def _install_script(*, ca_pem: str, server_pem: str, client_pem: str) -> str:
    """Run as root on the host: the certificates in place for libvirtd and QEMU."""

    def put(path: str, pem: str) -> str:
        return (
            f"cat > {path}.tmp <<'PORTAL_PEM'\n{pem.strip()}\nPORTAL_PEM\n"
            f"chmod 644 {path}.tmp\nmv {path}.tmp {path}\n"
        )

    return (
        "set -eu\numask 022\nmkdir -p /etc/pki/CA /etc/pki/libvirt/private /etc/pki/qemu\n"
        + put("/etc/pki/CA/cacert.pem", ca_pem)
        + put("/etc/pki/libvirt/servercert.pem", server_pem)
        + put("/etc/pki/libvirt/clientcert.pem", client_pem)
        # QEMU's migration TLS reads /etc/pki/qemu as the user QEMU runs as.
        + "qemu_user=$(sed -n 's/^[[:space:]]*user[[:space:]]*=[[:space:]]*\"\\(.*\\)\"/\\1/p'"
        " /etc/libvirt/qemu.conf 2>/dev/null | tail -n 1)\n"
        '[ -n "$qemu_user" ] || qemu_user=libvirt-qemu\n'
        'id "$qemu_user" >/dev/null 2>&1 || qemu_user=root\n'
        "install -m 644 /etc/pki/CA/cacert.pem /etc/pki/qemu/ca-cert.pem\n"
        "install -m 644 /etc/pki/libvirt/servercert.pem /etc/pki/qemu/server-cert.pem\n"
        "install -m 644 /etc/pki/libvirt/clientcert.pem /etc/pki/qemu/client-cert.pem\n"
        f'install -m 600 -o "$qemu_user" {KEY_DIR}/serverkey.pem /etc/pki/qemu/server-key.pem\n'
        f'install -m 600 -o "$qemu_user" {KEY_DIR}/clientkey.pem /etc/pki/qemu/client-key.pem\n'
    )


def _material(ca: tls.CertificateAuthority) -> credentials.Material:
    return credentials.Material(ca.cert_pem, tls.key_pem(ca.key), ca.fingerprint)


def _ca_material() -> credentials.Material:
    """A CA already in TLS_CA_DIR is adopted (hosts trust it), else a new one."""
    ca = tls.ca_load(settings.TLS_CA_DIR)
    if ca is not None:
        logger.info("the portal's CA in %s is now kept in the database", settings.TLS_CA_DIR)
    else:
        ca = tls.ca_create()
    return _material(ca)


def portal_ca() -> tls.CertificateAuthority:
    """The portal's CA, shared by all nodes via the database; its key never goes to a file."""
    legacy = settings.TLS_CA_DIR / "cakey.pem"
    how = f"adopted from {settings.TLS_CA_DIR}" if legacy.exists() else "made on first use"
    stored = credentials.credential_ensure(CredentialKind.TLS_CA, _ca_material, how=how)
    return tls.ca_from_pem(stored.private, stored.public)


def portal_ca_rotate(*, actor: Actor) -> tls.CertificateAuthority:
    """A new CA; hosts trust the old one until each is given new certificates."""
    ca = tls.ca_create()
    credentials.credential_replace(CredentialKind.TLS_CA, _material(ca), how="rotated", actor=actor)
    return ca


def portal_client() -> tls.ClientFiles:
    """The portal's `pkipath` client folder, synced from the database; the certificate is
    issued once for all nodes and again when the CA changed or it is due for renewal."""
    ca = portal_ca()

    def current(found: credentials.Credential) -> bool:
        return tls.client_current(found.public, ca)

    def issue() -> credentials.Material:
        cert_pem, key_pem = tls.client_issue(ca)
        return credentials.Material(cert_pem, key_pem, tls.cert_info(cert_pem).fingerprint)

    client = credentials.credential_ensure(CredentialKind.TLS_CLIENT, issue)
    if not current(client):
        client = credentials.credential_replace(
            CredentialKind.TLS_CLIENT, issue(), how="renewed", unless=current
        )
    folder = settings.TLS_CLIENT_DIR
    credentials.file_sync(folder / "cacert.pem", ca.cert_pem.encode(), mode=0o644)
    credentials.file_sync(folder / "clientcert.pem", client.public.encode(), mode=0o644)
    credentials.file_sync(folder / "clientkey.pem", client.private)
    return tls.ClientFiles(folder=folder, cert=tls.load_certificate(client.public))


def tls_files_ensure(*hosts: Host) -> None:
    """Before libvirt connects to a tls host: this node's client folder matches the database."""
    if any(h.transport == Transport.TLS for h in hosts):
        portal_client()


def _tls_port(host: Host) -> int:
    return host.port if host.transport == Transport.TLS and host.port else DEFAULT_PORTS["tls"]


def _served_pem(host: Host, client: tls.ClientFiles) -> str:
    return tls.served_certificate(host.address, _tls_port(host), client=client)


def _served_fingerprint(host: Host, wait_s: float) -> str:
    """The served certificate's fingerprint, '' if there is no answer within `wait_s`."""
    client = portal_client()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return tls.cert_info(_served_pem(host, client)).fingerprint
        except tls.TlsError:
            if time.monotonic() > deadline:
                return ""
            time.sleep(0.5)


def host_tls_issue(
    *,
    host: Host,
    actor: Actor,
    restart_libvirtd: bool = True,
    client_not_after: dt.datetime | None = None,
) -> Host:
    """Issue (or renew) the host's TLS certificates over ssh and install them; the host's
    keys are made once and kept. `client_not_after` is for drills and tests."""
    user = host.ssh_access_user
    if not user:
        raise SshAccessError(
            gettext(
                "%(host)s: set up ssh access first (%(action)s): the certificates are "
                "installed over the portal's ssh session"
            )
            % {"host": host.name, "action": actions.ssh_access_set_up(host)},
            field="non_field_errors",
        )
    ca = portal_ca()
    with session_for_host(host, user=user, actor=actor) as session:

        def run_as_root(script: str, what: str, timeout: float = 60.0) -> str:
            return remote_run(session, as_root(script, user), what=what, timeout=timeout)

        out = run_as_root(_CSR_SCRIPT, "making the keys and certificate requests")
        csrs = _CSR_PATTERN.findall(out)
        if len(csrs) != 2:
            raise SshAccessError(
                f"{host.name} printed no certificate requests", field="non_field_errors"
            )
        sign = functools.partial(tls.csr_sign, ca, host_name=host.name, address=host.address)
        try:
            server_pem = sign(csrs[0], kind="server")
            client_pem = sign(csrs[1], kind="client", not_after=client_not_after)
        except tls.TlsError as exc:
            raise SshAccessError(str(exc), field="non_field_errors") from None
        run_as_root(
            _install_script(ca_pem=ca.cert_pem, server_pem=server_pem, client_pem=client_pem),
            "installing the certificates",
        )
        restart = settings.TLS_RESTART_COMMAND
        restarted = bool(restart_libvirtd and restart)
        if restarted:
            run_as_root(restart, f"restarting libvirtd ({restart})", timeout=120.0)
    server, client = tls.cert_info(server_pem), tls.cert_info(client_pem)
    # A host reached over tls must serve the new certificate; another may not listen
    # for TLS (yet): one short look.
    wait = SERVED_WAIT_S if restarted and host.transport == Transport.TLS else 2.0
    served = _served_fingerprint(host, wait)

    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        old_end = host.tls_server_not_after
        before = {
            "tls_server_fingerprint": host.tls_server_fingerprint,
            "tls_server_not_after": old_end.isoformat() if old_end else None,
        }
        host.tls_ca_fingerprint = ca.fingerprint
        host.tls_server_cert = server_pem
        host.tls_server_fingerprint = server.fingerprint
        host.tls_server_not_after = server.not_after
        host.tls_client_cert = client_pem
        host.tls_client_not_after = client.not_after
        host.tls_issued_at = timezone.now()
        host.save()
        audit_event_record(
            actor=actor,
            event_type=EventType.HOST_TLS_ISSUED,
            target=host,
            before=before,
            after={
                "tls_server_fingerprint": server.fingerprint,
                "tls_server_not_after": server.not_after.isoformat(),
            },
            detail={
                "ca_fingerprint": ca.fingerprint,
                "server": server.as_dict(),
                "client": client.as_dict(),
                "user": user,
                "served_fingerprint": served,
            },
        )
        if restarted:
            audit_event_record(
                actor=actor,
                event_type=EventType.HOST_LIBVIRTD_RESTARTED,
                target=host,
                detail={"command": restart, "reason": "TLS certificates"},
            )
    logger.info("TLS certificates issued for %s (server %s)", host.name, server.fingerprint)
    return host


def host_tls_problems(host: Host, *, role: str, now: dt.datetime | None = None) -> list[str]:
    """What in the portal's record stops `host` from a TLS migration, each with what to do."""
    renew = f"issue new ones with {actions.tls_issue(host)}"
    if not host.has_tls_certificates:
        return [
            f"{host.name} has no TLS certificates from the portal: set up ssh access, then "
            f"{actions.tls_issue(host)}"
        ]
    ca = portal_ca()
    problems = []
    pems = [("client", host.tls_client_cert), ("server", host.tls_server_cert)]
    for kind, pem in pems:
        found = tls.cert_problem(
            pem, ca.cert, what=f"the TLS {kind} certificate of {host.name}", now=now
        )
        if found:
            problems.append(f"{found}: {renew}")
    return problems


def host_tls_served_problem(host: Host) -> str | None:
    """What is wrong with the certificate libvirtd really serves (another CA, expired), or None."""
    port = _tls_port(host)
    try:
        pem = _served_pem(host, portal_client())
    except tls.TlsRefused as exc:
        return f"{host.name}'s served certificate was not checked: {exc}"
    except tls.TlsError as exc:
        return (
            f"{host.name} does not answer TLS on {host.address}:{port} ({exc}): is libvirtd "
            f"listening for TLS (listen_tls = 1)? Issue certificates with "
            f"{actions.tls_issue(host)}"
        )
    found = tls.cert_problem(
        pem, portal_ca().cert, what=f"the certificate {host.name} serves on {host.address}:{port}"
    )
    if found:
        return f"{found}: issue new ones with {actions.tls_issue(host)}"
    return None
