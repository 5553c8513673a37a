"""A host group's CPU baseline and host-passthrough CPUs, asked of the lab hosts' real
libvirt (issue #22, item 2): a refresh records each host's CPU (the capabilities'
<cpu>), `POST /api/host-groups/{id}/cpu-baseline/` has libvirt's baselineHypervisorCPU
compute the group's baseline over them, and libvirt's compareHypervisorCPU accepts a
host-passthrough VM between hosts whose CPUs match and refuses, in its own words, a
source CPU the destination lacks a feature of.

Not shown here: a host-passthrough *migration*. The lab's Linux guests run under TCG
(`-cpu host` needs KVM, and under KVM a Linux guest hangs on these machines, LAB.md),
and every lab host runs on the same CPU, so no lab host reports a narrower one: the
refusal is shown with a source CPU that names a feature this machine lacks. The
baseline is libvirt's for what the lab hosts' hypervisor can give a VM (no KVM inside
the lab hosts: a plain model such as kvm64), which is its answer to check here."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from hosts.connections import host_connect
from hosts.models import Host, HostGroup

pytestmark = [pytest.mark.lab, pytest.mark.django_db]

# A feature libvirt knows and that an x86 CPU of this kind lacks (checked below).
MISSING_FEATURE = "amx-tile"
PASSTHROUGH_VM = (
    "<domain type='kvm'><name>p</name><memory>65536</memory>"
    "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
    "<cpu mode='host-passthrough'/></domain>"
)


def _with_feature(cpu_xml: str, name: str) -> str:
    cpu = ET.fromstring(cpu_xml)
    ET.SubElement(cpu, "feature", name=name)
    return ET.tostring(cpu, encoding="unicode")


def test_group_cpu_baseline_and_passthrough_comparison(api, lab_registered):
    hosts = sorted(lab_registered.values(), key=lambda h: h.name)[:2]
    for host in hosts:
        host.refresh_from_db()
        cpu = ET.fromstring(host.cpu_xml)
        assert cpu.tag == "cpu" and cpu.findtext("model"), host.cpu_xml
        assert MISSING_FEATURE.replace("-", "_") not in open("/proc/cpuinfo").read()

    group = HostGroup.objects.get(pk=hosts[0].group_id)
    response = api.post(f"/api/host-groups/{group.pk}/cpu-baseline/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["cpu_baseline_model"], body
    assert set(body["cpu_baseline_hosts"]) >= {h.name for h in hosts}
    baseline = ET.fromstring(body["cpu_baseline_xml"])
    assert baseline.findtext("model") == body["cpu_baseline_model"]

    source, destination = hosts
    with host_connect(Host.objects.get(pk=destination.pk)) as conn:
        # The same CPU on both: a host-passthrough VM may move.
        ok, reason = conn.compare_cpu(domain_xml=PASSTHROUGH_VM, source_cpu_xml=source.cpu_xml)
        assert ok, reason
        assert "source host's CPU" in reason
        # A source CPU with a feature this one lacks: refused, with libvirt's reason.
        wider = _with_feature(source.cpu_xml, MISSING_FEATURE)
        ok, reason = conn.compare_cpu(domain_xml=PASSTHROUGH_VM, source_cpu_xml=wider)
        assert not ok
        assert reason.startswith("the destination's CPU cannot run the source host's CPU")
        assert MISSING_FEATURE in reason, reason  # libvirt names what is missing
