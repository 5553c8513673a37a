"""Reading the lab guest's console (lab.domains.console_boots, wait_for_filled_guest):
a guest counts as ready only once its current boot has filled its RAM and not crashed."""

from __future__ import annotations

import pytest

from lab import domains, layout

BOOT = "LAB-GUEST userspace uptime=2.3s\nLAB-GUEST filled 128 MiB uptime=6.1s\n"
CRASH = "[ 398.08] BUG: kernel NULL pointer dereference\n[ 398.10] Oops: 0010 [#1]\n"


def _config(tmp_path, text: str) -> layout.LabConfig:
    config = layout.LabConfig(root=tmp_path, image_cache=tmp_path / "images")
    console = layout.console_log_path(config)
    console.parent.mkdir(parents=True)
    console.write_text(text)
    return config


def test_the_console_is_cut_at_each_boot(tmp_path):
    config = _config(tmp_path, BOOT + CRASH + BOOT)
    earlier, current = domains.console_boots(config)
    assert len(earlier) == 2  # before the first boot, and the first boot's own lines
    assert "Oops" in earlier[1] and "Oops" not in current
    assert "filled 128 MiB" in current


@pytest.mark.parametrize(
    "text, ready",
    [
        (BOOT, True),
        (BOOT + CRASH, False),  # crashed and not rebooted (yet)
        (BOOT + CRASH + BOOT, True),  # rebooted and filled again
        (BOOT + CRASH + "LAB-GUEST userspace uptime=2.3s\n", False),  # still filling
        ("", False),
    ],
)
def test_a_guest_is_ready_once_its_current_boot_filled_and_did_not_crash(tmp_path, text, ready):
    config = _config(tmp_path, text)
    if ready:
        domains.wait_for_filled_guest(config, timeout=1)
    else:
        with pytest.raises(layout.LabError, match="booted, filled and not crashed"):
            domains.wait_for_filled_guest(config, timeout=0.3)
