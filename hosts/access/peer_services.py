"""Host-to-host ssh trust for peer-to-peer migration, set up in idempotent steps: the
source's own key pair (its private half stays there), the destination's pinned host key
in the source's known_hosts, the source's key for the destination's user (restricted to
libvirt's helper), then a probe. The portal's own key is never put on a host."""

from __future__ import annotations

import logging
import shlex
from urllib.parse import urlencode

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts import actions
from hosts.access import ssh
from hosts.access.models import PEER_KEY_PATH, PeerTrust
from hosts.access.ssh_services import SshAccessError, remote_run, session_for_host, session_run
from hosts.models import Host, Transport, libvirt_uri_of

logger = logging.getLogger(__name__)

PEER_PROBE_TIMEOUT_S = 20
ROOT_KNOWN_HOSTS = "/root/.ssh/known_hosts"


class PeerTrustError(SshAccessError):
    """Trust between two hosts could not be set up; the message says what to do."""


def tls_peer_uri(destination: Host) -> str:
    """The source's URI for `destination` over TLS: no pkipath (its own client certificate)."""
    port = destination.port if destination.transport == Transport.TLS else None
    return libvirt_uri_of(Transport.TLS, destination.address, port, "")


def peer_uri(source: Host, destination: Host) -> str:
    if destination.transport == Transport.SSH:
        return f"{destination.libvirt_uri}?{urlencode({'keyfile': PEER_KEY_PATH, 'no_tty': 1})}"
    if destination.transport == Transport.TLS:
        return tls_peer_uri(destination)
    return destination.libvirt_uri


def peer_trust_needed(source: Host, destination: Host) -> bool:
    return destination.transport == Transport.SSH


def peer_trust_current(source: Host, destination: Host) -> PeerTrust | None:
    """The recorded trust if it still matches the destination (user, host key, sudo mode)."""
    trust = PeerTrust.objects.filter(source=source, destination=destination).first()
    if trust is None:
        return None
    if (
        trust.destination_user != destination.ssh_user
        or trust.destination_host_key_fingerprint != destination.ssh_host_key_fingerprint
        or trust.via_sudo != destination.ssh_libvirt_via_sudo
    ):
        return None
    return trust


def peer_trust_problem(source: Host, destination: Host) -> str | None:
    """Why the portal could not set up this trust (read-only, for pre-checks), or None."""
    if not peer_trust_needed(source, destination) or peer_trust_current(source, destination):
        return None
    for host, role in ((source, "source"), (destination, "destination")):
        if not (host.ssh_access_set_up_at and host.ssh_host_key):
            message = (
                gettext("the portal has no ssh access to the source %(host)s: set it up first")
                if role == "source"
                else gettext(
                    "the portal has no ssh access to the destination %(host)s: set it up first"
                )
            )
            return f"{message % {'host': host.name}} ({actions.ssh_access_set_up(host)})"
    return None


def _authorized_keys_line(public_line: str, destination: Host, source: Host) -> str:
    sudo = destination.ssh_libvirt_via_sudo
    helper = ssh.LIBVIRT_REMOTE_HELPER_SUDO if sudo else ssh.LIBVIRT_REMOTE_HELPER
    key_type, key_b64 = public_line.split()[:2]
    return f'restrict,command="{helper}" {key_type} {key_b64} portal-peer:{source.name}'


def _run(session: ssh.Session, command: str, what: str) -> str:
    return remote_run(session, command, what=what, error=PeerTrustError)


