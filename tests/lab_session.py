"""The test suite's lab: real hypervisor hosts (three by default), apart from the demo's lab.

They sit on 127.0.0.12 and up, in var/test-lab, so a running `make demo` is not
disturbed. `python -m tests.lab_session up|down|status|heal` drives them by hand.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from lab import faults, layout, lifecycle, machines

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("PORTAL_DATA_DIR", BASE_DIR / "var")).resolve()

# The data folder is 0700 (portal/datadir.py): a lab host's own users (ssh, sudo) could
# not reach their home below it. Each host hides it under a tmpfs and sees only its own
# folder again (lab.host_setup); the PostgreSQL profile's data folder (var/pg-profile) sits in
# the first profile's, so there the outer one is hidden.
_MAIN_DATA_DIR = BASE_DIR / "var"
PRIVATE_PATHS = (_MAIN_DATA_DIR if DATA_DIR.is_relative_to(_MAIN_DATA_DIR) else DATA_DIR,)

CONFIG = layout.LabConfig(
    root=DATA_DIR / "test-lab",
    private_paths=PRIVATE_PATHS,
    # Shared by the two profiles' labs when `make test` runs them side by side.
    image_cache=Path(os.environ.get("TEST_LAB_IMAGE_CACHE", DATA_DIR / "guest-images")),
    # Another checkout testing on this machine at the same time sets its own.
    first_address=os.environ.get("TEST_LAB_FIRST_ADDRESS", "127.0.0.12"),
    name_prefix="tlab",
    guest_memory_mib=int(os.environ.get("TEST_LAB_GUEST_MEMORY_MIB", "256")),
    guest_fill_mib=int(os.environ.get("TEST_LAB_GUEST_FILL_MIB", "128")),
    guest_dirty_mib_s=int(os.environ.get("TEST_LAB_GUEST_DIRTY_MIB_S", "8")),
    start_vms=True,
    # Small diskless guests on every host (<host>-extra-<k>); 0 by default: they cost
    # RAM and start time (test_extra_vms_lab.py adds them for itself).
    extra_vms=int(os.environ.get("TEST_LAB_EXTRA_VMS", "0")),
)
# The VMs start on the first host only; the third host is a spare destination (e.g. for
# fault tests that need a bystander). TEST_LAB_HOSTS=2 saves its memory and start time.
HOST_COUNT = int(os.environ.get("TEST_LAB_HOSTS", "3"))


def up() -> list[layout.LabHost]:
    return lifecycle.up(CONFIG, hosts=HOST_COUNT)


def heal() -> None:
    """Undo every fault a test may have left: nft cuts removed, libvirtds continued."""
    faults.heal_all(CONFIG)
    faults.thaw_all(CONFIG)


# tests/test_tls_lab.py's two TLS-only hosts live beside the session's lab.
TLS_LAB_ROOT = DATA_DIR / "test-lab-tls"


def down() -> None:
    lifecycle.down(CONFIG)  # heals first, see lifecycle.down
    if TLS_LAB_ROOT.exists():
        lifecycle.down(dataclasses.replace(CONFIG, root=TLS_LAB_ROOT, name_prefix="tlslab"))


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "status"
    if command == "up":
        for host in up():
            print(host)
    elif command == "down":
        down()
    elif command == "heal":
        heal()
    else:
        for host in machines.status(CONFIG):
            print(host)
