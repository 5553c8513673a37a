"""Every type of audit event, of every app, in one enum (as Zulip's AuditLogEventType).

audit is the lowest layer, so every app may import it, and the whole vocabulary of
the log is read in one place: the audit page and its API filter on these values, the
migration timeline shows their labels, docs/audit.md lists them. A writer passes a
member (`audit_event_record(event_type=EventType.HOST_CREATED, ...)`), never a string
(tests/test_architecture.py holds that). The values are stored: never change one; add
a member for a new kind of event.
"""

from __future__ import annotations

from django.db import models


class EventType(models.TextChoices):
    # Accounts (audit.signals).
    AUTH_LOGIN = "auth.login", "Logged in"
    AUTH_LOGOUT = "auth.logout", "Logged out"
    AUTH_LOGIN_FAILED = "auth.login_failed", "Login failed"
    # Login throttling (portal.login_throttle): a user name or a client address reached
    # its limit of failed logins (once per window), and each attempt refused while locked.
    AUTH_LOGIN_LOCKED = "auth.login_locked", "Logins locked: too many failures"
    AUTH_LOGIN_THROTTLED = "auth.login_throttled", "Login refused: locked"

    # Hosts (hosts.services, hosts.access.ssh_services, hosts.access.tls_services).
    HOST_CREATED = "host.created", "Host added"
    HOST_UPDATED = "host.updated", "Host changed"
    HOST_DELETED = "host.deleted", "Host removed"
    HOST_REACHABLE = "host.reachable", "Host reachable"
    HOST_UNREACHABLE = "host.unreachable", "Host unreachable"
    HOST_HOST_KEY_RECORDED = "host.host_key_recorded", "Host key pinned"
    HOST_HOST_KEY_CHANGED = "host.host_key_changed", "Host key changed"
    HOST_HOST_KEY_ACCEPTED = "host.host_key_accepted", "Changed host key accepted"
    HOST_SSH_KEY_INSTALLED = "host.ssh_key_installed", "Portal's ssh key installed"
    # Host-to-host trust for peer-to-peer migration over ssh (hosts.access.peer_services).
    HOST_PEER_TRUST_SET_UP = "host.peer_trust_set_up", "Peer ssh trust set up"
    HOST_PEER_TRUST_REMOVED = "host.peer_trust_removed", "Peer ssh trust removed"
    # hosts.access.tls_services
    HOST_TLS_ISSUED = "host.tls_issued", "TLS certificates issued and installed"
    HOST_LIBVIRTD_RESTARTED = "host.libvirtd_restarted", "libvirtd restarted"
    # hosts.services.host_maintenance_set
    HOST_MAINTENANCE_ENTERED = "host.maintenance_entered", "Host entered maintenance"
    HOST_MAINTENANCE_LEFT = "host.maintenance_left", "Host left maintenance"
    # The portal's own key pairs (hosts.access.credentials): made, imported or replaced.
    HOST_PORTAL_CREDENTIAL_STORED = "host.portal_credential_stored", "Portal key pair stored"

    # VMs (vms.services).
    VM_DISCOVERED = "vm.discovered", "VM discovered"
    VM_GONE = "vm.gone", "VM gone"

    # Migrations (migrations_app.services, migrations_app.engine). The labels are the
    # steps of a migration's timeline.
    MIGRATION_REQUESTED = "migration.requested", "Requested"
    # Scheduled migrations: recorded with their times, changed while they wait, queued
    # when due (a window that closes first fails them: migration.failed).
    MIGRATION_SCHEDULED = "migration.scheduled", "Scheduled"
    MIGRATION_RESCHEDULED = "migration.rescheduled", "Schedule changed"
    MIGRATION_DUE = "migration.due", "Due: queued to start"
    MIGRATION_CHECKING = "migration.checking", "Pre-checks running"
    MIGRATION_STARTED = "migration.started", "Migration started"
    MIGRATION_CANCEL_REQUESTED = "migration.cancel_requested", "Cancel requested"
    MIGRATION_TUNED = "migration.tuned", "Tuned"
    MIGRATION_POSTCOPY = "migration.postcopy", "Switched to post-copy"
    MIGRATION_COMPLETING = "migration.completing", "Completing"
    MIGRATION_SUCCEEDED = "migration.succeeded", "Succeeded"
    MIGRATION_FAILED = "migration.failed", "Failed"
    MIGRATION_CANCELLED = "migration.cancelled", "Cancelled"
    MIGRATION_NEEDS_ATTENTION = "migration.needs_attention", "Needs attention"
    MIGRATION_CLEANED_UP = "migration.cleaned_up", "Cleaned up"

    # Migration batches (migrations_app.batch_services); each child migration has its
    # own migration.* events (detail "batch").
    BATCH_REQUESTED = "batch.requested", "Batch requested"
    BATCH_FINISHED = "batch.finished", "Batch finished"
    BATCH_CANCELLED = "batch.cancelled", "Batch cancel requested"

    # Outgoing webhook endpoints (migrations_app.webhooks).
    WEBHOOK_CREATED = "webhook.created", "Webhook endpoint added"
    WEBHOOK_DELETED = "webhook.deleted", "Webhook endpoint removed"

    @property
    def action(self) -> str:
        """The part after the app's prefix ("failed" of "migration.failed"): the name
        of the same change on a migration's websocket."""
        return self.value.partition(".")[2]
