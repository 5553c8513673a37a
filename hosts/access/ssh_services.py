"""SSH access set-up, host key pinning and acceptance (passwords: one login, never kept)."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts.access import credentials, ssh
from hosts.access.models import CredentialKind
from hosts.models import Host, Transport, ssh_port_of
from hosts.validators import validate_ssh_host_key

logger = logging.getLogger(__name__)

LIBVIRT_ACCESS_PROBE = "virsh -c qemu:///system uri"
# Marked for the catalogues; translated where it is shown (migrations_app/prechecks).
REMOTE_USER_NEEDS = gettext_noop(
    "the remote user needs root, membership of the group libvirt, or full sudo rights "
    "without a password"
)


class SshAccessError(Exception):
    """SSH set-up failed or a host key was refused; `field` names the input it is about."""

    def __init__(self, message: str, *, field: str = "remote_host") -> None:
        super().__init__(message)
        self.field = field


_USER_FIELDS = ("ssh_user", "ssh_access_user")


def _user_validate(user: str) -> None:
    """Validate `user` as the model's `ssh_user` (no text that would change the libvirt URI)."""
    try:
        if not user:
            raise ValidationError("This field may not be blank.", code="blank")
        Host._meta.get_field("ssh_user").run_validators(user)
    except ValidationError as exc:
        raise ValidationError({"user": exc.messages}) from exc


def _host_clean(host: Host) -> None:
    """full_clean, with errors on the ssh user fields reported as the request's `user`."""
    try:
        host.full_clean()
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for field, messages in exc.message_dict.items():
            name = "user" if field in _USER_FIELDS else field
            errors.setdefault(name, [])
            errors[name] += [m for m in messages if m not in errors[name]]
        raise ValidationError(errors) from exc


def _key_material(pem: bytes, public_line: str) -> credentials.Material:
    return credentials.Material(public_line, pem, ssh.HostKey.from_line(public_line).fingerprint)


def _portal_key_material() -> credentials.Material:
    """A key file already at SSH_KEY_PATH is adopted (hosts trust it), else a new key."""
    path = settings.SSH_KEY_PATH
    if path.exists():
        pem, public_line = ssh.portal_key_read(path)
        logger.info("the portal's ssh key %s is now kept in the database", path)
    else:
        pem, public_line = ssh.portal_key_generate()
    return _key_material(pem, public_line)


def portal_public_key() -> ssh.PortalKey:
    """The portal's ssh key (in the database, shared by all nodes), written to SSH_KEY_PATH."""
    path = settings.SSH_KEY_PATH
    how = f"adopted from {path}" if path.exists() else "made on first use"
    key = credentials.credential_ensure(CredentialKind.SSH_KEY, _portal_key_material, how=how)
    credentials.file_sync(path, key.private)
    credentials.file_sync(path.with_suffix(".pub"), f"{key.public}\n".encode(), mode=0o644)
    return ssh.PortalKey(private_path=path, public_line=key.public)


def portal_key_import(*, path: Path, actor: Actor) -> ssh.PortalKey:
    """Make the key in `path` the portal's ssh key on every node (hosts must trust it)."""
    pem, public_line = ssh.portal_key_read(path)
    credentials.credential_replace(
        CredentialKind.SSH_KEY,
        _key_material(pem, public_line),
        how=f"imported from {path}",
        actor=actor,
    )
    return portal_public_key()


def known_hosts_refresh() -> None:
    """Sync this node's known_hosts and ssh wrappers (for qemu+ssh) with the pinned keys."""
    # Plain values, no model instances: this runs before every ssh connection.
    rows = Host.objects.exclude(ssh_host_key="").order_by("name")
    entries = [
        (address, ssh_port_of(transport, port), key)
        for address, transport, port, key in rows.values_list(
            "address", "transport", "port", "ssh_host_key"
        )
    ]
    known_hosts = settings.SSH_KNOWN_HOSTS_PATH
    credentials.file_sync(known_hosts, ssh.known_hosts_text(entries).encode())
    credentials.file_sync(
        settings.SSH_COMMAND_PATH, ssh.ssh_command_script(known_hosts).encode(), mode=0o700
    )
    credentials.file_sync(
        settings.SSH_SUDO_COMMAND_PATH,
        ssh.ssh_command_script(known_hosts, remote_command=ssh.LIBVIRT_REMOTE_HELPER_SUDO).encode(),
        mode=0o700,
    )


