"""SSH to hosts (the only module that imports paramiko): keys, host key checks, commands.

A host key other than the pinned one is refused; passwords are never kept or shown.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hosts.hypervisor import for_users
from hosts.networks import AddressRefused, connect_checked

CONNECT_TIMEOUT_S = 10.0


class SshError(Exception):
    """An ssh operation failed; the message is safe to show (no secret, no portal path)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(for_users(str(message)), *args)


class SshUnreachable(SshError):
    pass


class SshRefused(SshError):
    """The address is outside PORTAL_HOST_NETWORKS: it was not contacted."""


class SshAuthenticationFailed(SshError):
    pass


class SshPasswordLoginRefused(SshError):
    pass


class HostKeyMismatch(SshError):
    def __init__(self, address: str, pinned: HostKey, offered: HostKey) -> None:
        self.pinned = pinned
        self.offered = offered
        super().__init__(
            f"the ssh host key of {address} changed: it was {pinned.fingerprint}, "
            f"it is now {offered.fingerprint}. Connection refused until an administrator "
            "accepts the new key."
        )


@dataclass(frozen=True)
class HostKey:
    key_type: str
    base64: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def line(self) -> str:
        return f"{self.key_type} {self.base64}"

    @classmethod
    def from_line(cls, line: str) -> HostKey:
        key_type, b64 = line.split()[:2]
        return cls(key_type, b64)

    @classmethod
    def from_paramiko(cls, key: paramiko.PKey) -> HostKey:
        return cls(key.get_name(), key.get_base64())


@dataclass(frozen=True)
class PortalKey:
    private_path: Path
    public_line: str

    @property
    def fingerprint(self) -> str:
        return HostKey.from_line(self.public_line).fingerprint


def portal_key_generate(comment: str = "live-migration-portal") -> tuple[bytes, str]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return pem, f"{public.decode()} {comment}"


def portal_key_read(
    private_path: Path, comment: str = "live-migration-portal"
) -> tuple[bytes, str]:
    """An unencrypted private key file: (its bytes, the public key line); else SshError."""
    pem = private_path.read_bytes()
    try:
        key = serialization.load_ssh_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SshError(
                f"{private_path} is not an unencrypted ssh private key the portal can use"
            ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        # The portal logs in with paramiko's Ed25519Key: another kind would fail every login.
        raise SshError(
            f"{private_path} is not an ed25519 key, the only kind the portal uses "
            "(make one with: ssh-keygen -t ed25519 -N '')"
        )
    try:
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    except ValueError as exc:
        raise SshError(f"{private_path} holds a kind of key ssh cannot use") from exc
    return pem, f"{public.decode()} {comment}"


def known_hosts_line(address: str, port: int, key_line: str) -> str:
    return f"{address if port == 22 else f'[{address}]:{port}'} {key_line}"


def known_hosts_text(entries: list[tuple[str, int, str]]) -> str:
    return "".join(f"{known_hosts_line(*entry)}\n" for entry in entries)


SSH_CONNECT_TIMEOUT_S = 5
SSH_ALIVE_INTERVAL_S = 5
SSH_ALIVE_COUNT = 3


# libvirt's ssh helper: all a peer's restricted key may run (authorized_keys `command=`).
LIBVIRT_REMOTE_HELPER = "virt-ssh-helper qemu:///system"
LIBVIRT_REMOTE_HELPER_SUDO = f"sudo -n {LIBVIRT_REMOTE_HELPER}"


def ssh_command_script(known_hosts: Path, *, remote_command: str | None = None) -> str:
    """The ssh libvirt runs (pinned keys only, no prompt); `remote_command` replaces its last
    argument, libvirt's remote command."""
    replace_last = ""
    if remote_command is not None:
        replace_last = (
            "# libvirt's remote command is the last argument: keep the others, run ours.\n"
            'n=$#; i=0\nfor a do i=$((i + 1)); [ "$i" -lt "$n" ] && set -- "$@" "$a"; done\n'
            'shift "$n"\n'
            f'set -- "$@" {shlex.quote(remote_command)}\n'
        )
    return (
        "#!/bin/sh\n"
        "# Written by the portal: ssh for libvirt, host keys checked against the keys\n"
        "# pinned in the portal's database only.\n"
        "# Bounded: a silent host is given up after ConnectTimeout, a connection that\n"
        "# stops answering after ServerAliveInterval x ServerAliveCountMax seconds.\n"
        f"{replace_last}"
        "exec ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null"
        f" -o ConnectTimeout={SSH_CONNECT_TIMEOUT_S} -o ServerAliveInterval={SSH_ALIVE_INTERVAL_S}"
        f" -o ServerAliveCountMax={SSH_ALIVE_COUNT}"
        f' -o UserKnownHostsFile={shlex.quote(str(known_hosts))} "$@"\n'
    )


def as_root(command: str, user: str) -> str:
    """`command` in sh as root for `user`: directly for root, else via `sudo -n` (no prompt)."""
    command = f"sh -c {shlex.quote(command)}"
    return command if user == "root" else f"sudo -n {command}"


# What paramiko raises when a session breaks, times out or the peer hangs up (socket.timeout
# is an OSError); each becomes an SshError, which callers record.
SSH_FAILURES = (paramiko.SSHException, EOFError, OSError)


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__  # EOFError and timeouts often say nothing


def _transport(address: str, port: int) -> paramiko.Transport:
    try:
        sock = connect_checked(address, port, timeout=CONNECT_TIMEOUT_S)  # resolved once
    except AddressRefused as exc:
        raise SshRefused(str(exc)) from None
    except OSError as exc:
        raise SshUnreachable(
            f"cannot reach ssh on {address}:{port}: {exc.strerror or exc}"
        ) from exc
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=CONNECT_TIMEOUT_S)
    except (paramiko.SSHException, OSError) as exc:
        transport.close()
        raise SshUnreachable(f"ssh handshake with {address}:{port} failed: {exc}") from exc
    return transport


