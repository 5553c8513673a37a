"""`manage.py portal_credentials`: the portal's key pairs in the database (docs/nodes.md)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.services import Actor
from hosts.access import credentials, ssh, ssh_services, tls, tls_services
from hosts.access.models import CredentialKind, PortalCredential


class Command(BaseCommand):
    help = "Show, materialise, import or rotate the portal's key pairs (docs/nodes.md)."
    # Runs while check hosts.E001 fails: it is what that check tells to run.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        commands = parser.add_subparsers(dest="action", required=True)
        commands.add_parser("status", help="the stored key pairs (public facts only)")
        commands.add_parser("materialise", help="write this node's files from the database")
        imported = commands.add_parser(
            "import-ssh-key", help="store the unencrypted private key in FILE as the portal's"
        )
        imported.add_argument("file", type=Path)
        commands.add_parser("rotate-tls-ca", help="replace the portal's CA with a new one")

    def handle(self, *args, action: str, **options) -> None:
        actor = Actor.system("manage.py portal_credentials")
        try:
            if action == "status":
                self._status()
            elif action == "materialise":
                key = ssh_services.portal_public_key()
                ssh_services.known_hosts_refresh()
                client = tls_services.portal_client()
                self.stdout.write(f"ssh key {key.private_path} ({key.fingerprint})")
                self.stdout.write(f"tls client folder {client.folder}")
            elif action == "import-ssh-key":
                key = ssh_services.portal_key_import(path=options["file"], actor=actor)
                self.stdout.write(
                    f"the portal's ssh key is now {key.fingerprint} on every node; "
                    "hosts must trust it (authorized_keys)"
                )
            elif action == "rotate-tls-ca":
                ca = tls_services.portal_ca_rotate(actor=actor)
                self.stdout.write(
                    f"new CA {ca.fingerprint}: issue each TLS host's certificates again "
                    "(POST /api/hosts/<id>/tls/)"
                )
        except (ssh.SshError, tls.TlsError, credentials.CredentialUnreadable, OSError) as exc:
            raise CommandError(str(exc)) from None

    def _status(self) -> None:
        rows = {row.kind: row for row in PortalCredential.objects.all()}
        for kind in CredentialKind:
            row = rows.get(kind.value)
            if row is None:
                self.stdout.write(f"{kind.value}: none yet (made on first use)")
                continue
            readable = "readable"
            try:
                credentials.decrypt(row.private_encrypted, kind=row.kind)
            except credentials.CredentialUnreadable as exc:
                readable = f"NOT READABLE: {exc}"
            stored = f"{row.updated_at:%Y-%m-%d %H:%M} UTC"
            self.stdout.write(f"{kind.value}: {row.fingerprint}, stored {stored}, {readable}")
