"""The data folder (PORTAL_DATA_DIR), made by the processes that use it (never by
importing the settings). It holds secrets, so it is kept 0700, with a warning if not."""

import os
import stat
import sys
from pathlib import Path

from django.conf import settings

DATA_DIR_MODE = 0o700


def data_dir_tighten(path: Path) -> str | None:
    """Make the data folder 0700 if others have access; the warning printed, or None."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return None
    try:
        path.chmod(DATA_DIR_MODE)
    except OSError:  # not the owner, or a read-only file system
        message = (
            f"WARNING: the data folder {path} is {mode:04o}, readable by others than its "
            f"owner, and this process (uid {os.geteuid()}) cannot change it: "
            f"run `chmod 700 {path}` as its owner"
        )
    else:
        message = f"WARNING: the data folder {path} was {mode:04o}: tightened to 0700"
    print(message, file=sys.stderr, flush=True)
    return message


def data_dir_ensure() -> None:
    """The data folder, 0700, and STATIC_ROOT (WhiteNoise warns about a missing one)."""
    data_dir = Path(settings.DATA_DIR)
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    data_dir_tighten(data_dir)
    Path(settings.STATIC_ROOT).mkdir(exist_ok=True)
