"""The plain data the gateway reads out of libvirt's XML (hosts.hypervisor), and the
shell commands the access package runs on hosts (hosts.access.ssh)."""

import subprocess

import pytest

from hosts.access import ssh
from hosts.hypervisor import (
    ACTIVE_STATES,
    EXECUTING_STATES,
    LIVE_MOVABLE_STATES,
    STOPPED_STATES,
    UP_STATES,
    DiskInfo,
    DomainState,
    capabilities_xml_read,
    cpu_to_compare,
    domain_xml_read,
    pool_target_path,
    version_string,
)

CAPABILITIES = """<capabilities><host><uuid>u-1</uuid>
<cpu><arch>x86_64</arch><model>Skylake</model><vendor>Intel</vendor></cpu>
<migration_features><live/><uri_transports><uri_transport>tcp</uri_transport>
<uri_transport>rdma</uri_transport></uri_transports></migration_features></host></capabilities>"""

DOMAIN = """<domain type='qemu'><os><type arch='x86_64' machine='pc-q35'>hvm</type></os>
<cpu mode='custom'><model>qemu64</model></cpu><devices>
<disk device='disk'><driver type='qcow2'/><source file='/img/a.qcow2'/><target dev='vda'/></disk>
<disk device='cdrom'><target dev='sda'/></disk><hostdev/></devices></domain>"""


@pytest.mark.parametrize(
    ("number", "text"), [(9_000_000, "9.0.0"), (7_002_001, "7.2.1"), (0, "0.0.0")]
)
def test_version_string(number, text):
    assert version_string(number) == text


def test_capabilities_xml_read():
    caps = capabilities_xml_read(CAPABILITIES)
    assert (caps.arch, caps.cpu_model, caps.cpu_vendor, caps.host_uuid) == (
        "x86_64",
        "Skylake",
        "Intel",
        "u-1",
    )
    assert caps.migration_features == {"live": True, "uri_transports": ["tcp", "rdma"]}
    assert caps.cpu_xml.startswith("<cpu><arch>x86_64</arch><model>Skylake</model>")
    empty = capabilities_xml_read("<capabilities/>")
    assert (empty.arch, empty.host_uuid, empty.migration_features) == ("", "", {})
    assert empty.cpu_xml == ""


def test_domain_xml_read():
    domain = domain_xml_read(DOMAIN)
    assert (domain.arch, domain.machine_type, domain.domain_type, domain.has_hostdev) == (
        "x86_64",
        "pc-q35",
        "qemu",
        True,
    )
    assert domain.disks == [
        DiskInfo("vda", "/img/a.qcow2", "disk", "qcow2", None),
        DiskInfo("sda", "", "cdrom", "", None),
    ]


@pytest.mark.parametrize(
    ("cpu", "verdict"),
    [
        ("", (True, "the VM uses the hypervisor's default CPU model")),
        (
            "<cpu mode='host-passthrough'/>",
            (False, "the VM uses CPU mode 'host-passthrough', tied to its host's CPU"),
        ),
        (
            "<cpu mode='maximum'/>",
            (False, "the VM uses CPU mode 'maximum', tied to its host's CPU"),
        ),
        ("<cpu mode='custom'><model>qemu64</model></cpu>", None),
    ],
)
def test_cpu_to_compare(cpu, verdict):
    compared = cpu_to_compare(
        f"<domain type='kvm'><os><type arch='x86_64' machine='pc'/></os>{cpu}</domain>"
    )
    assert compared.verdict == verdict
    if verdict is None:
        assert (compared.arch, compared.machine, compared.virt_type) == ("x86_64", "pc", "kvm")
        assert compared.xml.startswith('<cpu mode="custom">')


SOURCE_CPU = "<cpu><arch>x86_64</arch><model>EPYC</model></cpu>"


@pytest.mark.parametrize(
    ("cpu", "verdict", "xml"),
    [
        # host-passthrough: the source host's CPU is what the destination must run.
        ("<cpu mode='host-passthrough'/>", None, SOURCE_CPU),
        (
            "<cpu mode='maximum'/>",
            (False, "the VM uses CPU mode 'maximum', tied to its host's CPU"),
            "",
        ),
        ("<cpu mode='custom'><model>qemu64</model></cpu>", None, '<cpu mode="custom">'),
    ],
)
def test_cpu_to_compare_with_the_source_hosts_cpu(cpu, verdict, xml):
    compared = cpu_to_compare(
        f"<domain type='kvm'><os><type arch='x86_64' machine='pc'/></os>{cpu}</domain>",
        SOURCE_CPU,
    )
    assert compared.verdict == verdict
    assert compared.xml.startswith(xml)


def test_pool_target_path():
    assert pool_target_path("<pool><target><path>/var/img</path></target></pool>") == "/var/img"
    assert pool_target_path("<pool/>") == ""


def test_state_sets():
    """libvirt's active domains include a pm-suspended one; the portal shows it as not up."""
    assert DomainState.SUSPENDED in ACTIVE_STATES - UP_STATES
    assert EXECUTING_STATES <= UP_STATES and LIVE_MOVABLE_STATES <= UP_STATES
    assert not STOPPED_STATES & ACTIVE_STATES
    assert "running" in UP_STATES  # plain strings from the database match


@pytest.mark.parametrize(
    ("address", "port", "line"),
    [
        ("10.0.0.1", 22, "10.0.0.1 ssh-ed25519 AAAA"),
        ("10.0.0.1", 2222, "[10.0.0.1]:2222 ssh-ed25519 AAAA"),
        ("fd00::1", 2222, "[fd00::1]:2222 ssh-ed25519 AAAA"),
    ],
)
def test_known_hosts_line(address, port, line):
    assert ssh.known_hosts_line(address, port, "ssh-ed25519 AAAA") == line


@pytest.mark.parametrize(
    ("user", "command"),
    [("root", "sh -c 'echo hi'"), ("admin", "sudo -n sh -c 'echo hi'")],
)
def test_as_root(user, command):
    assert ssh.as_root("echo hi", user) == command


def _sh(command: str) -> None:
    subprocess.run(["sh", "-c", command], check=True)


def test_line_append_and_remove(tmp_path):
    path = tmp_path / "known_hosts"
    for _ in range(2):  # once only
        _sh(ssh.line_append_command(str(path), "a b"))
    _sh(ssh.line_append_command(str(path), "c d"))
    assert path.read_text() == "a b\nc d\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    _sh(ssh.line_remove_command(str(path), "a b"))
    assert path.read_text() == "c d\n"


def test_authorized_key_command(tmp_path):
    for _ in range(2):
        _sh(ssh.authorized_key_command('restrict,command="x" ssh-ed25519 AAAA', home=str(tmp_path)))
    keys = tmp_path / ".ssh" / "authorized_keys"
    assert keys.read_text() == 'restrict,command="x" ssh-ed25519 AAAA\n'
    assert oct((tmp_path / ".ssh").stat().st_mode & 0o777) == "0o700"
