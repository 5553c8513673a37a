"""A migration batch's decisions as pure functions: which children may start now, which
are cancelled when the batch stops, and what the batch's status is, given its
children. No database, no clock; table-tested in tests/test_batches.py.

The children are given in the batch's order (the order of the request's items); a
child is an ordinary migration, so its status is a `MigrationStatus` value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from migrations_app.domain.lifecycle import (
    ACTIVE_STATUSES,
    RUNNING_STATUSES,
    BatchStatus,
    MigrationStatus,
)


@dataclass(frozen=True)
class Child:
    id: int
    status: str


def batch_stopping(
    *, children: Sequence[Child], stop_on_failure: bool, cancel_requested: bool
) -> bool:
    """Does the batch start nothing more? After a cancel, or with `stop_on_failure`
    once a child failed."""
    failed = any(c.status == MigrationStatus.FAILED for c in children)
    return cancel_requested or (stop_on_failure and failed)


def batch_gate_open(
    *,
    children: Sequence[Child],
    max_parallel: int,
    stop_on_failure: bool,
    cancel_requested: bool,
) -> bool:
    """May one more child of the batch claim a worker now? (Checked under the batch's
    row lock at the claim: `max_parallel` holds whatever the dispatcher enqueued.)"""
    if batch_stopping(
        children=children, stop_on_failure=stop_on_failure, cancel_requested=cancel_requested
    ):
        return False
    running = sum(1 for c in children if c.status in RUNNING_STATUSES)
    return running < max_parallel


def batch_children_to_start(
    *,
    children: Sequence[Child],
    max_parallel: int,
    stop_on_failure: bool,
    cancel_requested: bool,
) -> list[int]:
    """The queued children that hold one of the batch's `max_parallel` places now, in
    the batch's order: the dispatcher hands these (and only these) to the workers; the
    host slot limits still apply to each."""
    if batch_stopping(
        children=children, stop_on_failure=stop_on_failure, cancel_requested=cancel_requested
    ):
        return []
    running = sum(1 for c in children if c.status in RUNNING_STATUSES)
    free = max(0, max_parallel - running)
    return [c.id for c in children if c.status == MigrationStatus.QUEUED][:free]


def batch_children_to_cancel(
    *, children: Sequence[Child], stop_on_failure: bool, cancel_requested: bool
) -> list[int]:
    """The children not started yet that a stopping batch cancels (running ones are
    asked to cancel only by an operator's cancel of the batch, see batch_cancel)."""
    if not batch_stopping(
        children=children, stop_on_failure=stop_on_failure, cancel_requested=cancel_requested
    ):
        return []
    return [c.id for c in children if c.status == MigrationStatus.QUEUED]


def batch_status(
    *, children: Sequence[Child], stop_on_failure: bool, cancel_requested: bool
) -> BatchStatus:
    """The batch's status given its children.

    queued: every child is queued or scheduled (none started); running: some child is still active
    (a child that needs attention keeps the batch running until it is settled);
    otherwise final: succeeded if every child succeeded (even after a late cancel);
    cancelled if an operator cancelled the batch; failed if a child failed with
    stop_on_failure, or none succeeded; else partially_failed.
    """
    statuses = [c.status for c in children]
    if any(s in ACTIVE_STATUSES for s in statuses):
        if all(s in (MigrationStatus.QUEUED, MigrationStatus.SCHEDULED) for s in statuses):
            return BatchStatus.QUEUED  # scheduled children have not started either
        return BatchStatus.RUNNING
    succeeded = statuses.count(MigrationStatus.SUCCEEDED)
    if succeeded == len(statuses):
        return BatchStatus.SUCCEEDED  # a cancel that came too late changed nothing
    if cancel_requested:
        return BatchStatus.CANCELLED
    if stop_on_failure and MigrationStatus.FAILED in statuses:
        return BatchStatus.FAILED
    if succeeded == 0:
        return BatchStatus.FAILED
    return BatchStatus.PARTIALLY_FAILED


@dataclass(frozen=True)
class BatchProgress:
    vms_total: int
    vms_done: int  # children in a final status, whatever the outcome
    vms_succeeded: int
    vms_failed: int
    vms_cancelled: int
    vms_running: int
    # Of the children whose job started: libvirt's data total while a child runs, what
    # crossed once it succeeded (so a batch that succeeded has moved its whole total).
    bytes_total: int
    bytes_moved: int
    percent: float  # a finished child counts 100, an active one its own percent

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def batch_progress(children: Sequence) -> BatchProgress:
    """The batch's figures from its children (objects with a migration's `status`,
    `percent`, `data_total_bytes`, `data_processed_bytes`, `transferred_bytes`)."""
    total = moved = 0
    percents = []
    for c in children:
        final = c.status not in ACTIVE_STATUSES
        if c.status == MigrationStatus.SUCCEEDED:
            # Done: what crossed is its whole (the running total counted re-sent pages
            # that were not sent again after all).
            child_moved = c.transferred_bytes or c.data_processed_bytes or 0
            child_total = child_moved
        else:
            child_moved = c.data_processed_bytes or 0
            child_total = max(c.data_total_bytes or 0, child_moved)
        total += child_total
        moved += child_moved
        percents.append(100.0 if final else float(c.percent or 0))
    statuses = [c.status for c in children]
    return BatchProgress(
        vms_total=len(statuses),
        vms_done=sum(1 for s in statuses if s not in ACTIVE_STATUSES),
        vms_succeeded=statuses.count(MigrationStatus.SUCCEEDED),
        vms_failed=statuses.count(MigrationStatus.FAILED),
        vms_cancelled=statuses.count(MigrationStatus.CANCELLED),
        vms_running=sum(1 for s in statuses if s in RUNNING_STATUSES),
        bytes_total=total,
        bytes_moved=moved,
        percent=round(sum(percents) / len(percents), 2) if percents else 0.0,
    )
