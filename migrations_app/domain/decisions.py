"""The engine's decisions as pure functions (no database, libvirt or clock), table-tested.

The rules that keep a VM from being lost:
- never stop or undefine a copy that is, or may be, the live one;
- touch neither host while one is unreachable and it is unknown which copy is live
  (the migration needs attention and is settled when both answer);
- resume or restart the source only once the destination is known not to run the VM;
- leave defined a definition the destination had before (the VM coming home).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from django.utils.translation import gettext as _

from hosts.hypervisor import (
    ACTIVE_STATES,
    EXECUTING_STATES,
    PAUSED_BY_CHOICE,
    POSTCOPY_REASONS,
    STOPPED_BY_CHOICE,
)
from migrations_app.domain.lifecycle import FailureReason


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"  # the VM is on the destination
    FAILED = "failed"  # the VM is on the source
    NEEDS_ATTENTION = "needs_attention"  # not known, or not safe to decide: change nothing


class Side(enum.StrEnum):
    SOURCE = "source"
    DESTINATION = "destination"


class Op(enum.StrEnum):
    DESTROY = "destroy"  # stop the QEMU process, keep the definition
    UNDEFINE = "undefine"  # remove the (inactive) definition
    RESUME = "resume"  # un-pause
    SUSPEND = "suspend"  # pause (again: what someone chose)
    START = "start"  # boot from the definition


@dataclass(frozen=True)
class HostView:
    """What one host reported about the VM's UUID."""

    reachable: bool
    state: str | None = None  # None: no domain with this UUID there (if reachable)
    job_active: bool | None = None  # a migration job of this VM still runs (None: not asked)
    reason: str = ""  # libvirt's reason for the state (hosts.hypervisor)

    @property
    def defined(self) -> bool:
        return self.reachable and self.state is not None

    @property
    def active(self) -> bool:
        return self.reachable and self.state in ACTIVE_STATES

    @property
    def executing(self) -> bool:
        # libvirt 9 leaves a destination whose post-copy failed "running (post-copy
        # failed)": its vCPUs wait for pages still on the source, it is not the VM.
        return (
            self.reachable and self.state in EXECUTING_STATES and self.reason != "postcopy_failed"
        )

    @property
    def paused(self) -> bool:
        return self.reachable and self.state == "paused"


UNREACHABLE = HostView(reachable=False)


@dataclass(frozen=True)
class Action:
    side: Side
    op: Op


@dataclass(frozen=True)
class Settlement:
    outcome: Outcome
    actions: tuple[Action, ...] = ()
    notes: tuple[str, ...] = ()
    needs_cleanup: bool = False  # a leftover may sit on an unreachable destination
    # Why it failed when the hosts tell more than what ended the migration.
    reason: FailureReason | None = None


@dataclass(frozen=True)
class SettleInput:
    source: HostView
    destination: HostView
    live: bool
    postcopy_started: bool = False
    destination_had_definition: bool = False  # a shut-off definition from before (round trip)
    source_was_paused: bool = False  # paused by its owner before: do not resume it
    # Paused by the portal's pause_when_stalled policy, not by a person: resume it.
    paused_by_policy: bool = False
    # Paused by someone during the migration (seen by the monitor): it ends paused.
    paused_outside: bool = False
    source_name: str = "the source"
    destination_name: str = "the destination"


def _destination_cleanup(given: SettleInput) -> tuple[Action, ...]:
    """Remove the incomplete copy on the destination, keeping a definition it had before."""
    dst = given.destination
    actions: list[Action] = []
    if dst.active:
        actions.append(Action(Side.DESTINATION, Op.DESTROY))
    if dst.defined and not given.destination_had_definition:
        actions.append(Action(Side.DESTINATION, Op.UNDEFINE))
    return tuple(actions)


def _cleanup_note(given: SettleInput, actions: tuple[Action, ...]) -> tuple[str, ...]:
    if not actions:
        return ()
    if any(a.op == Op.UNDEFINE for a in actions):
        return (f"removed the incomplete copy on {given.destination_name}",)
    return (f"stopped the incomplete copy on {given.destination_name}, kept its definition",)


def _attention(note: str) -> Settlement:
    return Settlement(Outcome.NEEDS_ATTENTION, notes=(note,))


def settle(given: SettleInput) -> Settlement:
    """What makes a failed or interrupted migration's VM run (offline: be defined) on one
    host, never overriding what a person or the guest chose (turned off, paused)."""
    if not given.live:
        return _settle_offline(given)
    if any(view.reason in POSTCOPY_REASONS for view in (given.source, given.destination)):
        # libvirt knows post-copy began even if the record's write of it was lost.
        given = replace(given, postcopy_started=True)
    return _settle_live(given)