def peer_trust_ensure(*, source: Host, destination: Host, actor: Actor) -> PeerTrust | None:
    """Make sure `source` can open libvirt on `destination` over ssh (None if not ssh)."""
    if not peer_trust_needed(source, destination):
        return None
    trust = peer_trust_current(source, destination)
    if trust is not None:
        return trust
    problem = peer_trust_problem(source, destination)
    if problem:
        raise PeerTrustError(problem)

    known_line = ssh.known_hosts_line(
        destination.address, destination.ssh_port, destination.ssh_host_key
    )
    key_file = shlex.quote(PEER_KEY_PATH)
    with session_for_host(source, user=source.ssh_user, actor=actor) as session:
        make_key = (
            "umask 077 && mkdir -p /root/.ssh && chmod 700 /root/.ssh && "
            f"(test -f {key_file} || ssh-keygen -q -t ed25519 -N '' "
            f"-C {shlex.quote('portal-migration@' + source.name)} -f {key_file}) && "
            f"cat {key_file}.pub"
        )
        public_line = _run(
            session, ssh.as_root(make_key, source.ssh_user), "making the source's peer key"
        ).strip()
        pin = ssh.line_append_command(ROOT_KNOWN_HOSTS, known_line)
        _run(session, ssh.as_root(pin, source.ssh_user), "pinning the destination's host key")
    key = ssh.HostKey.from_line(public_line)
    authorized_line = _authorized_keys_line(public_line, destination, source)
    with session_for_host(destination, user=destination.ssh_user, actor=actor) as session:
        _run(session, ssh.authorized_key_command(authorized_line), "installing the source's key")
    uri = peer_uri(source, destination)
    with session_for_host(source, user=source.ssh_user, actor=actor) as session:
        probe = f"timeout {PEER_PROBE_TIMEOUT_S} virsh -q -c {shlex.quote(uri)} uri"
        status, _out, err = session_run(
            session, ssh.as_root(probe, source.ssh_user), timeout=40, error=PeerTrustError
        )
    if status != 0:
        raise PeerTrustError(
            f"{source.name} cannot open libvirt on {destination.name} over ssh "
            f"({err.strip() or f'exit {status}'}): check that {destination.name}'s ssh "
            f"answers on {destination.address}:{destination.ssh_port} from {source.name}, "
            f"and that its host key is still {destination.ssh_host_key_fingerprint}"
        )

    with transaction.atomic():
        trust, _created = PeerTrust.objects.update_or_create(
            source=source,
            destination=destination,
            defaults={
                "source_key": key.line,
                "source_key_fingerprint": key.fingerprint,
                "destination_user": destination.ssh_user,
                "destination_host_key_fingerprint": destination.ssh_host_key_fingerprint,
                "via_sudo": destination.ssh_libvirt_via_sudo,
                "authorized_keys_line": authorized_line,
                "known_hosts_line": known_line,
                "verified_at": timezone.now(),
            },
        )
        audit_event_record(
            actor=actor,
            event_type=EventType.HOST_PEER_TRUST_SET_UP,
            target=source,
            after={"destination": destination.name, "destination_user": destination.ssh_user},
            detail={
                "source": source.name,
                "destination": destination.name,
                "source_key_fingerprint": key.fingerprint,
                "destination_host_key_fingerprint": destination.ssh_host_key_fingerprint,
                "via_sudo": destination.ssh_libvirt_via_sudo,
                "steps": ["source key", "destination host key pinned", "key installed", "probe"],
            },
        )
    logger.info("peer trust %s -> %s set up", source.name, destination.name)
    return trust


# What the source's ssh says when the trust is no longer in place on one end.
PEER_REFUSALS = (
    "Permission denied",
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "host key is known",
)


def peer_trust_refused(*, source: Host, destination: Host, error: str, actor: Actor) -> str | None:
    """If a failed migration's ssh was refused, drop the trust (a retry sets it up again)."""
    if not peer_trust_needed(source, destination) or not any(r in error for r in PEER_REFUSALS):
        return None
    with transaction.atomic():
        trust = (
            PeerTrust.objects.select_for_update()
            .filter(source=source, destination=destination)
            .first()
        )
        if trust is not None:
            _trust_forget(trust, actor, reason="refused by ssh during a migration")
    return (
        f"{source.name}'s own ssh access to {destination.name} was refused: its key or "
        f"{destination.name}'s pinned host key is no longer in place. The portal sets it up "
        "again when the migration is retried; if the destination's host key changed, accept "
        f"the new key first ({actions.host_key_accept(destination)})"
    )


def peer_trust_remove(*, trust: PeerTrust, actor: Actor) -> None:
    """Undo `peer_trust_ensure`; the source's key pair goes once no other trust uses it."""
    source, destination = trust.source, trust.destination
    with session_for_host(destination, user=destination.ssh_user, actor=actor) as session:
        _run(
            session,
            ssh.line_remove_command("$HOME/.ssh/authorized_keys", trust.authorized_keys_line),
            "removing the source's key",
        )
    last = not PeerTrust.objects.filter(source=source).exclude(pk=trust.pk).exists()
    with session_for_host(source, user=source.ssh_user, actor=actor) as session:
        command = ssh.line_remove_command(ROOT_KNOWN_HOSTS, trust.known_hosts_line)
        if last:
            key_file = shlex.quote(PEER_KEY_PATH)
            command += f" && rm -f {key_file} {key_file}.pub"
        _run(session, ssh.as_root(command, source.ssh_user), "removing the pinned host key")
    with transaction.atomic():
        _trust_forget(trust, actor, reason="removed", source_key_deleted=last)


def _trust_forget(trust: PeerTrust, actor: Actor, *, reason: str, **detail) -> None:
    """Delete the record with its audit event (inside the caller's transaction)."""
    audit_event_record(
        actor=actor,
        event_type=EventType.HOST_PEER_TRUST_REMOVED,
        target=trust.source,
        before={"destination": trust.destination.name},
        detail={
            "source": trust.source.name,
            "destination": trust.destination.name,
            "source_key_fingerprint": trust.source_key_fingerprint,
            "reason": reason,
            **detail,
        },
    )
    trust.delete()
