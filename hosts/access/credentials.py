"""The portal's own key pairs, shared by every node through the database (docs/nodes.md).

Private halves are encrypted; files are a per-node cache (`file_sync`). Of two nodes
racing to make one, the unique `kind` lets one row win.
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
    """The stored private key cannot be decrypted (another SECRET_KEY stored it)."""


@dataclass(frozen=True)
class Material:
    """A key pair: `public` (ssh key line or PEM certificate), `private` PEM, fingerprint."""

    public: str
    private: bytes
    fingerprint: str


@dataclass(frozen=True)
class Credential(Material):
    kind: str


def fernet_for(purpose: bytes) -> Fernet:
    """A Fernet key per `purpose`, derived from SECRET_KEY by HKDF (the same on every node)."""
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
    """The stored credential of `kind`, made with `make()` if none (the first row stored wins)."""
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
    """Store `material` as `kind` under a row lock, audited; `unless(current)` keeps current."""
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
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for parent in reversed(missing):
        parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(parent, 0o700)  # mkdir's mode passes through the umask
    if folder.stat().st_mode & 0o777 != 0o700:
        os.chmod(folder, 0o700)


def file_sync(path: Path, data: bytes, *, mode: int = 0o600) -> bool:
    """Make `path` hold exactly `data` with `mode`, in a 0700 folder; True if written.
    Renamed over from a private temporary file: never seen half-written or too open."""
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
