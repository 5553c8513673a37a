"""A migration's statuses and allowed changes, phases and failure reasons. The values are
stored: change one only with a data migration. Imports none of the portal's apps."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class MigrationStatus(models.TextChoices):
    # Waits for its `not_before`; active (one per VM) but holds no slot or worker.
    SCHEDULED = "scheduled", pgettext_lazy("migration status", "Scheduled")
    QUEUED = "queued", pgettext_lazy("migration status", "Queued")
    CHECKING = "checking", pgettext_lazy("migration status", "Checking")
    MIGRATING = "migrating", pgettext_lazy("migration status", "Migrating")
    COMPLETING = "completing", pgettext_lazy("migration status", "Completing")
    SUCCEEDED = "succeeded", pgettext_lazy("migration status", "Succeeded")
    FAILED = "failed", pgettext_lazy("migration status", "Failed")
    CANCELLED = "cancelled", pgettext_lazy("migration status", "Cancelled")
    # A host was unreachable at settling: nothing changed; the reconciler settles it later.
    NEEDS_ATTENTION = "needs_attention", pgettext_lazy("migration status", "Needs attention")


_S = MigrationStatus  # short, for the tables below
# States in which a worker owns the migration (it counts against host limits).
RUNNING_STATUSES = [_S.CHECKING, _S.MIGRATING, _S.COMPLETING]
ACTIVE_STATUSES = [_S.SCHEDULED, _S.QUEUED, *RUNNING_STATUSES, _S.NEEDS_ATTENTION]
FINAL_STATUSES = [_S.SUCCEEDED, _S.FAILED, _S.CANCELLED]

# Every status change the portal may make; anything else is refused (a worker that
# lost its claim must not move a final record back).
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    # failed: its maintenance window closed before it could start (window_closed).
    _S.SCHEDULED: frozenset({_S.QUEUED, _S.CANCELLED, _S.FAILED}),
    _S.QUEUED: frozenset({_S.CHECKING, _S.CANCELLED, _S.FAILED}),
    _S.CHECKING: frozenset({_S.MIGRATING, _S.FAILED, _S.CANCELLED}),
    _S.MIGRATING: frozenset({_S.COMPLETING, _S.FAILED, _S.CANCELLED, _S.NEEDS_ATTENTION}),
    _S.COMPLETING: frozenset({_S.SUCCEEDED, _S.NEEDS_ATTENTION}),
    # migrating: a person resumed a post-copy that a broken link paused (attention.py).
    _S.NEEDS_ATTENTION: frozenset({_S.COMPLETING, _S.FAILED, _S.CANCELLED, _S.MIGRATING}),
}


class Phase(models.TextChoices):
    """What a migration is doing, finer than its status."""

    WAITING_FOR_SLOT = (
        "waiting_for_slot",
        pgettext_lazy("migration phase", "Waiting for a free slot on its hosts"),
    )
    # A child of a batch held back by the batch's max_parallel (or not started yet).
    WAITING_FOR_BATCH = (
        "waiting_for_batch",
        pgettext_lazy("migration phase", "Waiting for its turn in the batch"),
    )
    CHECKING = "checking", pgettext_lazy("migration phase", "Running pre-checks")
    CHECKS_FAILED = "checks_failed", pgettext_lazy("migration phase", "Pre-checks failed")
    # A running libvirt job (progress.phase_of), in the order they usually come.
    SETUP = "setup", pgettext_lazy("migration phase", "Setting up the migration")
    COPYING_DISKS = "copying_disks", pgettext_lazy("migration phase", "Copying disks")
    TRANSFERRING_MEMORY = (
        "transferring_memory",
        pgettext_lazy("migration phase", "Transferring memory"),
    )
    CONVERGING = (
        "converging",
        pgettext_lazy("migration phase", "Converging (re-sending dirtied memory)"),
    )
    # The verdict of domain/convergence.judge: the copy does not catch up with the guest.
    NOT_CONVERGING = (
        "not_converging",
        pgettext_lazy("migration phase", "Not converging (the guest dirties memory too fast)"),
    )
    PAUSED_TO_FINISH = (
        "paused_to_finish",
        pgettext_lazy("migration phase", "Guest paused by its policy so the copy finishes"),
    )
    POSTCOPY = "postcopy", pgettext_lazy("migration phase", "Post-copy")
    # After the job.
    COMPLETING = "completing", pgettext_lazy("migration phase", "Completing")
    DONE = "done", pgettext_lazy("migration phase", "Done")
    FAILED = "failed", pgettext_lazy("migration phase", "Failed")
    CANCELLED = "cancelled", pgettext_lazy("migration phase", "Cancelled")
    NEEDS_ATTENTION = (
        "needs_attention",
        pgettext_lazy("migration phase", "Needs attention: not settled yet"),
    )


# The phases of a running libvirt job: the ones a migration's timeline shows.
JOB_PHASES = [
    Phase.SETUP,
    Phase.COPYING_DISKS,
    Phase.TRANSFERRING_MEMORY,
    Phase.CONVERGING,
    Phase.NOT_CONVERGING,
    Phase.PAUSED_TO_FINISH,
    Phase.POSTCOPY,
]


class FailureReason(models.TextChoices):
    """Why a migration failed, decided by the engine; blank until it fails and for a cancel."""

    PRECHECK = "precheck", _("A pre-check refused the migration")
    TIMEOUT = "timeout", _("Timed out")
    WORKER_LOST = "worker_lost", _("The worker running it stopped")
    UNREACHABLE = "unreachable", _("A host could not be reached")
    LIBVIRT = "libvirt", _("Error reported by libvirt")
    INTERNAL = "internal", _("Unexpected error in the portal")
    WINDOW_CLOSED = "window_closed", _("The maintenance window closed before it could start")
    STOPPED_OUTSIDE = "stopped_outside", _("The VM was turned off outside the portal")
    GUEST_SHUTDOWN = "guest_shutdown", _("The guest powered itself off")
    NOT_CONVERGING = "not_converging", _("The copy did not converge (its convergence policy)")


class BatchStatus(models.TextChoices):
    """A batch's status, derived from its children; the final one is written once."""

    QUEUED = "queued", pgettext_lazy("batch status", "Queued")  # no child has started yet
    RUNNING = "running", pgettext_lazy("batch status", "Running")
    SUCCEEDED = "succeeded", pgettext_lazy("batch status", "Succeeded")  # every child succeeded
    # Some children succeeded, others failed or were cancelled (stop_on_failure false).
    PARTIALLY_FAILED = "partially_failed", pgettext_lazy("batch status", "Partially failed")
    # No child succeeded, or a child failed with stop_on_failure.
    FAILED = "failed", pgettext_lazy("batch status", "Failed")
    CANCELLED = (
        "cancelled",
        pgettext_lazy("batch status", "Cancelled"),
    )  # an operator cancelled the batch


BATCH_FINAL_STATUSES = [
    BatchStatus.SUCCEEDED,
    BatchStatus.PARTIALLY_FAILED,
    BatchStatus.FAILED,
    BatchStatus.CANCELLED,
]