def host_key_scan(address: str, port: int = 22) -> HostKey:
    transport = _transport(address, port)
    try:
        return HostKey.from_paramiko(transport.get_remote_server_key())
    except SSH_FAILURES as exc:
        raise SshUnreachable(f"reading the host key of {address}:{port}: {_why(exc)}") from exc
    finally:
        transport.close()


class Session:
    """One authenticated ssh session whose host key matched the pinned one."""

    def __init__(self, transport: paramiko.Transport, where: str) -> None:
        self._transport = transport
        self.where = where

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
        """(exit status, stdout, stderr); a broken session or a timeout is SshUnreachable."""
        try:
            channel = self._transport.open_session(timeout=CONNECT_TIMEOUT_S)
            channel.settimeout(timeout)
            channel.exec_command(command)
            out = channel.makefile("rb").read().decode(errors="replace")
            err = channel.makefile_stderr("rb").read().decode(errors="replace")
            status = channel.recv_exit_status()
        except SSH_FAILURES as exc:
            raise SshUnreachable(f"ssh to {self.where} failed: {_why(exc)}") from exc
        if status == -1:  # paramiko's "no exit status": the peer went away mid-command
            raise SshUnreachable(
                f"ssh to {self.where} failed: the command ended without an exit status "
                "(the connection closed, or a signal ended it)"
            )
        return status, out, err

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def session_open(
    *,
    address: str,
    port: int,
    user: str,
    pinned: HostKey | None,
    password: str | None = None,
    key_path: Path | None = None,
) -> tuple[Session, HostKey]:
    """Log in with a password or the portal key: (session, offered host key). A key other
    than `pinned` raises HostKeyMismatch before any credential is sent."""
    transport = _transport(address, port)
    where = f"{user}@{address}:{port}"
    try:
        offered = HostKey.from_paramiko(transport.get_remote_server_key())
        if pinned is not None and offered != pinned:
            raise HostKeyMismatch(address, pinned, offered)
        if password is not None:
            try:
                transport.auth_password(user, password)
            except paramiko.BadAuthenticationType as exc:
                raise SshPasswordLoginRefused(
                    f"the ssh server of {address} refuses password logins "
                    f"(it allows: {', '.join(exc.allowed_types) or 'nothing'})"
                ) from None
            except paramiko.AuthenticationException:
                raise SshAuthenticationFailed(f"wrong user name or password for {where}") from None
        else:
            try:
                key = paramiko.Ed25519Key.from_private_key_file(str(key_path))
                transport.auth_publickey(user, key)
            except paramiko.AuthenticationException:
                raise SshAuthenticationFailed(
                    f"the portal's key is not accepted by {where}"
                ) from None
        return Session(transport, where), offered
    except SshError:
        transport.close()
        raise
    except SSH_FAILURES as exc:  # after the handshake: the login broke or timed out
        transport.close()
        raise SshUnreachable(f"ssh login to {where} failed: {_why(exc)}") from exc
    except BaseException:
        transport.close()
        raise


def line_append_command(path: str, line: str) -> str:
    quoted = shlex.quote(line)
    return (
        f"umask 077 && touch {path} && (grep -qxF {quoted} {path} "
        f"|| printf '%s\\n' {quoted} >> {path})"
    )


def authorized_key_command(public_line: str, *, home: str = "~") -> str:
    keys = f"{home}/.ssh/authorized_keys"
    return (
        f"umask 077 && mkdir -p {home}/.ssh && chmod 700 {home}/.ssh && touch {keys} "
        f"&& chmod 600 {keys} && {line_append_command(keys, public_line)}"
    )


def line_remove_command(path: str, line: str) -> str:
    quoted = shlex.quote(line)
    return (
        f"if [ -f {path} ] && grep -qxF {quoted} {path}; then "
        f"grep -vxF {quoted} {path} > {path}.portal-tmp; "
        f"chmod --reference={path} {path}.portal-tmp && mv {path}.portal-tmp {path}; fi"
    )
