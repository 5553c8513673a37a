"""The lab's pure rules, without hosts: names and addresses, where a guest starts, the
cut tables' names, the hosts' config templates."""

from __future__ import annotations

from pathlib import Path
from string import Template

import pytest

from lab import domains, faults, host_setup, layout

CONFIG = layout.LabConfig(
    root=Path("/x/lab"), image_cache=Path("/x/cache"), first_address="127.0.0.82"
)


def _host(name: str, address: str = "127.0.0.82") -> layout.LabHost:
    return layout.LabHost(name, address, "", 22, "", "", running=True)


@pytest.mark.parametrize(
    ("index", "name", "address"), [(1, "lab-1", "127.0.0.82"), (3, "lab-3", "127.0.0.84")]
)
def test_host_names_and_addresses(index, name, address):
    assert layout.host_name(CONFIG, index) == name
    assert layout.host_address(CONFIG, index) == address
    assert layout.index_of(CONFIG, name) == index


def test_a_host_of_another_prefix_is_refused():
    with pytest.raises(layout.LabError):
        layout.index_of(CONFIG, "tlab-1")


HOME, OTHER = _host("lab-1"), _host("lab-2", "127.0.0.83")


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({}, HOME),  # defined nowhere: define it at home
        ({"lab-2": (OTHER, "shut off")}, OTHER),  # defined elsewhere only: start it there
        ({"lab-1": (HOME, "crashed"), "lab-2": (OTHER, "shut off")}, HOME),  # home preferred
        ({"lab-2": (OTHER, "running")}, None),  # up somewhere: left alone
        ({"lab-1": (HOME, "shut off"), "lab-2": (OTHER, "paused")}, None),
    ],
)
def test_where_a_guest_starts(states, expected):
    assert domains._start_target(states, HOME) == expected


@pytest.mark.parametrize(
    ("name", "plane", "table"),
    [
        ("tlab-2", faults.Plane.DATA, "tlab_cut_data_127_0_0_82"),
        ("lab-x-1", faults.Plane.CONTROL, "lab_x_cut_ctrl_127_0_0_82"),
        ("9lab-1", faults.Plane.CONTROL, "lab_9lab_cut_ctrl_127_0_0_82"),
        ("tlab-2", faults.Plane.LINK, "tlab_cut_link_127_0_0_82"),
    ],
)
def test_cut_table_names(name, plane, table):
    assert faults.cut_table_name(_host(name), plane) == table


def test_only_loopback_addresses_are_cut():
    with pytest.raises(layout.LabError):
        faults.cut_table_name(_host("lab-1", "192.0.2.1"), faults.Plane.DATA)


@pytest.mark.parametrize("template", ["libvirtd.conf", "qemu.conf", "sshd_config"])
def test_every_placeholder_of_the_config_templates_is_given(template):
    values = dict.fromkeys(
        ["address", "host_uuid", "state", "fifo", "listen_tls", "listen_tcp", "group"]
        + ["tcp_port", "ssh_port", "port_min", "port_max"],
        "x",
    )
    Template((host_setup.FILES / template).read_text()).substitute(values)  # KeyError if not


def test_the_systemctl_shim_names_the_holders_fifo():
    text = (host_setup.FILES / "systemctl").read_text()
    assert "FIFO /x/control" in Template(text).safe_substitute(fifo="/x/control")


def test_a_kept_guest_is_pointed_at_the_current_boot_files():
    from lab.guest_images import GuestImages

    xml = (
        "<domain><uuid>u-1</uuid><os><kernel>/old/vmlinuz-1</kernel>"
        "<initrd>/old/initrd-lab-aaa.cpio.gz</initrd><cmdline>labfill=8</cmdline></os></domain>"
    )
    boot = GuestImages(kernel=Path("/lab/boot/vmlinuz-2"), initrd=Path("/lab/boot/initrd-b&c"))
    updated = domains.boot_files_set(xml, boot)
    assert updated == (
        "<domain><uuid>u-1</uuid><os><kernel>/lab/boot/vmlinuz-2</kernel>"
        "<initrd>/lab/boot/initrd-b&amp;c</initrd><cmdline>labfill=8</cmdline></os></domain>"
    )
    assert domains.boot_files_set(updated, boot) == updated  # nothing to redefine then
