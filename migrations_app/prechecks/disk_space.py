"""Storage "copy": can the destination's pools take the disks the migration creates? Pure."""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.utils.translation import gettext as _

from hosts import gateway
from migrations_app.prechecks.verdicts import Verdict, passed


@dataclass(frozen=True)
class DiskToCopy:
    path: str
    capacity_bytes: int
    allocation_bytes: int  # what it takes on the source now
    on_destination: bool  # already there (pre-created): libvirt copies into it


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def copy_space_verdict(
    *, destination: str, disks: list[DiskToCopy], pools: dict[str, gateway.PoolInfo | None]
) -> Verdict:
    """Can the destination's pools take the disks a storage "copy" migration creates?
    QEMU's mirror fills each one (a 16 MiB qcow2 with 196 KiB allocated arrived with
    16.3 MiB): each needs its capacity, or its allocation if larger, free in its pool."""
    if not disks:
        return passed(_("the VM has no disk to copy"))
    to_create = [d for d in disks if not d.on_destination]
    if not to_create:
        return passed(
            _("every disk already exists on %(host)s: libvirt copies into it")
            % {"host": destination}
        )
    problems, notes = [], []
    for directory in sorted({os.path.dirname(d.path) for d in to_create}):
        here = [d for d in to_create if os.path.dirname(d.path) == directory]
        names = ", ".join(os.path.basename(d.path) for d in here)
        pool = pools.get(directory)
        if pool is None:
            problems.append(
                _(
                    "no active storage pool on %(host)s has the folder %(folder)s, so "
                    "libvirt cannot create %(names)s there: define and start one for it "
                    "(virsh pool-define-as NAME dir --target %(folder)s; virsh pool-start NAME) "
                    "or create the disks there beforehand"
                )
                % {"host": destination, "folder": directory, "names": names}
            )
            continue
        needed = sum(max(d.capacity_bytes, d.allocation_bytes) for d in here)
        if needed > pool.available_bytes:
            problems.append(
                _(
                    "pool '%(pool)s' on %(host)s (%(folder)s) has %(free)s free, the disks "
                    "to copy there (%(names)s) take %(needed)s: free %(missing)s or more "
                    "there, or choose another destination or shared storage"
                )
                % {
                    "pool": pool.name,
                    "host": destination,
                    "folder": directory,
                    "free": _mib(pool.available_bytes),
                    "names": names,
                    "needed": _mib(needed),
                    "missing": _mib(needed - pool.available_bytes),
                }
            )
        else:
            notes.append(
                _("pool '%(pool)s' on %(host)s has %(free)s free for %(needed)s of %(names)s")
                % {
                    "pool": pool.name,
                    "host": destination,
                    "free": _mib(pool.available_bytes),
                    "needed": _mib(needed),
                    "names": names,
                }
            )
    return Verdict.of(not problems, "; ".join(problems or notes))
