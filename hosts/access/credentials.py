"""The portal's own key pairs, shared by every portal node through the database.

A second portal node with an empty data folder, the same database and the same
PORTAL_SECRET_KEY works at once: the ssh key pair, the TLS CA and the portal's TLS
client certificate are rows of `PortalCredential` (the public half in the clear, the
private half encrypted with Fernet, its key derived from SECRET_KEY by HKDF), and the
files libvirt, OpenSSH and paramiko need are a per-node cache that `file_sync` writes
(0600 files in 0700 folders) when missing or different from the database
(docs/nodes.md).

Made once, by whichever node needs one first: two nodes racing both generate, one row
wins (the unique `kind`), the loser reads the winner's and discards its own.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import IntegrityError, transaction

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts.access.models import CredentialKind, PortalCredential


class CredentialUnreadable(Exception):
    """The stored private key cannot be decrypted: SECRET_KEY differs from the one of the
    node that stored it. The message says what to do and holds no secret."""


@dataclass(frozen=True)
class Material:
    """A key pair: `public` (an ssh public key line or a PEM certificate), `private`
    (PEM, in memory only) and the public half's fingerprint."""

    public: str
    private: bytes
    fingerprint: str


@dataclass(frozen=True)
class Credential(Material):
    """A stored key pair, decrypted."""

    kind: str


def fernet_for(purpose: bytes) -> Fernet:
    """The Fernet key of one purpose, derived from SECRET_KEY by HKDF with `purpose` as
    its `info`: every purpose (these credentials, the webhook secrets) has its own key,
    and every node with the same SECRET_KEY derives the same one."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        str(settings.SECRET_KEY).encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def _fernet() -> Fernet:
    return fernet_for(b"portal credentials")


def encrypt(private: bytes) -> str:
    return _fernet().encrypt(private).decode()


def decrypt(token: str, *, kind: str) -> bytes:
    try:
        return _fernet().decrypt(token.encode())
    except InvalidToken:
        label = CredentialKind(kind).label
        raise CredentialUnreadable(
            f"{label} in the database was stored by a portal node with another "
            "PORTAL_SECRET_KEY: give every node the same PORTAL_SECRET_KEY (docs/nodes.md)"
        ) from None


def _credential(row: PortalCredential) -> Credential:
    return Credential(
        kind=row.kind,
        public=row.public,
        private=decrypt(row.private_encrypted, kind=row.kind),
        fingerprint=row.fingerprint,
    )


def credential_get(kind: str) -> Credential | None:
    """The stored credential of `kind`, decrypted; None if there is none yet."""
    row = PortalCredential.objects.filter(kind=kind).first()
    return _credential(row) if row is not None else None


def _stored_audit(
    row: PortalCredential, *, actor: Actor | None, how: str, before: str | None = None
) -> None:
    """The audit row of a stored key pair: public facts only (kind, fingerprint)."""
    audit_event_record(
        actor=actor or Actor.system("portal"),
        event_type=EventType.HOST_PORTAL_CREDENTIAL_STORED,
        target=row,
        before={"fingerprint": before} if before is not None else None,
        after={"kind": row.kind, "fingerprint": row.fingerprint},
        detail={"how": how},
    )


def credential_ensure(
    kind: str, make: Callable[[], Material], *, how: str = "made on first use"
) -> Credential:
    """The stored credential of `kind`, made with `make()` and stored if there is none
    yet (of two nodes racing, the first row stored wins)."""
    found = credential_get(kind)
    if found is not None:
        return found
    made = make()
    try:
        with transaction.atomic():
            row = PortalCredential.objects.create(
                kind=kind,
                public=made.public,
                private_encrypted=encrypt(made.private),
                fingerprint=made.fingerprint,
            )
            _stored_audit(row, actor=None, how=how)
    except IntegrityError:
        pass  # another node stored one first: that one is the portal's
    stored = credential_get(kind)
    assert stored is not None
    return stored


def credential_replace(
    kind: str,
    material: Material,
    *,
    how: str,
    actor: Actor | None = None,
    unless: Callable[[Credential], bool] | None = None,
) -> Credential:
    """Store `material` as the credential of `kind` (a renewal, an import, a rotation),
    under a row lock, with its audit row; `unless(current)` true keeps the current one
    (another node renewed it first)."""
    with transaction.atomic():
        row = PortalCredential.objects.select_for_update().filter(kind=kind).first()
        if row is not None and unless is not None and unless(_credential(row)):
            return _credential(row)
        before = row.fingerprint if row is not None else None
        if row is None:
            row = PortalCredential(kind=kind)
        row.public, row.fingerprint = material.public, material.fingerprint
        row.private_encrypted = encrypt(material.private)
        row.save()
        _stored_audit(row, actor=actor, how=how, before=before)
    return Credential(material.public, material.private, material.fingerprint, kind=kind)


def folder_ensure(folder: Path) -> None:
    """A 0700 folder; the parents it needs are made 0700 too."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for parent in reversed(missing):
        parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(parent, 0o700)  # mkdir's mode passes through the umask
    if folder.stat().st_mode & 0o777 != 0o700:
        os.chmod(folder, 0o700)


def file_sync(path: Path, data: bytes, *, mode: int = 0o600) -> bool:
    """Make `path` hold exactly `data` with `mode`, in a 0700 folder; True if written.

    The cache of a database value on this node: rewritten when missing or different
    (stale), left alone otherwise. Written to a private temporary file in the same
    folder and renamed over: never seen half-written, never with wider permissions, and
    two processes of a node writing at once both leave a whole file.
    """
    folder_ensure(path.parent)
    try:
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
