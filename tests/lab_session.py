"""The test suite's lab: two real hypervisor hosts, apart from the demo's lab.

They sit on 127.0.0.12 and up, in var/test-lab, so a running `make demo` is not
disturbed. `python -m tests.lab_session up|down|status` drives them by hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lab import core

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("PORTAL_DATA_DIR", BASE_DIR / "var")).resolve()

CONFIG = core.LabConfig(
    root=DATA_DIR / "test-lab",
    image_cache=DATA_DIR / "guest-images",
    # Another checkout testing on this machine at the same time sets its own.
    first_address=os.environ.get("TEST_LAB_FIRST_ADDRESS", "127.0.0.12"),
    name_prefix="tlab",
    guest_memory_mib=int(os.environ.get("TEST_LAB_GUEST_MEMORY_MIB", "256")),
    guest_fill_mib=int(os.environ.get("TEST_LAB_GUEST_FILL_MIB", "128")),
    guest_dirty_mib_s=int(os.environ.get("TEST_LAB_GUEST_DIRTY_MIB_S", "8")),
    start_vms=True,
)
HOST_COUNT = 2


def up() -> list[core.LabHost]:
    return core.up(CONFIG, hosts=HOST_COUNT)


def down() -> None:
    core.down(CONFIG)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "status"
    if command == "up":
        for host in up():
            print(host)
    elif command == "down":
        down()
    else:
        for host in core.status(CONFIG):
            print(host)