def ssh_files_ensure(*hosts: Host) -> None:
    """Before libvirt connects to an ssh host: this node's ssh files match the database."""
    if any(h.transport == Transport.SSH for h in hosts):
        portal_public_key()
        known_hosts_refresh()


def _pinned(host: Host) -> ssh.HostKey | None:
    return ssh.HostKey.from_line(host.ssh_host_key) if host.ssh_host_key else None


def _scan(host: Host) -> ssh.HostKey | None:
    try:
        return ssh.host_key_scan(host.address, host.ssh_port)
    except ssh.SshError:
        return None


def host_key_first_contact(*, host: Host, actor: Actor) -> Host:
    """Pin a new host's key (trust on first use); if it does not answer, the connect says why."""
    offered = _scan(host)
    return host if offered is None else _host_key_pin(host=host, offered=offered, actor=actor)


def _host_key_pin(*, host: Host, offered: ssh.HostKey, actor: Actor) -> Host:
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.ssh_host_key:
            return host
        validate_ssh_host_key(offered.line)
        host.ssh_host_key = offered.line
        host.ssh_host_key_fingerprint = offered.fingerprint
        host.ssh_host_key_recorded_at = timezone.now()
        host.save()
        audit_event_record(
            actor=actor,
            event_type=EventType.HOST_HOST_KEY_RECORDED,
            target=host,
            after={"ssh_host_key_fingerprint": offered.fingerprint},
            detail={"trust": "first use"},
        )
        transaction.on_commit(known_hosts_refresh)
    return host


def host_key_mismatch_record(*, host: Host, mismatch: ssh.HostKeyMismatch, actor: Actor) -> Host:
    """Keep the changed key as pending, for an administrator to accept or not."""
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.ssh_host_key_pending != mismatch.offered.line:
            validate_ssh_host_key(mismatch.offered.line)
            host.ssh_host_key_pending = mismatch.offered.line
            host.ssh_host_key_pending_fingerprint = mismatch.offered.fingerprint
            host.ssh_host_key_pending_seen_at = timezone.now()
            host.save()
            audit_event_record(
                actor=actor,
                event_type=EventType.HOST_HOST_KEY_CHANGED,
                target=host,
                before={"ssh_host_key_fingerprint": mismatch.pinned.fingerprint},
                after={"ssh_host_key_pending_fingerprint": mismatch.offered.fingerprint},
            )
    return host


def host_key_accept(*, host: Host, fingerprint: str, actor: Actor) -> Host:
    """Accept the pending host key only if it still has the `fingerprint` the admin checked."""
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if not host.ssh_host_key_pending:
            raise SshAccessError(
                f"{host.name} has no changed host key waiting to be accepted.",
                field="fingerprint",
            )
        pending = host.ssh_host_key_pending_fingerprint
        if fingerprint != pending:
            raise SshAccessError(
                f"{fingerprint} is not the key waiting to be accepted for {host.name}: "
                f"the pending key is {pending}. Check that one before accepting it.",
                field="fingerprint",
            )
        before = host.ssh_host_key_fingerprint
        host.ssh_host_key = host.ssh_host_key_pending
        host.ssh_host_key_fingerprint = pending
        host.ssh_host_key_recorded_at = timezone.now()
        host.ssh_host_key_pending = host.ssh_host_key_pending_fingerprint = ""
        host.ssh_host_key_pending_seen_at = None
        _host_clean(host)
        host.save()
        audit_event_record(
            actor=actor,
            event_type=EventType.HOST_HOST_KEY_ACCEPTED,
            target=host,
            before={"ssh_host_key_fingerprint": before},
            after={"ssh_host_key_fingerprint": host.ssh_host_key_fingerprint},
        )
        transaction.on_commit(known_hosts_refresh)
    return host


def session_for_host(
    host: Host, *, user: str, actor: Actor, password: str | None = None
) -> ssh.Session:
    """An ssh session as `user` (password or the portal's key); a changed host key is refused."""
    key = portal_public_key()
    try:
        session, offered = ssh.session_open(
            address=host.address,
            port=host.ssh_port,
            user=user,
            pinned=_pinned(host),
            password=password,
            key_path=key.private_path,
        )
    except ssh.HostKeyMismatch as exc:
        host_key_mismatch_record(host=host, mismatch=exc, actor=actor)
        raise SshAccessError(str(exc)) from None
    except ssh.SshAuthenticationFailed as exc:
        raise SshAccessError(str(exc), field="password" if password else "user") from None
    except ssh.SshPasswordLoginRefused as exc:
        raise SshAccessError(str(exc), field="password") from None
    except ssh.SshError as exc:
        raise SshAccessError(str(exc)) from None
    if _pinned(host) is None:
        _host_key_pin(host=host, offered=offered, actor=actor)
    return session


