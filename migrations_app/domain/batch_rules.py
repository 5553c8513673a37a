"""A batch's decisions as pure functions of its children, in the batch's order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
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
    source_id: int | None = None
    destination_id: int | None = None


@dataclass(frozen=True)
class HostSlots:
    """Migrations running per host, every batch's and lone ones, with the per-host limits."""

    outgoing: Mapping[int | None, int]
    incoming: Mapping[int | None, int]
    max_outgoing: int
    max_incoming: int

    @classmethod
    def unlimited(cls) -> HostSlots:
        return cls({}, {}, max_outgoing=1 << 30, max_incoming=1 << 30)


def _running(children: Sequence[Child]) -> int:
    return sum(1 for c in children if c.status in RUNNING_STATUSES)


def batch_stopping(
    *, children: Sequence[Child], stop_on_failure: bool, cancel_requested: bool
) -> bool:
    failed = any(c.status == MigrationStatus.FAILED for c in children)
    return cancel_requested or (stop_on_failure and failed)


def batch_gate_open(
    *, children: Sequence[Child], max_parallel: int, stop_on_failure: bool, cancel_requested: bool
) -> bool:
    """May one more child claim a worker now? (Under the batch's row lock at the claim.)"""
    if batch_stopping(
        children=children, stop_on_failure=stop_on_failure, cancel_requested=cancel_requested
    ):
        return False
    return _running(children) < max_parallel


def batch_children_to_start(
    *,
    children: Sequence[Child],
    max_parallel: int,
    stop_on_failure: bool,
    cancel_requested: bool,
    slots: HostSlots | None = None,
) -> list[int]:
    """The queued children that take one of the batch's `max_parallel` places now.

    In the batch's order, but a child whose hosts have no free slot is passed over for a
    later one whose hosts have: a place that frees starts the next VM that can use it,
    rather than the batch waiting for the first child's destination (waves back to back).
    """
    if batch_stopping(
        children=children, stop_on_failure=stop_on_failure, cancel_requested=cancel_requested
    ):
        return []
    slots = slots or HostSlots.unlimited()
    outgoing, incoming = Counter(slots.outgoing), Counter(slots.incoming)
    free = max(0, max_parallel - _running(children))
    chosen: list[int] = []
    for child in children:
        if len(chosen) >= free:
            break
        if child.status != MigrationStatus.QUEUED:
            continue
        if (
            outgoing[child.source_id] >= slots.max_outgoing
            or incoming[child.destination_id] >= slots.max_incoming
        ):
            continue
        chosen.append(child.id)
        # Counted as started: the next child sees the slot it takes.
        outgoing[child.source_id] += 1
        incoming[child.destination_id] += 1
    return chosen


def batch_children_to_cancel(
    *, children: Sequence[Child], stop_on_failure: bool, cancel_requested: bool
) -> list[int]:
    if not batch_stopping(
        children=children, stop_on_failure=stop_on_failure, cancel_requested=cancel_requested
    ):
        return []
    return [c.id for c in children if c.status == MigrationStatus.QUEUED]


def batch_status(
    *, children: Sequence[Child], stop_on_failure: bool, cancel_requested: bool
) -> BatchStatus:
    """The batch's status given its children (one needing attention keeps it running)."""
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
    # Per child: libvirt's data total while it runs, what crossed once it succeeded.
    bytes_total: int
    bytes_moved: int
    percent: float  # a finished child counts 100, an active one its own percent

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def batch_progress(children: Sequence) -> BatchProgress:
    """The batch's figures from its children (migrations or rows with their fields)."""
    total = moved = 0
    percents = []
    for c in children:
        final = c.status not in ACTIVE_STATUSES
        if c.status == MigrationStatus.SUCCEEDED:
            # What crossed is its whole (the running total counted re-sent pages).
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