def _settle_live(given: SettleInput) -> Settlement:
    src, dst = given.source, given.destination
    s_name, d_name = given.source_name, given.destination_name

    if not (src.reachable and dst.reachable):
        if src.executing and not given.postcopy_started:
            # libvirt pauses the source before the switchover: executing there, it never switched.
            return Settlement(
                Outcome.FAILED,
                notes=(
                    f"the VM runs on {s_name}",
                    f"{d_name} could not be checked for a leftover copy",
                ),
                needs_cleanup=True,
            )
        down = s_name if not src.reachable else d_name
        return _attention(
            f"{down} cannot be reached: it is not known which host runs the VM, "
            "so nothing was changed on either host; it is settled when both answer"
        )

    if src.executing and dst.executing:
        return _attention(f"the VM executes on both {s_name} and {d_name}: an operator must choose")

    if dst.executing:
        # Switched over; post-copy may still pull pages from the paused source.
        if src.active and given.postcopy_started and src.job_active is not False:
            return _attention(
                f"post-copy: the VM runs on {d_name} but still needs pages from "
                f"{s_name}; nothing is stopped until the source copy is gone"
            )
        if src.active:
            return Settlement(
                Outcome.SUCCEEDED,
                actions=(Action(Side.SOURCE, Op.DESTROY),),
                notes=(f"the VM runs on {d_name}", f"stopped the stale copy on {s_name}"),
            )
        return Settlement(Outcome.SUCCEEDED, notes=(f"the VM runs on {d_name}",))

    if src.executing:
        cleanup = _destination_cleanup(given)
        if given.paused_outside:
            # libvirt resumes the source when the job ends; someone had paused it.
            return Settlement(
                Outcome.FAILED,
                actions=cleanup + (Action(Side.SOURCE, Op.SUSPEND),),
                notes=(
                    *_cleanup_note(given, cleanup),
                    f"the VM was paused on {s_name} during the migration: paused it again",
                ),
            )
        return Settlement(
            Outcome.FAILED,
            actions=cleanup,
            notes=(f"the VM runs on {s_name}", *_cleanup_note(given, cleanup)),
        )

    if given.postcopy_started and (src.active or dst.active):
        return _attention(
            "post-copy failed: the VM's memory is split between "
            f"{s_name} and {d_name}; neither copy can be resumed safely "
            "(recover the post-copy migration or decide by hand)"
        )
    if src.paused:
        cleanup = _destination_cleanup(given)
        if given.source_was_paused:
            resume: tuple[Action, ...] = ()
            note = (f"the VM stays paused on {s_name}, as it was before",)
        elif not given.paused_by_policy and (
            src.reason in PAUSED_BY_CHOICE or given.paused_outside
        ):
            resume = ()
            note = (f"the VM was paused on {s_name} during the migration: it stays paused",)
        else:
            resume = (Action(Side.SOURCE, Op.RESUME),)
            note = (f"resumed the VM on {s_name}",)
        return Settlement(
            Outcome.FAILED, actions=cleanup + resume, notes=_cleanup_note(given, cleanup) + note
        )
    if given.source_was_paused and dst.paused:
        # Arrived paused, a complete copy and an incomplete one look the same.
        return _attention(
            f"the VM was paused; it is paused on {d_name} and not active on "
            f"{s_name}: check that the copy on {d_name} is complete before resuming it"
        )
    if src.defined and src.reason in STOPPED_BY_CHOICE:
        cleanup = _destination_cleanup(given)
        by = "its guest" if src.reason == "shutdown" else "a person or a tool"
        return Settlement(
            Outcome.FAILED,
            actions=cleanup,
            notes=(
                *_cleanup_note(given, cleanup),
                f"the VM was turned off on {s_name} by {by} during the migration "
                f"(libvirt: {src.reason}): it stays off",
            ),
            reason=(
                FailureReason.GUEST_SHUTDOWN
                if src.reason == "shutdown"
                else FailureReason.STOPPED_OUTSIDE
            ),
        )
    if src.defined:
        # Lost by the migration itself (its QEMU died, or the hand-over failed): start it.
        cleanup = _destination_cleanup(given)
        return Settlement(
            Outcome.FAILED,
            actions=cleanup + (Action(Side.SOURCE, Op.START),),
            notes=(
                *_cleanup_note(given, cleanup),
                f"the VM was not running anywhere: restarted it on {s_name} "
                "(its memory state was lost)",
            ),
        )
    return _attention(
        f"the VM runs on neither host and {s_name} has no definition of it"
        + (f"; {d_name} has one ({dst.state})" if dst.defined else "")
    )


def _settle_offline(given: SettleInput) -> Settlement:
    src, dst = given.source, given.destination
    s_name, d_name = given.source_name, given.destination_name
    if not (src.reachable and dst.reachable):
        down = s_name if not src.reachable else d_name
        return _attention(f"{down} cannot be reached: nothing was changed on either host")
    if src.active or dst.active:
        where = s_name if src.active else d_name
        return _attention(f"the VM was started on {where} during an offline migration")
    if src.defined:
        cleanup = _destination_cleanup(given)
        return Settlement(
            Outcome.FAILED,
            actions=cleanup,
            notes=(f"the definition stays on {s_name}", *_cleanup_note(given, cleanup)),
        )
    if dst.defined:
        return Settlement(Outcome.SUCCEEDED, notes=(f"the VM is defined on {d_name}",))
    return _attention("the VM is defined on neither host")


@dataclass(frozen=True)
class Abort:
    """Why the portal aborts a job; `reason` None for a cancel (not a failure)."""

    text: str
    reason: FailureReason | None = None


