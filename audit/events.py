"""Every type of audit event, of every app, in one enum (as Zulip's AuditLogEventType).

Writers pass a member, never a string. The values are stored: never change one.
"""

from __future__ import annotations

from django.db import models


class EventType(models.TextChoices):
    AUTH_LOGIN = "auth.login", "Logged in"
    AUTH_LOGOUT = "auth.logout", "Logged out"
    AUTH_LOGIN_FAILED = "auth.login_failed", "Login failed"
    # Login throttling: a limit reached (once per window), and each attempt refused.
    AUTH_LOGIN_LOCKED = "auth.login_locked", "Logins locked: too many failures"
    AUTH_LOGIN_THROTTLED = "auth.login_throttled", "Login refused: locked"
    # Accounts, roles and API tokens (the Django admin).
    USER_CREATED = "user.created", "User created"
    USER_UPDATED = "user.updated", "User changed"
    USER_DELETED = "user.deleted", "User deleted"
    USER_ROLES_CHANGED = "user.roles_changed", "User's roles changed"
    GROUP_CREATED = "group.created", "Role group created"
    GROUP_UPDATED = "group.updated", "Role group's permissions changed"
    GROUP_DELETED = "group.deleted", "Role group deleted"
    TOKEN_CREATED = "token.created", "API token created"
    TOKEN_DELETED = "token.deleted", "API token revoked"

    # Hosts: inventory, ssh and TLS access, maintenance.
    HOST_CREATED = "host.created", "Host added"
    HOST_UPDATED = "host.updated", "Host changed"
    HOST_DELETED = "host.deleted", "Host removed"
    HOST_REACHABLE = "host.reachable", "Host reachable"
    HOST_UNREACHABLE = "host.unreachable", "Host unreachable"
    HOST_HOST_KEY_RECORDED = "host.host_key_recorded", "Host key pinned"
    HOST_HOST_KEY_CHANGED = "host.host_key_changed", "Host key changed"
    HOST_HOST_KEY_ACCEPTED = "host.host_key_accepted", "Changed host key accepted"
    HOST_SSH_KEY_INSTALLED = "host.ssh_key_installed", "Portal's ssh key installed"
    HOST_PEER_TRUST_SET_UP = "host.peer_trust_set_up", "Peer ssh trust set up"
    HOST_PEER_TRUST_REMOVED = "host.peer_trust_removed", "Peer ssh trust removed"
    HOST_TLS_ISSUED = "host.tls_issued", "TLS certificates issued and installed"
    HOST_LIBVIRTD_RESTARTED = "host.libvirtd_restarted", "libvirtd restarted"
    HOST_MAINTENANCE_ENTERED = "host.maintenance_entered", "Host entered maintenance"
    HOST_MAINTENANCE_LEFT = "host.maintenance_left", "Host left maintenance"
    HOST_RETIRED = "host.retired", "Host retired"
    HOST_UNRETIRED = "host.unretired", "Host back in service"
    HOST_PORTAL_CREDENTIAL_STORED = "host.portal_credential_stored", "Portal key pair stored"
    # Host groups and the roles granted on them (API and admin alike).
    HOST_GROUP_CREATED = "host_group.created", "Host group created"
    HOST_GROUP_UPDATED = "host_group.updated", "Host group changed"
    HOST_GROUP_DELETED = "host_group.deleted", "Host group removed"
    HOST_GROUP_GRANT_ADDED = "host_group.grant_added", "Role granted on a host group"
    HOST_GROUP_GRANT_REMOVED = "host_group.grant_removed", "Role on a host group taken back"

    VM_DISCOVERED = "vm.discovered", "VM discovered"
    VM_GONE = "vm.gone", "VM gone"
    VM_CHANGED_OUTSIDE = "vm.changed_outside", "VM changed outside the portal"

    # Migrations. The labels are the steps of a migration's timeline.
    MIGRATION_REQUESTED = "migration.requested", "Requested"
    # Scheduled migrations (a window that closes before they are due: migration.failed).
    MIGRATION_SCHEDULED = "migration.scheduled", "Scheduled"
    MIGRATION_RESCHEDULED = "migration.rescheduled", "Schedule changed"
    MIGRATION_DUE = "migration.due", "Due: queued to start"
    MIGRATION_CHECKING = "migration.checking", "Pre-checks running"
    MIGRATION_STARTED = "migration.started", "Migration started"
    MIGRATION_CANCEL_REQUESTED = "migration.cancel_requested", "Cancel requested"
    MIGRATION_TUNED = "migration.tuned", "Tuned"
    MIGRATION_POSTCOPY = "migration.postcopy", "Switched to post-copy"
    # A convergence policy acted (domain/convergence.py): detail `step` and the figures.
    MIGRATION_CONVERGENCE_STEP = "migration.convergence_step", "Convergence policy step"
    MIGRATION_PAUSED_OUTSIDE = "migration.paused_outside", "Paused by someone during the migration"
    MIGRATION_COMPLETING = "migration.completing", "Completing"
    MIGRATION_SUCCEEDED = "migration.succeeded", "Succeeded"
    MIGRATION_FAILED = "migration.failed", "Failed"
    MIGRATION_CANCELLED = "migration.cancelled", "Cancelled"
    MIGRATION_NEEDS_ATTENTION = "migration.needs_attention", "Needs attention"
    MIGRATION_RESOLVED = "migration.resolved", "Resolved by a person"
    MIGRATION_CLEANED_UP = "migration.cleaned_up", "Cleaned up"
    # A reconciler step that raised (detail: step, error); once per migration and error.
    MIGRATION_RECONCILE_FAILED = "migration.reconcile_failed", "Reconciler step failed"

    # Migration batches; each child has its own migration.* events.
    BATCH_REQUESTED = "batch.requested", "Batch requested"
    BATCH_FINISHED = "batch.finished", "Batch finished"
    BATCH_CANCELLED = "batch.cancelled", "Batch cancel requested"

    WEBHOOK_CREATED = "webhook.created", "Webhook endpoint added"
    WEBHOOK_DELETED = "webhook.deleted", "Webhook endpoint removed"
    WEBHOOK_UPDATED = "webhook.updated", "Webhook endpoint changed"

    @property
    def action(self) -> str:
        """ "failed" of "migration.failed": the change's name on a migration's websocket."""
        return self.value.partition(".")[2]
