"""Stall detection and the convergence policies' steps, as tables (no hosts)."""

import pytest

from migrations_app.domain.convergence import (
    Act,
    ConvergencePolicy,
    Point,
    PolicyState,
    eta_s,
    honest_percent,
    judge,
    next_step,
)

MiB = 2**20


def passes(*starts_mib: float, dirty: float = 4, moved: float = 10, per_pass: int = 3):
    """Samples of consecutive passes from 1; each pass starts at the remaining given and
    sends a third of it per sample; rates in MiB/s."""
    points = []
    for it, start in enumerate(starts_mib, start=1):
        for k in range(per_pass):
            points.append(
                Point(
                    memory_iteration=it,
                    data_remaining_bytes=int(start * MiB * (per_pass - k) / per_pass),
                    memory_dirty_rate_bytes_s=int(dirty * MiB) if it >= 2 else None,
                    throughput_bytes_s=int(moved * MiB),
                )
            )
    return points


# The case: 27 -> 287 -> 53 -> 256 again and again.
OSCILLATING = (400, 287, 53, 256, 60, 250, 55)
STALLED = judge(passes(*OSCILLATING, dirty=9, moved=10), allowed_downtime_ms=100, stall_passes=2)
FINE = judge(passes(200, 100, 50), allowed_downtime_ms=100, stall_passes=2)


@pytest.mark.parametrize(
    "starts, dirty, moved, k, stalled, no_progress, outpaced",
    [
        # Falling each pass, the guest slower than the link: converging.
        ((200, 100, 50, 25, 12), 4, 10, 2, False, False, False),
        # The oscillation: no new low over 2 passes, the guest as fast as the link.
        (OSCILLATING, 9, 10, 2, True, True, True),
        # The same with a slow guest: only the trend says it.
        (OSCILLATING, 2, 10, 2, True, True, False),
        # The guest outpaces the link while the remainder still falls (its set is bounded).
        ((200, 150, 120, 100), 12, 10, 2, True, False, True),
        # Too few passes to judge.
        ((200, 180), 12, 10, 2, False, False, False),
        # Flat for 3 passes with K=3 is a stall; with K=4 not yet.
        ((200, 100, 100, 100, 100), 4, 10, 3, True, True, False),
        ((200, 100, 100, 100, 100), 4, 10, 4, False, False, False),
    ],
)
def test_stall_verdicts(starts, dirty, moved, k, stalled, no_progress, outpaced):
    verdict = judge(
        passes(*starts, dirty=dirty, moved=moved), allowed_downtime_ms=100, stall_passes=k
    )
    assert (verdict.stalled, verdict.no_progress, verdict.outpaced) == (
        stalled,
        no_progress,
        outpaced,
    )
    assert verdict.passes == len(starts)
    assert verdict.trend == tuple(int(s * MiB) for s in starts[1:])


def test_not_stalled_when_the_rest_fits_in_the_allowed_downtime():
    # 55 MiB / 3 left at 10 MiB/s = 1.8 s: a 2 s downtime ends it, 1 s does not.
    points = passes(*OSCILLATING, dirty=9, moved=10)
    assert judge(points, allowed_downtime_ms=1000, stall_passes=2).stalled
    fits = judge(points, allowed_downtime_ms=2000, stall_passes=2)
    assert not fits.stalled and fits.needed_downtime_ms == 1833


def test_since_pass_restarts_the_count_after_a_policy_step():
    points = passes(*OSCILLATING, dirty=9, moved=10)
    assert judge(points, allowed_downtime_ms=100, stall_passes=2).stalled
    after = judge(points, allowed_downtime_ms=200, stall_passes=2, since_pass=6)
    assert not after.stalled and after.trend == (55 * MiB,)


def test_sentence_and_eta_follow_the_verdict():
    stalled = STALLED
    assert stalled.sentence.startswith(
        "not converging: the guest changes 9 MiB/s, the link moves 10 MiB/s"
    )
    assert "ms of downtime, 100 ms allowed" in stalled.sentence
    assert eta_s(stalled, 20 * MiB) is None
    good = judge(passes(200, 100, 50, dirty=4, moved=10), allowed_downtime_ms=100, stall_passes=2)
    assert good.converging and good.sentence.startswith("converging:")
    assert eta_s(good, 60 * MiB) == 10.0  # 60 MiB at 10 - 4 MiB/s
    first = judge(passes(400), allowed_downtime_ms=100, stall_passes=2)
    assert first.sentence == "copying the memory for the first time"
    assert eta_s(first, 60 * MiB) is None


@pytest.mark.parametrize(
    "policy, verdict, state, act, downtime",
    [
        (ConvergencePolicy.NONE, STALLED, PolicyState(100), Act.WAIT, None),
        (ConvergencePolicy.ABORT_WHEN_STALLED, FINE, PolicyState(100), Act.WAIT, None),
        (ConvergencePolicy.ABORT_WHEN_STALLED, STALLED, PolicyState(100), Act.ABORT, None),
        (ConvergencePolicy.POSTCOPY_WHEN_STALLED, STALLED, PolicyState(100), Act.POSTCOPY, None),
        (ConvergencePolicy.POSTCOPY_WHEN_STALLED, STALLED, PolicyState(100, True), Act.WAIT, None),
        (ConvergencePolicy.PAUSE_WHEN_STALLED, STALLED, PolicyState(100), Act.PAUSE, None),
        (ConvergencePolicy.PAUSE_WHEN_STALLED, STALLED, PolicyState(100, True), Act.WAIT, None),
        # The schedule: the next step above what libvirt has now, then abort.
        (ConvergencePolicy.MINIMAL_DOWNTIME, STALLED, PolicyState(100), Act.RAISE_DOWNTIME, 200),
        (ConvergencePolicy.MINIMAL_DOWNTIME, STALLED, PolicyState(500), Act.RAISE_DOWNTIME, 800),
        (ConvergencePolicy.MINIMAL_DOWNTIME, STALLED, PolicyState(3200), Act.ABORT, None),
        (ConvergencePolicy.MINIMAL_DOWNTIME, FINE, PolicyState(3200), Act.WAIT, None),
    ],
)
def test_policy_steps(policy, verdict, state, act, downtime):
    step = next_step(policy, verdict, state)
    assert (step.act, step.downtime_ms) == (act, downtime)
    if act == Act.ABORT:
        assert policy.value in step.reason and "not converging" in step.reason


def test_percent_never_sits_near_100_while_not_converging():
    # First pass: up to 90 %; then only a falling remainder moves it on.
    first = judge(passes(400), allowed_downtime_ms=100, stall_passes=2)
    assert honest_percent(raw=99.5, verdict=first, previous=0) == 89.55
    assert honest_percent(raw=99.5, verdict=STALLED, previous=89.55) == 89.55
    # A previous percent is never lowered (it only stops).
    assert honest_percent(raw=10, verdict=STALLED, previous=89.55) == 89.55
    good = judge(passes(200, 100, 50, dirty=4, moved=10), allowed_downtime_ms=100, stall_passes=2)
    # The remainder halved from pass 2 to 3: half of the last 9.9 points.
    assert honest_percent(raw=99.5, verdict=good, previous=89.55) == 94.95
    assert honest_percent(raw=99.5, verdict=good, previous=99.9) == 99.9
