"""What a person may do about a migration that needs attention, as a pure function of
what both hosts say now (no database, libvirt or clock), table-tested.

The same rules as the settlement's (domain/decisions.py): a host that does not answer
is not touched; a copy that holds the only current memory is never stopped; after the
post-copy switch the source no longer has the memory, so keeping it would lose the VM.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from hosts.hypervisor import POSTCOPY_REASONS
from migrations_app.domain.decisions import Action, HostView, Op, Side

POSTCOPY_FAILED = "postcopy_failed"


class Resolution(enum.StrEnum):
    KEEP_DESTINATION = "keep_destination"  # keep the copy there, clean the source's
    KEEP_SOURCE = "keep_source"  # keep the copy there, remove the destination's
    RESUME_POSTCOPY = "resume_postcopy"  # recover a post-copy paused by a broken link
    MARK_RESOLVED = "mark_resolved"  # touch no host; a person says it is settled


RESOLUTION_LABELS = {
    Resolution.KEEP_DESTINATION: gettext_lazy("Keep the copy on the destination, clean the source"),
    Resolution.KEEP_SOURCE: gettext_lazy("Keep the copy on the source, remove the destination's"),
    Resolution.RESUME_POSTCOPY: gettext_lazy("Resume the post-copy migration"),
    Resolution.MARK_RESOLVED: gettext_lazy("Mark resolved (touch no host)"),
}


@dataclass(frozen=True)
class AttentionInput:
    source: HostView
    destination: HostView
    postcopy_started: bool = False  # the record's word; libvirt's reasons also count
    destination_had_definition: bool = False  # a shut-off definition from before
    delete_source: bool = False  # the migration was to undefine the source copy
    destination_persistent: bool = False  # the destination copy has a definition of its own
    source_name: str = "the source"
    destination_name: str = "the destination"


@dataclass(frozen=True)
class Choice:
    """One resolution: offered or not, why, and what it does to the hosts."""

    resolution: Resolution
    safe: bool
    why: str
    actions: tuple[Action, ...] = ()


def _postcopy(given: AttentionInput) -> bool:
    views = (given.source, given.destination)
    return given.postcopy_started or any(v.reason in POSTCOPY_REASONS for v in views)


def _unreachable(given: AttentionInput) -> str:
    down = [
        name
        for name, view in (
            (given.source_name, given.source),
            (given.destination_name, given.destination),
        )
        if not view.reachable
    ]
    return _("%(hosts)s cannot be reached: a host that does not answer is not touched") % {
        "hosts": _(" and ").join(down)
    }


def _keep_destination(given: AttentionInput) -> Choice:
    src, dst = given.source, given.destination
    r = Resolution.KEEP_DESTINATION
    if not (src.reachable and dst.reachable):
        return Choice(r, False, _unreachable(given))
    if not dst.active:
        return Choice(
            r,
            False,
            _("no copy of the VM is active on %(host)s") % {"host": given.destination_name},
        )
    if dst.reason == POSTCOPY_FAILED:
        return Choice(
            r,
            False,
            _(
                "the copy on %(destination)s misses memory pages still on "
                "%(source)s (post-copy failed): resume the post-copy instead"
            )
            % {"destination": given.destination_name, "source": given.source_name},
        )
    if _postcopy(given) and src.active and src.job_active is not False:
        return Choice(
            r,
            False,
            _(
                "post-copy: %(source)s still serves memory pages; "
                "nothing is stopped there until its job has ended"
            )
            % {"source": given.source_name},
        )
    actions: list[Action] = []
    if src.active:
        actions.append(Action(Side.SOURCE, Op.DESTROY))
    # The source keeps its definition unless the migration was to remove it, and only
    # once the destination has one of its own: a definition is never lost.
    if src.defined and given.delete_source and given.destination_persistent:
        actions.append(Action(Side.SOURCE, Op.UNDEFINE))
    return Choice(
        r, True, _("the VM stays on %(host)s") % {"host": given.destination_name}, tuple(actions)
    )


def _keep_source(given: AttentionInput) -> Choice:
    src, dst = given.source, given.destination
    r = Resolution.KEEP_SOURCE
    if not (src.reachable and dst.reachable):
        return Choice(r, False, _unreachable(given))
    if _postcopy(given):
        return Choice(
            r,
            False,
            _(
                "post-copy started: %(source)s no longer has the VM's current "
                "memory; removing the copy on %(destination)s would lose the VM"
            )
            % {"source": given.source_name, "destination": given.destination_name},
        )
    if not src.active:
        return Choice(
            r, False, _("no copy of the VM is active on %(host)s") % {"host": given.source_name}
        )
    actions: list[Action] = []
    if dst.active:
        actions.append(Action(Side.DESTINATION, Op.DESTROY))
    if dst.defined and not given.destination_had_definition:
        actions.append(Action(Side.DESTINATION, Op.UNDEFINE))
    return Choice(
        r, True, _("the VM stays on %(host)s") % {"host": given.source_name}, tuple(actions)
    )


def _resume_postcopy(given: AttentionInput) -> Choice:
    src, dst = given.source, given.destination
    r = Resolution.RESUME_POSTCOPY
    if not (src.reachable and dst.reachable):
        return Choice(r, False, _unreachable(given))
    # libvirt 9: the source "paused (post-copy failed)", the destination "running
    # (post-copy failed)" (its vCPUs wait for the pages still on the source).
    if not (src.active and dst.active and POSTCOPY_FAILED in (src.reason, dst.reason)):
        return Choice(
            r,
            False,
            _(
                "only a post-copy that a broken link stopped (libvirt: post-copy failed, "
                "a copy active on both hosts) can be resumed "
                "(%(source)s: %(source_said)s; %(destination)s: %(destination_said)s)"
            )
            % {
                "source": given.source_name,
                "source_said": _said(src),
                "destination": given.destination_name,
                "destination_said": _said(dst),
            },
        )
    return Choice(
        r,
        True,
        _("libvirt resumes the post-copy to %(host)s (the link is back)")
        % {"host": given.destination_name},
    )


def _said(view: HostView) -> str:
    if view.state is None:
        return _("no such VM")
    return f"{view.state} ({view.reason})" if view.reason else str(view.state)


def attention_choices(given: AttentionInput) -> tuple[Choice, ...]:
    """Every resolution with whether it is safe now; marking resolved always is."""
    return (
        _keep_destination(given),
        _keep_source(given),
        _resume_postcopy(given),
        Choice(Resolution.MARK_RESOLVED, True, _("changes nothing on either host")),
    )


def attention_choice(given: AttentionInput, resolution: Resolution) -> Choice:
    return next(c for c in attention_choices(given) if c.resolution == resolution)
