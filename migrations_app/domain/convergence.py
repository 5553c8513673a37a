"""Does a running migration converge, and what a convergence policy does when it does not
(pure functions over the progress samples; the worker's monitor does the I/O)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import models
from django.utils.translation import gettext_lazy as _

MiB = 2**20


class ConvergencePolicy(models.TextChoices):
    NONE = "none", _("None: wait (until the timeout)")
    MINIMAL_DOWNTIME = (
        "minimal_downtime",
        _("Minimal downtime: raise the allowed downtime in steps, then abort"),
    )
    POSTCOPY_WHEN_STALLED = (
        "postcopy_when_stalled",
        _("Post-copy when stalled (recommended; needs allow_postcopy)"),
    )
    PAUSE_WHEN_STALLED = "pause_when_stalled", _("Pause the guest when stalled, so the copy ends")
    ABORT_WHEN_STALLED = "abort_when_stalled", _("Abort when stalled, with the reason")


RECOMMENDED_POLICY = ConvergencePolicy.POSTCOPY_WHEN_STALLED
# oVirt's "minimal downtime" schedule doubles the allowed downtime while stalled.
DOWNTIME_STEPS_MS: tuple[int, ...] = (100, 200, 400, 800, 1600, 3200)


@dataclass(frozen=True)
class Point:
    """The figures of one sample that the verdict reads."""

    memory_iteration: int | None
    data_remaining_bytes: int | None
    memory_dirty_rate_bytes_s: int | None
    throughput_bytes_s: int | None


@dataclass(frozen=True)
class Verdict:
    passes: int  # libvirt's memory iteration (1: the first full copy)
    # The remaining memory at the start of each pass judged (what that pass had to send).
    trend: tuple[int, ...]
    dirty_rate_bytes_s: int | None
    throughput_bytes_s: int | None
    # The pause the remaining memory would need at the current throughput.
    needed_downtime_ms: int | None
    no_progress: bool  # no new lowest remaining over the last K passes
    outpaced: bool  # the guest dirties memory at least as fast as the link moves it
    stalled: bool
    sentence: str

    @property
    def converging(self) -> bool:
        """Shown as converging only on evidence: the guest measured slower than the link."""
        known = self.dirty_rate_bytes_s is not None and bool(self.throughput_bytes_s)
        if not known or self.dirty_rate_bytes_s >= self.throughput_bytes_s:
            return False
        return self.passes >= 2 and not self.stalled and not self.outpaced


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / MiB:.0f} MiB"


def judge(
    points: Sequence[Point],
    *,
    allowed_downtime_ms: int,
    stall_passes: int,
    since_pass: int = 0,
    margin: float = 0.1,
) -> Verdict:
    """Stalled when, over the passes after `since_pass` (a policy step restarts the count):
    the remaining memory has made no new low for `stall_passes` passes, or the guest has
    dirtied at least what the link moved in each of the last `stall_passes` passes; never
    when the remaining memory fits in the allowed downtime (libvirt then ends the copy)."""
    starts: dict[int, int] = {}  # pass -> remaining at its first sample
    ratios: dict[int, list[float]] = {}
    for point in points:
        it, remaining = point.memory_iteration, point.data_remaining_bytes
        if it is None or remaining is None or it <= since_pass:
            continue
        starts.setdefault(it, remaining)
        dirty, moved = point.memory_dirty_rate_bytes_s, point.throughput_bytes_s
        if it >= 2 and dirty is not None and moved:
            ratios.setdefault(it, []).append(dirty / moved)
    last = next((p for p in reversed(points) if p.memory_iteration), None)
    passes = last.memory_iteration if last and last.memory_iteration else 0
    dirty = last.memory_dirty_rate_bytes_s if last else None
    moved = last.throughput_bytes_s if last else None
    remaining = last.data_remaining_bytes if last else None
    needed = int(1000 * remaining / moved) if remaining is not None and moved else None
    # Pass 1 copies all the memory: the dirtied set is known from pass 2 on.
    trend = tuple(starts[it] for it in sorted(starts) if it >= 2)
    k = max(1, stall_passes)
    no_progress = len(trend) > k and min(trend[-k:]) >= (1 - margin) * min(trend[:-k])
    judged = sorted(ratios)[-k:]
    outpaced = len(judged) >= k and all(
        sum(ratios[it]) / len(ratios[it]) >= 1 - margin for it in judged
    )
    fits = needed is not None and needed <= allowed_downtime_ms
    stalled = (no_progress or outpaced) and not fits
    return Verdict(
        passes=passes,
        trend=trend,
        dirty_rate_bytes_s=dirty,
        throughput_bytes_s=moved,
        needed_downtime_ms=needed,
        no_progress=no_progress,
        outpaced=outpaced,
        stalled=stalled,
        sentence=sentence(
            passes=passes,
            dirty=dirty,
            moved=moved,
            stalled=stalled,
            outpaced=outpaced,
            needed_ms=needed,
            allowed_ms=allowed_downtime_ms,
        ),
    )


def sentence(
    *,
    passes: int,
    dirty: int | None,
    moved: int | None,
    stalled: bool,
    outpaced: bool,
    needed_ms: int | None,
    allowed_ms: int,
) -> str:
    """The verdict in plain words, for the progress view and the record."""
    if passes < 2:
        return "copying the memory for the first time"
    rates = f"the guest changes {_mib(dirty)}/s, the link moves {_mib(moved)}/s"
    if stalled or outpaced:
        need = f"; it would need {needed_ms} ms of downtime, {allowed_ms} ms allowed"
        return f"not converging: {rates}" + (need if needed_ms is not None else "")
    return f"converging: {rates}"


def eta_s(verdict: Verdict, remaining: int | None) -> float | None:
    """Seconds left, only while converging: the net rate at which the remainder shrinks."""
    if not verdict.converging or remaining is None:
        return None
    moved, dirty = verdict.throughput_bytes_s or 0, verdict.dirty_rate_bytes_s or 0
    if moved <= dirty:
        return None
    return round(remaining / (moved - dirty), 1)


class Act(enum.StrEnum):
    WAIT = "wait"
    RAISE_DOWNTIME = "raise_downtime"
    POSTCOPY = "postcopy"
    PAUSE = "pause"
    ABORT = "abort"


@dataclass(frozen=True)
class PolicyState:
    allowed_downtime_ms: int  # as libvirt read it back last
    acted: bool = False  # post-copy or pause asked for already


@dataclass(frozen=True)
class Step:
    act: Act
    downtime_ms: int | None = None
    reason: str = ""


def next_step(
    policy: str,
    verdict: Verdict,
    state: PolicyState,
    *,
    downtime_steps: Sequence[int] = DOWNTIME_STEPS_MS,
) -> Step:
    """What the policy does now, given the verdict (a step restarts the pass count)."""
    if policy == ConvergencePolicy.NONE or not verdict.stalled or state.acted:
        return Step(Act.WAIT)
    why = verdict.sentence
    if policy == ConvergencePolicy.ABORT_WHEN_STALLED:
        return Step(Act.ABORT, reason=f"aborted by the policy abort_when_stalled: {why}")
    if policy == ConvergencePolicy.POSTCOPY_WHEN_STALLED:
        return Step(Act.POSTCOPY, reason=why)
    if policy == ConvergencePolicy.PAUSE_WHEN_STALLED:
        return Step(Act.PAUSE, reason=why)
    if policy == ConvergencePolicy.MINIMAL_DOWNTIME:
        higher = [ms for ms in downtime_steps if ms > state.allowed_downtime_ms]
        if higher:
            return Step(Act.RAISE_DOWNTIME, downtime_ms=higher[0], reason=why)
        return Step(
            Act.ABORT,
            reason=f"aborted by the policy minimal_downtime: still {why} at its last step "
            f"({state.allowed_downtime_ms} ms)",
        )
    return Step(Act.WAIT)


# The first full copy fills the bar up to here; the rest only while converging.
FIRST_PASS_SHARE = 90.0


def honest_percent(*, raw: float, verdict: Verdict, previous: float) -> float:
    """A percent that never falls and never sits near 100 while the copy does not converge:
    the first pass fills FIRST_PASS_SHARE; later passes add only by a falling remainder."""
    if verdict.passes <= 1:
        value = FIRST_PASS_SHARE * raw / 100
    elif verdict.converging and verdict.trend and verdict.trend[0]:
        shrunk = max(0.0, 1 - verdict.trend[-1] / verdict.trend[0])
        value = FIRST_PASS_SHARE + (99.9 - FIRST_PASS_SHARE) * shrunk
    else:
        value = min(previous, FIRST_PASS_SHARE)
    return round(min(99.9, max(previous, value)), 2)


# Before a migration starts: will the copy converge at all? ---------------------------

# The link assumed when no uncapped migration between the two hosts was measured yet:
# 1 Gbit/s, the slowest network a migration is usually given.
DEFAULT_LINK_BYTES_S = 125_000_000


class Outlook(models.TextChoices):
    CONVERGES = "converges", "Should converge by itself"
    WILL_NOT_CONVERGE = "will_not_converge", "Will not converge without a policy"
    UNKNOWN = "unknown", "Not predicted"


class LinkBasis(models.TextChoices):
    MEASURED = "measured", "the fastest uncapped migration between these hosts"
    DEFAULT = "default", "assumed (no uncapped migration between these hosts yet)"


@dataclass(frozen=True)
class Forecast:
    outlook: Outlook
    dirty_rate_bytes_s: int | None  # the guest, measured by libvirt before starting
    # What the copy can move: the lower of the cap and the link.
    rate_bytes_s: int | None
    cap_bytes_s: int | None  # the bandwidth cap asked for (None: none)
    link_bytes_s: int | None
    link_basis: LinkBasis | None
    recommended_policy: str | None  # only when it will not converge
    message: str

    @property
    def warns(self) -> bool:
        return self.outlook == Outlook.WILL_NOT_CONVERGE


def forecast(
    *,
    dirty_rate_bytes_s: int | None,
    cap_mib_s: int,
    measured_link_bytes_s: int | None,
    policy: str,
    postcopy_possible: bool = True,
    not_measured_why: str = "",
    margin: float = 0.1,
) -> Forecast:
    """Compare the guest's dirty rate with what the copy may move (the cap, else the
    link: measured between the two hosts, else DEFAULT_LINK_BYTES_S). A guest dirtying
    at least 90 % of that will not converge by itself (as `judge`'s "outpaced"): the
    answer recommends a policy that ends it (post-copy where possible, else a pause).
    A warning only: the migration may start all the same."""
    cap = cap_mib_s * MiB if cap_mib_s else None
    link, basis = (
        (measured_link_bytes_s, LinkBasis.MEASURED)
        if measured_link_bytes_s
        else (DEFAULT_LINK_BYTES_S, LinkBasis.DEFAULT)
    )
    rate = min(cap, link) if cap else link
    if dirty_rate_bytes_s is None:
        return Forecast(
            outlook=Outlook.UNKNOWN,
            dirty_rate_bytes_s=None,
            rate_bytes_s=rate,
            cap_bytes_s=cap,
            link_bytes_s=link,
            link_basis=basis,
            recommended_policy=None,
            message=f"not predicted: {not_measured_why or 'the dirty rate was not measured'}",
        )
    limit = "the bandwidth cap" if cap and cap <= link else f"the link ({basis.label})"
    rates = (
        f"the guest changes {_mib(dirty_rate_bytes_s)}/s, "
        f"the copy may move {_mib(rate)}/s ({limit})"
    )
    if dirty_rate_bytes_s < (1 - margin) * rate:
        return Forecast(
            outlook=Outlook.CONVERGES,
            dirty_rate_bytes_s=dirty_rate_bytes_s,
            rate_bytes_s=rate,
            cap_bytes_s=cap,
            link_bytes_s=link,
            link_basis=basis,
            recommended_policy=None,
            message=f"should converge: {rates}",
        )
    recommended = (
        ConvergencePolicy.POSTCOPY_WHEN_STALLED
        if postcopy_possible
        else ConvergencePolicy.PAUSE_WHEN_STALLED
    )
    if policy == ConvergencePolicy.NONE:
        advice = f"; recommended: the policy {recommended.value}"
    else:
        advice = f"; the policy {policy} acts when it stalls"
    if cap and cap < link and dirty_rate_bytes_s < (1 - margin) * link:
        advice += f", or a cap above {_mib(int(dirty_rate_bytes_s / (1 - margin)) + MiB)}/s"
    return Forecast(
        outlook=Outlook.WILL_NOT_CONVERGE,
        dirty_rate_bytes_s=dirty_rate_bytes_s,
        rate_bytes_s=rate,
        cap_bytes_s=cap,
        link_bytes_s=link,
        link_basis=basis,
        recommended_policy=recommended.value,
        message=f"will not converge without a policy: {rates}{advice}",
    )
