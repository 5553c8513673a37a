"""Every type of audit event, of every app, in one enum (as Zulip's AuditLogEventType).

Writers pass a member, never a string. The values are stored: never change one.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import pgettext_lazy


class EventType(models.TextChoices):
    AUTH_LOGIN = "auth.login", pgettext_lazy("audit event", "Logged in")
    AUTH_LOGOUT = "auth.logout", pgettext_lazy("audit event", "Logged out")
    AUTH_LOGIN_FAILED = "auth.login_failed", pgettext_lazy("audit event", "Login failed")
    # Login throttling: a limit reached (once per window), and each attempt refused.
    AUTH_LOGIN_LOCKED = (
        "auth.login_locked",
        pgettext_lazy("audit event", "Logins locked: too many failures"),
    )
    AUTH_LOGIN_THROTTLED = (
        "auth.login_throttled",
        pgettext_lazy("audit event", "Login refused: locked"),
    )
    # Accounts, roles and API tokens (the Django admin).
    USER_CREATED = "user.created", pgettext_lazy("audit event", "User created")
    USER_UPDATED = "user.updated", pgettext_lazy("audit event", "User changed")
    USER_DELETED = "user.deleted", pgettext_lazy("audit event", "User deleted")
    USER_ROLES_CHANGED = "user.roles_changed", pgettext_lazy("audit event", "User's roles changed")
    GROUP_CREATED = "group.created", pgettext_lazy("audit event", "Role group created")
    GROUP_UPDATED = (
        "group.updated",
        pgettext_lazy("audit event", "Role group's permissions changed"),
    )
    GROUP_DELETED = "group.deleted", pgettext_lazy("audit event", "Role group deleted")
    TOKEN_CREATED = "token.created", pgettext_lazy("audit event", "API token created")
    TOKEN_DELETED = "token.deleted", pgettext_lazy("audit event", "API token revoked")

    # Hosts: inventory, ssh and TLS access, maintenance.
    HOST_CREATED = "host.created", pgettext_lazy("audit event", "Host added")
    HOST_UPDATED = "host.updated", pgettext_lazy("audit event", "Host changed")
    HOST_DELETED = "host.deleted", pgettext_lazy("audit event", "Host removed")
    HOST_REACHABLE = "host.reachable", pgettext_lazy("audit event", "Host reachable")
    HOST_UNREACHABLE = "host.unreachable", pgettext_lazy("audit event", "Host unreachable")
    HOST_HOST_KEY_RECORDED = (
        "host.host_key_recorded",
        pgettext_lazy("audit event", "Host key pinned"),
    )
    HOST_HOST_KEY_CHANGED = (
        "host.host_key_changed",
        pgettext_lazy("audit event", "Host key changed"),
    )
    HOST_HOST_KEY_ACCEPTED = (
        "host.host_key_accepted",
        pgettext_lazy("audit event", "Changed host key accepted"),
    )
    HOST_SSH_KEY_INSTALLED = (
        "host.ssh_key_installed",
        pgettext_lazy("audit event", "Portal's ssh key installed"),
    )
    HOST_PEER_TRUST_SET_UP = (
        "host.peer_trust_set_up",
        pgettext_lazy("audit event", "Peer ssh trust set up"),
    )
    HOST_PEER_TRUST_REMOVED = (
        "host.peer_trust_removed",
        pgettext_lazy("audit event", "Peer ssh trust removed"),
    )
    HOST_TLS_ISSUED = (
        "host.tls_issued",
        pgettext_lazy("audit event", "TLS certificates issued and installed"),
    )
    HOST_LIBVIRTD_RESTARTED = (
        "host.libvirtd_restarted",
        pgettext_lazy("audit event", "libvirtd restarted"),
    )
    HOST_MAINTENANCE_ENTERED = (
        "host.maintenance_entered",
        pgettext_lazy("audit event", "Host entered maintenance"),
    )
    HOST_MAINTENANCE_LEFT = (
        "host.maintenance_left",
        pgettext_lazy("audit event", "Host left maintenance"),
    )
    HOST_RETIRED = "host.retired", pgettext_lazy("audit event", "Host retired")
    HOST_UNRETIRED = "host.unretired", pgettext_lazy("audit event", "Host back in service")
    HOST_PORTAL_CREDENTIAL_STORED = (
        "host.portal_credential_stored",
        pgettext_lazy("audit event", "Portal key pair stored"),
    )
    # Host groups and the roles granted on them (API and admin alike).
    HOST_GROUP_CREATED = "host_group.created", pgettext_lazy("audit event", "Host group created")
    HOST_GROUP_UPDATED = "host_group.updated", pgettext_lazy("audit event", "Host group changed")
    HOST_GROUP_DELETED = "host_group.deleted", pgettext_lazy("audit event", "Host group removed")
    HOST_GROUP_GRANT_ADDED = (
        "host_group.grant_added",
        pgettext_lazy("audit event", "Role granted on a host group"),
    )
    HOST_GROUP_GRANT_REMOVED = (
        "host_group.grant_removed",
        pgettext_lazy("audit event", "Role on a host group taken back"),
    )

    VM_DISCOVERED = "vm.discovered", pgettext_lazy("audit event", "VM discovered")
    VM_GONE = "vm.gone", pgettext_lazy("audit event", "VM gone")
    VM_CHANGED_OUTSIDE = (
        "vm.changed_outside",
        pgettext_lazy("audit event", "VM changed outside the portal"),
    )

    # Migrations. The labels are the steps of a migration's timeline.
    MIGRATION_REQUESTED = "migration.requested", pgettext_lazy("audit event", "Requested")
    # Scheduled migrations (a window that closes before they are due: migration.failed).
    MIGRATION_SCHEDULED = "migration.scheduled", pgettext_lazy("audit event", "Scheduled")
    MIGRATION_RESCHEDULED = (
        "migration.rescheduled",
        pgettext_lazy("audit event", "Schedule changed"),
    )
    MIGRATION_DUE = "migration.due", pgettext_lazy("audit event", "Due: queued to start")
    MIGRATION_CHECKING = "migration.checking", pgettext_lazy("audit event", "Pre-checks running")
    MIGRATION_STARTED = "migration.started", pgettext_lazy("audit event", "Migration started")
    MIGRATION_CANCEL_REQUESTED = (
        "migration.cancel_requested",
        pgettext_lazy("audit event", "Cancel requested"),
    )
    MIGRATION_TUNED = "migration.tuned", pgettext_lazy("audit event", "Tuned")
    MIGRATION_POSTCOPY = "migration.postcopy", pgettext_lazy("audit event", "Switched to post-copy")
    # A convergence policy acted (domain/convergence.py): detail `step` and the figures.
    MIGRATION_CONVERGENCE_STEP = (
        "migration.convergence_step",
        pgettext_lazy("audit event", "Convergence policy step"),
    )
    MIGRATION_PAUSED_OUTSIDE = (
        "migration.paused_outside",
        pgettext_lazy("audit event", "Paused by someone during the migration"),
    )
    MIGRATION_COMPLETING = "migration.completing", pgettext_lazy("audit event", "Completing")
    MIGRATION_SUCCEEDED = "migration.succeeded", pgettext_lazy("audit event", "Succeeded")
    MIGRATION_FAILED = "migration.failed", pgettext_lazy("audit event", "Failed")
    MIGRATION_CANCELLED = "migration.cancelled", pgettext_lazy("audit event", "Cancelled")
    MIGRATION_NEEDS_ATTENTION = (
        "migration.needs_attention",
        pgettext_lazy("audit event", "Needs attention"),
    )
    MIGRATION_RESOLVED = "migration.resolved", pgettext_lazy("audit event", "Resolved by a person")
    MIGRATION_CLEANED_UP = "migration.cleaned_up", pgettext_lazy("audit event", "Cleaned up")
    # A reconciler step that raised (detail: step, error); once per migration and error.
    MIGRATION_RECONCILE_FAILED = (
        "migration.reconcile_failed",
        pgettext_lazy("audit event", "Reconciler step failed"),
    )

    # Migration batches; each child has its own migration.* events.
    BATCH_REQUESTED = "batch.requested", pgettext_lazy("audit event", "Batch requested")
    BATCH_FINISHED = "batch.finished", pgettext_lazy("audit event", "Batch finished")
    BATCH_CANCELLED = "batch.cancelled", pgettext_lazy("audit event", "Batch cancel requested")

    WEBHOOK_CREATED = "webhook.created", pgettext_lazy("audit event", "Webhook endpoint added")
    WEBHOOK_DELETED = "webhook.deleted", pgettext_lazy("audit event", "Webhook endpoint removed")
    WEBHOOK_UPDATED = "webhook.updated", pgettext_lazy("audit event", "Webhook endpoint changed")

    @property
    def action(self) -> str:
        """ "failed" of "migration.failed": the change's name on a migration's websocket."""
        return self.value.partition(".")[2]
