"""The engine's decisions, table-tested without any host (migrations_app/decisions.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from migrations_app.domain.decisions import (
    UNREACHABLE,
    Abort,
    Action,
    HostView,
    Op,
    Outcome,
    SettleInput,
    Side,
    abort_reason,
    cleanup_actions,
    due,
    failure_reason,
    reconcile_sleep_s,
    resume_stalled,
    schedule_errors,
    settle,
    slot_free,
    task_lost,
    window_closed,
)
from migrations_app.domain.lifecycle import FailureReason
from migrations_app.prechecks.rules import name_or_uuid_clash

RUNNING = HostView(True, "running")
PAUSED = HostView(True, "paused")
SHUT_OFF = HostView(True, "shut_off")
ABSENT = HostView(True, None)
# With libvirt's reason for the state (hosts.gateway.state_reason).
DESTROYED = HostView(True, "shut_off", reason="destroyed")  # virsh destroy
GUEST_SHUTDOWN = HostView(True, "shut_off", reason="shutdown")  # the guest powered off
CRASHED = HostView(True, "shut_off", reason="crashed")  # its QEMU died
PAUSED_BY_USER = HostView(True, "paused", reason="user")  # virsh suspend
PAUSED_POSTCOPY = HostView(True, "paused", reason="postcopy")
PAUSED_POSTCOPY_FAILED = HostView(True, "paused", reason="postcopy_failed")

SRC_DESTROY = Action(Side.SOURCE, Op.DESTROY)
SRC_RESUME = Action(Side.SOURCE, Op.RESUME)
SRC_START = Action(Side.SOURCE, Op.START)
DST_DESTROY = Action(Side.DESTINATION, Op.DESTROY)
DST_UNDEFINE = Action(Side.DESTINATION, Op.UNDEFINE)

# (case, source, destination, options, outcome, actions, needs_cleanup)
LIVE_CASES = [
    ("never left the source", RUNNING, ABSENT, {}, Outcome.FAILED, (), False),
    (
        "incoming copy left paused",
        RUNNING,
        PAUSED,
        {},
        Outcome.FAILED,
        (DST_DESTROY, DST_UNDEFINE),
        False,
    ),
    (
        "incoming copy, destination had the VM's definition (round trip)",
        RUNNING,
        PAUSED,
        {"destination_had_definition": True},
        Outcome.FAILED,
        (DST_DESTROY,),
        False,
    ),
    (
        "shut-off definition of a round trip is left alone",
        RUNNING,
        SHUT_OFF,
        {"destination_had_definition": True},
        Outcome.FAILED,
        (),
        False,
    ),
    (
        "a new shut-off definition on the destination is removed",
        RUNNING,
        SHUT_OFF,
        {},
        Outcome.FAILED,
        (DST_UNDEFINE,),
        False,
    ),
    (
        "source runs, destination unreachable: leftover cleaned later",
        RUNNING,
        UNREACHABLE,
        {},
        Outcome.FAILED,
        (),
        True,
    ),
    (
        "source runs but post-copy started, destination unreachable",
        RUNNING,
        UNREACHABLE,
        {"postcopy_started": True},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    (
        "source unreachable after switchover",
        UNREACHABLE,
        RUNNING,
        {},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    (
        "source unreachable, nothing on destination",
        UNREACHABLE,
        ABSENT,
        {},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    (
        "source paused, destination unreachable",
        PAUSED,
        UNREACHABLE,
        {},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    ("both unreachable", UNREACHABLE, UNREACHABLE, {}, Outcome.NEEDS_ATTENTION, (), False),
    ("switched over, source gone", ABSENT, RUNNING, {}, Outcome.SUCCEEDED, (), False),
    ("switched over, source definition kept", SHUT_OFF, RUNNING, {}, Outcome.SUCCEEDED, (), False),
    (
        "switched over, stale paused source copy stopped",
        PAUSED,
        RUNNING,
        {},
        Outcome.SUCCEEDED,
        (SRC_DESTROY,),
        False,
    ),
    (
        "post-copy running on destination, source still holds pages",
        PAUSED,
        RUNNING,
        {"postcopy_started": True},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    (
        "post-copy done (no job on the source): stale source copy stopped",
        HostView(True, "paused", job_active=False),
        RUNNING,
        {"postcopy_started": True},
        Outcome.SUCCEEDED,
        (SRC_DESTROY,),
        False,
    ),
    (
        "post-copy finished: source copy gone",
        SHUT_OFF,
        RUNNING,
        {"postcopy_started": True},
        Outcome.SUCCEEDED,
        (),
        False,
    ),
    (
        "post-copy failed: both paused",
        PAUSED,
        PAUSED,
        {"postcopy_started": True},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    ("executes on both hosts", RUNNING, RUNNING, {}, Outcome.NEEDS_ATTENTION, (), False),
    (
        "pre-copy aborted, source paused: clean destination, then resume",
        PAUSED,
        PAUSED,
        {},
        Outcome.FAILED,
        (DST_DESTROY, DST_UNDEFINE, SRC_RESUME),
        False,
    ),
    (
        "VM paused by its owner stays paused",
        PAUSED,
        ABSENT,
        {"source_was_paused": True},
        Outcome.FAILED,
        (),
        False,
    ),
    (
        "paused VM paused on destination: complete or not is unknown",
        SHUT_OFF,
        PAUSED,
        {"source_was_paused": True},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    (
        "source QEMU died, destination incomplete: restart on source",
        SHUT_OFF,
        PAUSED,
        {},
        Outcome.FAILED,
        (DST_DESTROY, DST_UNDEFINE, SRC_START),
        False,
    ),
    (
        "running nowhere, source has no definition",
        ABSENT,
        SHUT_OFF,
        {},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    ("defined nowhere", ABSENT, ABSENT, {}, Outcome.NEEDS_ATTENTION, (), False),
    (
        "turned off by a person mid-migration: stays off",
        DESTROYED,
        ABSENT,
        {},
        Outcome.FAILED,
        (),
        False,
    ),
    (
        "the guest powered off mid-migration: stays off, incoming copy removed",
        GUEST_SHUTDOWN,
        PAUSED,
        {},
        Outcome.FAILED,
        (DST_DESTROY, DST_UNDEFINE),
        False,
    ),
    (
        "lost by the migration (QEMU died): started again",
        CRASHED,
        ABSENT,
        {},
        Outcome.FAILED,
        (SRC_START,),
        False,
    ),
    (
        "paused by a person mid-migration: stays paused",
        PAUSED_BY_USER,
        ABSENT,
        {},
        Outcome.FAILED,
        (),
        False,
    ),
    (
        "paused by the portal's pause_when_stalled, then failed: resumed on the source",
        PAUSED_BY_USER,
        ABSENT,
        {"paused_by_policy": True},
        Outcome.FAILED,
        (SRC_RESUME,),
        False,
    ),
    (
        "paused by its owner before, then by the policy: stays paused",
        PAUSED_BY_USER,
        ABSENT,
        {"paused_by_policy": True, "source_was_paused": True},
        Outcome.FAILED,
        (),
        False,
    ),
    (
        "post-copy known from libvirt though the record missed it",
        PAUSED_POSTCOPY,
        RUNNING,
        {},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    (
        "post-copy failed on both sides: neither copy is resumed",
        PAUSED_POSTCOPY_FAILED,
        PAUSED_POSTCOPY_FAILED,
        {},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
    (
        # libvirt 9 on the lab: the destination's vCPUs wait for pages still on the
        # source; taking it for the VM would stop the source and lose them.
        "post-copy failed, destination 'running (post-copy failed)', source job gone",
        HostView(True, "paused", job_active=False, reason="postcopy_failed"),
        HostView(True, "running", reason="postcopy_failed"),
        {"postcopy_started": True},
        Outcome.NEEDS_ATTENTION,
        (),
        False,
    ),
]


@pytest.mark.parametrize(
    "source,expected",
    [
        (DESTROYED, FailureReason.STOPPED_OUTSIDE),
        (GUEST_SHUTDOWN, FailureReason.GUEST_SHUTDOWN),
        (CRASHED, None),
        (SHUT_OFF, None),
    ],
)
def test_settle_says_when_the_vm_was_turned_off_outside(source, expected):
    result = settle(SettleInput(source=source, destination=ABSENT, live=True))
    assert result.reason == expected
    reason = failure_reason(
        cause=FailureReason.LIBVIRT,
        cancel_requested=True,
        hosts_unreachable=False,
        settled=result.reason,
    )
    assert reason == expected  # turned off outside beats a cancel asked for meanwhile


@pytest.mark.parametrize(
    "source,destination,options,outcome,actions,needs_cleanup",
    [case[1:] for case in LIVE_CASES],
    ids=[case[0] for case in LIVE_CASES],
)
def test_settle_live(source, destination, options, outcome, actions, needs_cleanup):
    result = settle(SettleInput(source=source, destination=destination, live=True, **options))
    assert result.outcome == outcome, result.notes
    assert result.actions == actions
    assert result.needs_cleanup == needs_cleanup
    assert result.notes, "every settlement says why"


def test_settle_never_touches_an_unreachable_host_or_the_live_copy():
    """The two invariants, over every combination of reported states."""
    states = [
        UNREACHABLE,
        ABSENT,
        SHUT_OFF,
        PAUSED,
        RUNNING,
        DESTROYED,
        GUEST_SHUTDOWN,
        CRASHED,
        PAUSED_BY_USER,
        PAUSED_POSTCOPY,
    ]
    for source in states:
        for destination in states:
            for postcopy in (False, True):
                for had_definition in (False, True):
                    given = SettleInput(
                        source=source,
                        destination=destination,
                        live=True,
                        postcopy_started=postcopy,
                        destination_had_definition=had_definition,
                    )
                    result = settle(given)
                    sides = {a.side for a in result.actions}
                    if not source.reachable or not destination.reachable:
                        assert not result.actions, given
                    if destination.executing:
                        assert Side.DESTINATION not in sides, given
                    if source.executing:
                        assert Side.SOURCE not in sides, given
                    if had_definition:
                        assert DST_UNDEFINE not in result.actions, given
                    if source.reason in ("destroyed", "shutdown", "user"):
                        # What a person or the guest chose is kept.
                        assert not {Op.START, Op.RESUME} & {a.op for a in result.actions}, given
                    if postcopy or PAUSED_POSTCOPY in (source, destination):
                        # Post-copy: both copies may hold memory; nothing is stopped
                        # on the side that may still be needed.
                        if source.job_active is not False:
                            assert SRC_DESTROY not in result.actions, given
                        assert SRC_RESUME not in result.actions, given
                    if any(a.op in (Op.RESUME, Op.START) for a in result.actions):
                        assert not destination.executing, given
                    if result.outcome == Outcome.SUCCEEDED:
                        assert destination.executing, given
                    if result.outcome == Outcome.FAILED and not source.executing:
                        assert any(a.side == Side.SOURCE for a in result.actions) or (
                            source.paused
                            or result.reason
                            in (FailureReason.STOPPED_OUTSIDE, FailureReason.GUEST_SHUTDOWN)
                        ), given


OFFLINE_CASES = [
    ("definition stays on source", SHUT_OFF, ABSENT, {}, Outcome.FAILED, ()),
    ("half-defined destination removed", SHUT_OFF, SHUT_OFF, {}, Outcome.FAILED, (DST_UNDEFINE,)),
    (
        "round-trip definition kept",
        SHUT_OFF,
        SHUT_OFF,
        {"destination_had_definition": True},
        Outcome.FAILED,
        (),
    ),
    ("moved", ABSENT, SHUT_OFF, {}, Outcome.SUCCEEDED, ()),
    ("started meanwhile", RUNNING, SHUT_OFF, {}, Outcome.NEEDS_ATTENTION, ()),
    ("destination unreachable", SHUT_OFF, UNREACHABLE, {}, Outcome.NEEDS_ATTENTION, ()),
    ("nowhere", ABSENT, ABSENT, {}, Outcome.NEEDS_ATTENTION, ()),
]


@pytest.mark.parametrize(
    "source,destination,options,outcome,actions",
    [case[1:] for case in OFFLINE_CASES],
    ids=[case[0] for case in OFFLINE_CASES],
)
def test_settle_offline(source, destination, options, outcome, actions):
    result = settle(SettleInput(source=source, destination=destination, live=False, **options))
    assert (result.outcome, result.actions) == (outcome, actions), result.notes


@pytest.mark.parametrize(
    "cancel,elapsed,timeout,postcopy,expected",
    [
        (False, 10, 60, False, None),
        (True, 10, 60, False, Abort("cancelled on request")),  # a cancel is no failure
        (False, 61, 60, False, Abort("timed out after 60 s", FailureReason.TIMEOUT)),
        (True, 61, 60, False, Abort("cancelled on request")),
        (True, 61, 60, True, None),  # never abort post-copy: the VM would be lost
        (False, 60, 60, False, None),
    ],
)
def test_abort_reason(cancel, elapsed, timeout, postcopy, expected):
    assert (
        abort_reason(
            cancel_requested=cancel,
            elapsed_s=elapsed,
            timeout_s=timeout,
            postcopy_started=postcopy,
        )
        == expected
    )


R = FailureReason


@pytest.mark.parametrize(
    "elapsed,source_reason,stalled",
    [
        (30, "postcopy_failed", False),  # within the bound: libvirt may still be preparing
        (90, "postcopy_failed", False),
        (91, "postcopy_failed", True),  # past it, not started: given up on
        (91, "postcopy", False),  # started: pages flow again, monitored as post-copy
        (500, "postcopy", False),
        (91, "", False),  # the source copy is gone (migrated): the call is ending
    ],
)
def test_resume_stalled(elapsed, source_reason, stalled):
    verdict = resume_stalled(elapsed_s=elapsed, bound_s=90, source_reason=source_reason)
    assert (verdict is not None) == stalled
    if stalled:
        assert verdict.reason == FailureReason.LIBVIRT
        assert "did not start within 90 s" in verdict.text


@pytest.mark.parametrize(
    "cause,cancel,unreachable,expected",
    [
        # What ended the migration is its reason.
        (R.LIBVIRT, False, False, R.LIBVIRT),
        (R.WORKER_LOST, False, False, R.WORKER_LOST),
        (R.UNREACHABLE, False, False, R.UNREACHABLE),
        (R.INTERNAL, False, False, R.INTERNAL),
        (R.TIMEOUT, False, False, R.TIMEOUT),
        # libvirt's error while a host did not answer the settlement: the host is why.
        (R.LIBVIRT, False, True, R.UNREACHABLE),
        # A known cause stays, whatever the hosts answered.
        (R.WORKER_LOST, False, True, R.WORKER_LOST),
        (R.TIMEOUT, False, True, R.TIMEOUT),
        (R.INTERNAL, False, True, R.INTERNAL),
        # A cancel: cancelled, no failure reason...
        (R.LIBVIRT, True, False, None),
        (R.WORKER_LOST, True, False, None),
        (R.LIBVIRT, True, True, None),
        # ...unless the portal had already aborted it for its timeout.
        (R.TIMEOUT, True, False, R.TIMEOUT),
    ],
)
def test_failure_reason(cause, cancel, unreachable, expected):
    assert (
        failure_reason(cause=cause, cancel_requested=cancel, hosts_unreachable=unreachable)
        == expected
    )


@pytest.mark.parametrize(
    "source,destination,had_definition,later,expected",
    [
        (RUNNING, PAUSED, False, False, (DST_DESTROY, DST_UNDEFINE)),
        (RUNNING, SHUT_OFF, True, False, ()),
        (RUNNING, ABSENT, False, False, ()),
        (RUNNING, UNREACHABLE, False, False, None),
        (UNREACHABLE, PAUSED, False, False, None),
        (SHUT_OFF, PAUSED, False, False, None),  # the VM may not be on the source
        (RUNNING, RUNNING, False, False, None),  # never stop an executing copy
        # A later migration put the VM there: the leftover is not ours any more.
        (SHUT_OFF, RUNNING, False, True, ()),
    ],
)
def test_cleanup_actions(source, destination, had_definition, later, expected):
    assert (
        cleanup_actions(
            source=source,
            destination=destination,
            destination_had_definition=had_definition,
            later_migration_of_vm=later,
        )
        == expected
    )


@pytest.mark.parametrize(
    "outgoing,incoming,expected",
    [(0, 0, True), (1, 1, True), (2, 0, False), (0, 2, False), (2, 2, False)],
)
def test_slot_free(outgoing, incoming, expected):
    assert slot_free(outgoing=outgoing, incoming=incoming, max_outgoing=2, max_incoming=2) is (
        expected
    )


@pytest.mark.parametrize("age,expected", [(None, True), (10, False), (61, True)])
def test_task_lost(age, expected):
    assert task_lost(enqueued_age_s=age, lost_after_s=60) is expected


@pytest.mark.parametrize(
    "by_uuid,by_name_uuid,clash,coming_home",
    [
        (None, None, False, False),
        (("web-1", "shut_off"), "U", False, True),  # the same VM coming home
        (("web-1", "running"), "U", True, False),  # a second active copy
        (("web-1", "paused"), "U", True, False),
        (("other", "shut_off"), None, True, False),  # same UUID, another name
        (None, "OTHER-UUID", True, False),  # another domain with the name
    ],
)
def test_name_or_uuid_clash(by_uuid, by_name_uuid, clash, coming_home):
    verdict = name_or_uuid_clash(
        destination="dst",
        target_name="web-1",
        by_uuid=by_uuid,
        by_name_uuid=by_name_uuid,
        vm_uuid="U",
    )
    assert (verdict.clash, verdict.coming_home) == (clash, coming_home), verdict.message
    assert "dst" in verdict.message


# --- scheduled migrations -------------------------------------------------------------

NOW = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    "not_before,expected",
    [(None, True), (NOW - S, True), (NOW, True), (NOW + S, False), (NOW + 3600 * S, False)],
)
def test_due(not_before, expected):
    assert due(not_before=not_before, now=NOW) is expected


@pytest.mark.parametrize(
    "window_end,expected",
    [(None, False), (NOW + S, False), (NOW, True), (NOW - S, True)],
)
def test_window_closed(window_end, expected):
    assert window_closed(window_end=window_end, now=NOW) is expected


@pytest.mark.parametrize(
    "not_before,window_end,expected",
    [
        (None, None, {}),
        (NOW + S, None, {}),
        (NOW - 3600 * S, None, {}),  # in the past: start now
        (None, NOW + S, {}),
        (NOW + S, NOW + 2 * S, {}),
        (NOW - 10 * S, NOW + S, {}),
        (NOW + 2 * S, NOW + S, {"window_end": ["The window must end after not_before."]}),
        (NOW + S, NOW + S, {"window_end": ["The window must end after not_before."]}),
        (None, NOW, {"window_end": ["The window must end in the future."]}),
        (NOW - 2 * S, NOW - S, {"window_end": ["The window must end in the future."]}),
    ],
)
def test_schedule_errors(not_before, window_end, expected):
    assert schedule_errors(not_before=not_before, window_end=window_end, now=NOW) == expected


@pytest.mark.parametrize(
    "next_pass_in,next_event_in,poll,expected",
    [
        (15, None, 1, 1),  # nothing scheduled: look again after the poll
        (15, None, 30, 15),  # a poll longer than the period: the pass comes first
        (0.5, None, 1, 0.5),
        (15, 0.25, 1, 0.25),  # wake exactly at the next due time
        (15, 5, 1, 1),
        (0.1, 0.5, 1, 0.1),
        (15, -3, 1, 0),  # overdue: at once
        (-1, None, 1, 0),
    ],
)
def test_reconcile_sleep(next_pass_in, next_event_in, poll, expected):
    wait = reconcile_sleep_s(
        now=NOW,
        next_pass_at=NOW + next_pass_in * S,
        next_event_at=None if next_event_in is None else NOW + next_event_in * S,
        poll_s=poll,
    )
    assert wait == pytest.approx(expected)


PAUSED_DURING_MIGRATION = HostView(True, "paused", reason="migration")  # or QEMU's switchover


@pytest.mark.parametrize(
    "source, destination, expected_actions, note",
    [
        # libvirt resumed the source when the job ended: someone had paused it
        (RUNNING, ABSENT, (Action(Side.SOURCE, Op.SUSPEND),), "paused it again"),
        (
            RUNNING,
            PAUSED,
            (DST_DESTROY, DST_UNDEFINE, Action(Side.SOURCE, Op.SUSPEND)),
            "paused it again",
        ),
        # still paused: it stays so, whatever libvirt calls the pause
        (PAUSED_DURING_MIGRATION, ABSENT, (), "it stays paused"),
        (PAUSED_BY_USER, ABSENT, (), "it stays paused"),
    ],
)
def test_settle_keeps_a_pause_someone_made_during_the_migration(
    source, destination, expected_actions, note
):
    settled = settle(SettleInput(source, destination, live=True, paused_outside=True))
    assert settled.outcome == Outcome.FAILED
    assert settled.actions == expected_actions
    assert any(note in text for text in settled.notes), settled.notes


def test_without_a_pause_seen_a_paused_source_is_resumed():
    settled = settle(SettleInput(PAUSED_DURING_MIGRATION, ABSENT, live=True))
    assert settled.actions == (SRC_RESUME,)


@pytest.mark.parametrize(
    "state, reason, paused_for, downtime_ms, postcopy, by_policy, expected",
    [
        ("paused", "migration", 6.0, 500, False, False, True),
        ("paused", "user", 6.0, 500, False, False, True),
        # QEMU's own switchover pause lasts about the downtime
        ("paused", "migration", 1.0, 500, False, False, False),
        ("paused", "migration", 4.9, 500, False, False, False),
        # a large allowed downtime (a convergence step) needs a longer pause
        ("paused", "migration", 6.0, 3200, False, False, False),
        ("paused", "migration", 13.0, 3200, False, False, True),
        # post-copy, the portal's own pause, other reasons: not a person's choice
        ("paused", "postcopy", 60.0, 500, True, False, False),
        ("paused", "migration", 60.0, 500, False, True, False),
        ("paused", "ioerror", 60.0, 500, False, False, False),
        ("running", "migrated", 60.0, 500, False, False, False),
    ],
)
def test_paused_by_someone(state, reason, paused_for, downtime_ms, postcopy, by_policy, expected):
    from migrations_app.domain.decisions import paused_by_someone

    assert (
        paused_by_someone(
            state=state,
            reason=reason,
            paused_for_s=paused_for,
            max_downtime_ms=downtime_ms,
            postcopy=postcopy,
            paused_by_policy=by_policy,
            grace_s=5.0,
        )
        is expected
    )
