"""What a person may do about a migration that needs attention (domain/attention.py),
table-tested without any host."""

from __future__ import annotations

import itertools

import pytest

from migrations_app.domain.attention import (
    AttentionInput,
    Resolution,
    attention_choice,
    attention_choices,
)
from migrations_app.domain.decisions import UNREACHABLE, Action, HostView, Op, Side

RUNNING = HostView(True, "running", job_active=False)
RUNNING_JOB = HostView(True, "running", job_active=True)
PAUSED = HostView(True, "paused", job_active=False)
PAUSED_USER = HostView(True, "paused", job_active=False, reason="user")
PC_FAILED = HostView(True, "paused", job_active=True, reason="postcopy_failed")
# libvirt 9's destination after a broken post-copy: vCPUs waiting for pages.
PC_FAILED_DST = HostView(True, "running", job_active=None, reason="postcopy_failed")
PC_PAUSED_JOB = HostView(True, "paused", job_active=True, reason="postcopy")
SHUT_OFF = HostView(True, "shut_off")
ABSENT = HostView(True, None)

SRC_DESTROY = Action(Side.SOURCE, Op.DESTROY)
SRC_UNDEFINE = Action(Side.SOURCE, Op.UNDEFINE)
DST_DESTROY = Action(Side.DESTINATION, Op.DESTROY)
DST_UNDEFINE = Action(Side.DESTINATION, Op.UNDEFINE)

KD, KS, RP, MR = (
    Resolution.KEEP_DESTINATION,
    Resolution.KEEP_SOURCE,
    Resolution.RESUME_POSTCOPY,
    Resolution.MARK_RESOLVED,
)

# (case, source, destination, options, {safe resolution: actions})
CASES = [
    (
        "runs on both, pre-copy",
        RUNNING,
        RUNNING,
        {},
        {KD: (SRC_DESTROY,), KS: (DST_DESTROY, DST_UNDEFINE), MR: ()},
    ),
    (
        "runs on both, the destination had a definition before",
        RUNNING,
        RUNNING,
        {"destination_had_definition": True},
        {KD: (SRC_DESTROY,), KS: (DST_DESTROY,), MR: ()},
    ),
    (
        "post-copy failed on both hosts: only resume or mark",
        PC_FAILED,
        PC_FAILED,
        {"postcopy_started": True},
        {RP: (), MR: ()},
    ),
    (
        "post-copy failed, known from libvirt only (the record's write was lost)",
        PC_FAILED,
        PC_FAILED,
        {},
        {RP: (), MR: ()},
    ),
    (
        "post-copy failed as libvirt 9 shows it: the destination 'running (post-copy failed)'",
        PC_FAILED,
        PC_FAILED_DST,
        {"postcopy_started": True},
        {RP: (), MR: ()},
    ),
    (
        "the same, the source's job no longer reported: still nothing but resume or mark",
        HostView(True, "paused", job_active=False, reason="postcopy_failed"),
        PC_FAILED_DST,
        {},
        {RP: (), MR: ()},
    ),
    (
        "post-copy, destination runs, source still serves pages",
        PC_PAUSED_JOB,
        RUNNING,
        {"postcopy_started": True},
        {MR: ()},
    ),
    (
        "post-copy, destination runs, the source's job ended",
        PAUSED,
        RUNNING,
        {"postcopy_started": True},
        {KD: (SRC_DESTROY,), MR: ()},
    ),
    (
        "source unreachable: touch nothing",
        UNREACHABLE,
        RUNNING,
        {},
        {MR: ()},
    ),
    (
        "destination unreachable: touch nothing",
        RUNNING,
        UNREACHABLE,
        {},
        {MR: ()},
    ),
    (
        "post-copy failed but the destination does not answer",
        PC_FAILED,
        UNREACHABLE,
        {"postcopy_started": True},
        {MR: ()},
    ),
    (
        "paused on arrival after a paused start: keep either",
        SHUT_OFF,
        PAUSED,
        {},
        {KD: (), MR: ()},
    ),
    (
        "keep the destination, the migration was to delete the source, destination persistent",
        RUNNING,
        RUNNING,
        {"delete_source": True, "destination_persistent": True},
        {KD: (SRC_DESTROY, SRC_UNDEFINE), KS: (DST_DESTROY, DST_UNDEFINE), MR: ()},
    ),
    (
        "delete_source, but the destination copy is transient: the definition stays",
        RUNNING,
        RUNNING,
        {"delete_source": True, "destination_persistent": False},
        {KD: (SRC_DESTROY,), KS: (DST_DESTROY, DST_UNDEFINE), MR: ()},
    ),
    (
        "paused by a person on the source, nothing on the destination",
        PAUSED_USER,
        ABSENT,
        {},
        {KS: (), MR: ()},
    ),
    (
        "on neither host",
        ABSENT,
        ABSENT,
        {},
        {MR: ()},
    ),
]


@pytest.mark.parametrize(
    ("source", "destination", "options", "safe"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_safe_resolutions(source, destination, options, safe):
    given = AttentionInput(source=source, destination=destination, **options)
    choices = attention_choices(given)
    assert {c.resolution: c.actions for c in choices if c.safe} == safe
    for choice in choices:
        assert choice.why  # offered or refused, a person reads why


def test_refusals_name_why():
    both_failed = AttentionInput(source=PC_FAILED, destination=PC_FAILED, postcopy_started=True)
    assert "would lose the VM" in attention_choice(both_failed, KS).why
    assert "resume the post-copy" in attention_choice(both_failed, KD).why
    down = AttentionInput(source=RUNNING, destination=UNREACHABLE, destination_name="lab-2")
    assert "lab-2 cannot be reached" in attention_choice(down, KS).why
    running = AttentionInput(source=RUNNING, destination=RUNNING)
    assert "running" in attention_choice(running, RP).why


VIEWS = [
    UNREACHABLE,
    ABSENT,
    SHUT_OFF,
    RUNNING,
    RUNNING_JOB,
    PAUSED,
    PAUSED_USER,
    PC_FAILED,
    PC_FAILED_DST,
    PC_PAUSED_JOB,
]


@pytest.mark.parametrize("postcopy", [False, True])
def test_invariants_over_every_pair_of_views(postcopy):
    """Over every combination: a host that does not answer is never acted on, nothing
    is done after the post-copy switch that removes the destination, an executing copy
    is stopped only when the other side executes too or is kept, and marking resolved
    touches nothing."""
    for src, dst in itertools.product(VIEWS, VIEWS):
        given = AttentionInput(source=src, destination=dst, postcopy_started=postcopy)
        for choice in attention_choices(given):
            if not choice.safe:
                assert not choice.actions
                continue
            touched = {a.side for a in choice.actions}
            if not src.reachable:
                assert Side.SOURCE not in touched and choice.resolution == MR
            if not dst.reachable:
                assert Side.DESTINATION not in touched and choice.resolution == MR
            if postcopy or _postcopy_seen(src, dst):
                assert choice.resolution != KS
            if choice.resolution == MR:
                assert choice.actions == ()
            if choice.resolution == KD:
                assert dst.active and Side.DESTINATION not in touched
            if choice.resolution == KS:
                assert src.active and Side.SOURCE not in touched


def _postcopy_seen(src: HostView, dst: HostView) -> bool:
    return any(v.reason in ("postcopy", "postcopy_failed") for v in (src, dst))