CANCEL = Abort("cancelled on request")


def timed_out(timeout_s: float) -> Abort:
    return Abort(f"timed out after {timeout_s:g} s", FailureReason.TIMEOUT)


def abort_reason(
    *, cancel_requested: bool, elapsed_s: float, timeout_s: float, postcopy_started: bool
) -> Abort | None:
    """Why the running libvirt job must be aborted now, or None."""
    if postcopy_started:
        return None  # the destination holds the current memory: aborting would lose the VM
    if cancel_requested:
        return CANCEL
    if elapsed_s > timeout_s:
        return timed_out(timeout_s)
    return None


def resume_stalled(*, elapsed_s: float, bound_s: float, source_reason: str) -> Abort | None:
    """Give up on a post-copy resume that has not started within `bound_s`: the source
    still says post-copy failed. libvirt's call may never return (a TCG destination whose
    vCPU waits for a page while holding QEMU's global lock never answers the resume's
    prepare); nothing is aborted, settlement leaves both copies as they are."""
    if elapsed_s <= bound_s or source_reason != "postcopy_failed":
        return None
    return Abort(
        f"the post-copy resume did not start within {bound_s:g} s "
        "(the source still says post-copy failed)",
        FailureReason.LIBVIRT,
    )


def failure_reason(
    *,
    cause: FailureReason,
    cancel_requested: bool,
    hosts_unreachable: bool,
    settled: FailureReason | None = None,
) -> FailureReason | None:
    """Why a migration that did not succeed failed (never from the error text); None:
    cancelled. `settled`: what the hosts told the settlement (e.g. turned off outside)."""
    if settled is not None:
        return settled
    if cause == FailureReason.TIMEOUT:
        return cause  # the portal had aborted it: a cancel asked for later changes nothing
    if cancel_requested:
        return None
    if cause == FailureReason.LIBVIRT and hosts_unreachable:
        return FailureReason.UNREACHABLE  # libvirt's error was the host going away
    return cause


def cleanup_actions(
    *,
    source: HostView,
    destination: HostView,
    destination_had_definition: bool,
    later_migration_of_vm: bool,
) -> tuple[Action, ...] | None:
    """What a retry may remove of a failed migration's leftover; None: not now."""
    if later_migration_of_vm:
        return ()  # what is on the destination now belongs to a later migration
    if not (source.reachable and destination.reachable):
        return None
    if not source.active:
        return None  # only clean while the VM is known to run on the source
    if destination.executing:
        return None  # never stop a copy that executes: an operator must look
    return _destination_cleanup(
        SettleInput(
            source=source,
            destination=destination,
            live=True,
            destination_had_definition=destination_had_definition,
        )
    )


def slot_free(*, outgoing: int, incoming: int, max_outgoing: int, max_incoming: int) -> bool:
    return outgoing < max_outgoing and incoming < max_incoming


def task_lost(*, enqueued_age_s: float | None, lost_after_s: float) -> bool:
    """Is a queued migration's task presumed lost? (Enqueuing again is safe.)"""
    return enqueued_age_s is None or enqueued_age_s > lost_after_s


def due(*, not_before: datetime | None, now: datetime) -> bool:
    return not_before is None or not_before <= now


def window_closed(*, window_end: datetime | None, now: datetime) -> bool:
    return window_end is not None and window_end <= now


def reconcile_sleep_s(
    *, now: datetime, next_pass_at: datetime, next_event_at: datetime | None, poll_s: float
) -> float:
    """The reconciler's sleep: until its next pass or schedule event, at most `poll_s`."""
    wait = min((next_pass_at - now).total_seconds(), poll_s)
    if next_event_at is not None:
        wait = min(wait, (next_event_at - now).total_seconds())
    return max(0.0, wait)


def schedule_errors(
    *, not_before: datetime | None, window_end: datetime | None, now: datetime
) -> dict[str, list[str]]:
    """What is wrong with a migration's schedule, by field; a past `not_before` is "now"."""
    errors: dict[str, list[str]] = {}
    if window_end is not None:
        if window_end <= now:
            errors["window_end"] = [_("The window must end in the future.")]
        elif not_before is not None and window_end <= not_before:
            errors["window_end"] = [_("The window must end after not_before.")]
    return errors


def paused_by_someone(
    *,
    state: str,
    reason: str,
    paused_for_s: float,
    max_downtime_ms: int,
    postcopy: bool,
    paused_by_policy: bool,
    grace_s: float,
) -> bool:
    """Whether the source, paused while its migration runs, was paused by someone.

    During an outgoing migration libvirt names a person's pause "migration", as it names
    QEMU's own pause for the switchover. QEMU pauses only once the rest fits in the
    allowed downtime, and the job ends about that long after: a pause that lasts well
    beyond it, while the job still runs, is someone's."""
    if state != "paused" or postcopy or paused_by_policy:
        return False
    if reason not in ("migration", "user"):
        return False  # post-copy, I/O error, ...: not a choice
    return paused_for_s >= max(grace_s, 4 * max_downtime_ms / 1000)