def session_run(
    session: ssh.Session,
    command: str,
    *,
    timeout: float = 30.0,
    error: type[SshAccessError] = SshAccessError,
) -> tuple[int, str, str]:
    """session.run; a broken session or a timeout raises `error` (recorded by the caller:
    the host's or the migration's error, never a dead task or a 500)."""
    try:
        return session.run(command, timeout=timeout)
    except ssh.SshError as exc:
        raise error(str(exc)) from None


def remote_run(
    session: ssh.Session,
    command: str,
    *,
    what: str,
    timeout: float = 30.0,
    error: type[SshAccessError] = SshAccessError,
) -> str:
    """Run `command` and return its output; a failure raises `error` naming `what` failed."""
    try:
        status, out, err = session.run(command, timeout=timeout)
    except ssh.SshError as exc:  # the session broke or timed out: the caller records it
        raise error(f"{what} failed: {exc}") from None
    if status != 0:
        detail = (err or out).strip()[-400:] or f"exit {status}"
        hint = " (the ssh user needs passwordless sudo: sudo -n)" if "sudo" in err else ""
        raise error(f"{what} failed on {session.where}: {detail}{hint}")
    return out


def host_ssh_access_set_up(*, host: Host, user: str, password: str, actor: Actor) -> Host:
    """Install the portal's key for `user`, using `password` once; the host key and libvirt
    access are checked first, so a refusal changes nothing on the remote."""
    _user_validate(user)  # before anything is sent anywhere
    key = portal_public_key()
    with session_for_host(host, user=user, password=password, actor=actor) as session:
        via_sudo = False
        status, _out, err = session_run(session, LIBVIRT_ACCESS_PROBE)
        if status != 0 and user != "root":
            # Not in group libvirt: passwordless sudo will do (the helper runs `sudo -n`).
            status, _out, sudo_err = session_run(session, f"sudo -n {LIBVIRT_ACCESS_PROBE}")
            via_sudo = status == 0
            err = f"{err.strip()}; with sudo -n: {sudo_err.strip()}"
        if status != 0:
            raise SshAccessError(
                f"{user} on {host.name} cannot use libvirt ({err.strip() or 'virsh failed'}): "
                + REMOTE_USER_NEEDS,
                field="user",
            )
        status, _out, err = session_run(session, ssh.authorized_key_command(key.public_line))
        if status != 0:
            raise SshAccessError(
                f"could not add the portal's key for {user} on {host.name}: {err.strip()}",
                field="user",
            )
    # The key works on its own, without the password.
    host.refresh_from_db()
    probe = f"sudo -n {LIBVIRT_ACCESS_PROBE}" if via_sudo else LIBVIRT_ACCESS_PROBE
    with session_for_host(host, user=user, actor=actor) as session:
        status, _out, err = session_run(session, probe)
        if status != 0:
            raise SshAccessError(f"key login to {user}@{host.name} failed: {err.strip()}")

    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        before = {f: getattr(host, f) for f in ("transport", "ssh_user", "ssh_libvirt_via_sudo")}
        if host.transport != Transport.SSH:
            host.port = None  # the old port belonged to the old transport
        host.transport = Transport.SSH
        host.ssh_user = host.ssh_access_user = user
        host.ssh_access_set_up_at = timezone.now()
        host.ssh_libvirt_via_sudo = via_sudo
        _host_clean(host)
        host.save()
        audit_event_record(
            actor=actor,
            event_type=EventType.HOST_SSH_KEY_INSTALLED,
            target=host,
            before=before,
            after={"transport": host.transport, "ssh_user": user, "ssh_libvirt_via_sudo": via_sudo},
            detail={
                "user": user,
                "portal_key_fingerprint": key.fingerprint,
                "ssh_host_key_fingerprint": host.ssh_host_key_fingerprint,
            },
        )
        transaction.on_commit(known_hosts_refresh)
    logger.info("ssh access set up for %s@%s", user, host.name)
    return host


def host_key_check(*, host: Host, actor: Actor) -> str | None:
    """Was an unreachable ssh host's key changed? The message saying so, else None."""
    pinned = _pinned(host)
    offered = _scan(host) if pinned is not None else None
    if offered is None or offered == pinned:
        return None
    mismatch = ssh.HostKeyMismatch(host.address, pinned, offered)
    host_key_mismatch_record(host=host, mismatch=mismatch, actor=actor)
    return str(mismatch)
