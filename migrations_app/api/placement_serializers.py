"""The destination ranking and the evacuation plan, as the API answers them
(read-only shapes of `migrations_app.domain.placement`'s results)."""

from __future__ import annotations

from rest_framework import serializers

from migrations_app.domain.convergence import LinkBasis, Outlook
from migrations_app.domain.options import BANDWIDTH_MAX_MIB_S
from migrations_app.domain.placement import Placement
from migrations_app.selectors import HostEvacuationPlan


class ForecastSerializer(serializers.Serializer):
    """Will a live migration's copy converge? (domain.convergence.forecast)"""

    outlook = serializers.ChoiceField(
        choices=Outlook.choices,
        help_text="will_not_converge: the guest dirties its memory at least 90 % as fast "
        "as the copy may move it (a warning, never a refusal); unknown: not measured "
        "(the message says why).",
    )
    message = serializers.CharField(help_text="The forecast in words, with the figures.")
    recommended_policy = serializers.CharField(
        allow_null=True,
        help_text="With will_not_converge: the convergence_policy that ends such a copy "
        "(postcopy_when_stalled, or pause_when_stalled when tunnelled).",
    )
    dirty_rate_bytes_s = serializers.IntegerField(
        allow_null=True, help_text="The guest's dirty rate as libvirt measured it."
    )
    rate_bytes_s = serializers.IntegerField(
        allow_null=True, help_text="What the copy may move: the lower of the cap and the link."
    )
    cap_bytes_s = serializers.IntegerField(
        allow_null=True, help_text="The bandwidth cap asked for; null: none."
    )
    link_bytes_s = serializers.IntegerField(allow_null=True)
    link_basis = serializers.ChoiceField(
        choices=LinkBasis.choices,
        allow_null=True,
        help_text="measured: the fastest sample of the last uncapped migrations that "
        "succeeded between the two hosts; default: 1 Gbit/s assumed.",
    )


class PlacementSerializer(serializers.Serializer):
    host_id = serializers.IntegerField(source="host.pk")
    host = serializers.CharField(source="host.name")
    address = serializers.CharField(source="host.address")
    status = serializers.CharField(source="host.status")
    maintenance = serializers.BooleanField(source="host.maintenance")
    fit = serializers.BooleanField(
        help_text="Could the VM go there now, as far as the portal can tell beforehand: "
        "reachable, not in maintenance, same hypervisor and arch, a CPU that accepts the "
        "VM's (libvirt's comparison), and memory for it after the VMs already migrating "
        "there. Unfit hosts come last."
    )
    score = serializers.FloatField(
        help_text="Higher is better: 100 x the share of the host's memory free after "
        "placing the VM, less 10 per migration coming in, 5 per migration going out, and "
        "1 per running VM. Compare scores among fit hosts."
    )
    memory_free_after_bytes = serializers.IntegerField(
        allow_null=True,
        help_text="The host's free memory less the VM's (live) and the memory of the VMs "
        "already migrating there; null if the host's memory was never read.",
    )
    reasons = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the score and the verdict rest on; for an unfit host the reasons "
        "it is unfit come first. A copy that would not converge (uncapped) says so "
        "last; it does not make the host unfit.",
    )
    convergence = ForecastSerializer(
        allow_null=True,
        help_text="A running VM: will an uncapped copy to this host converge? (the "
        "guest's dirty rate against the link between the hosts); null otherwise.",
    )


class DestinationsSerializer(serializers.Serializer):
    vm = serializers.UUIDField()
    vm_name = serializers.CharField()
    source = serializers.CharField()
    destinations = PlacementSerializer(many=True)


def destinations_data(*, vm, placements: list[Placement]) -> dict:
    return {
        "vm": str(vm.uuid),
        "vm_name": vm.name,
        "source": vm.host.name,
        "destinations": PlacementSerializer(placements, many=True).data,
    }


class EvacuateRequestSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField(
        default=True,
        help_text="true (default): only answer the plan, change nothing. false: put the "
        "host into maintenance and start the plan as an evacuation batch.",
    )
    reason = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        help_text="The maintenance reason recorded when the evacuation starts.",
    )
    bandwidth_mib_s = serializers.IntegerField(
        min_value=0,
        max_value=BANDWIDTH_MAX_MIB_S,
        default=0,
        help_text="Each evacuating migration's bandwidth limit, MiB/s; 0: unlimited. "
        "Keeps an evacuation from filling the hosts' link.",
    )


class _PlanRow(serializers.Serializer):
    order = serializers.IntegerField(help_text="The order the migrations are handed over in.")
    wave = serializers.IntegerField(
        help_text="When it can start under the per-host slot limits: 1 at once, 2 once "
        "one of the first wave ended, ..."
    )
    vm_uuid = serializers.CharField()
    vm_name = serializers.CharField()
    memory_mib = serializers.IntegerField()
    destination_id = serializers.IntegerField()
    destination = serializers.CharField()
    copies_storage = serializers.BooleanField(
        help_text="The VM has disks outside shared storage: they are copied (storage copy)."
    )
    score = serializers.FloatField()
    reasons = serializers.ListField(child=serializers.CharField())


class _Unmovable(serializers.Serializer):
    vm_uuid = serializers.CharField()
    vm_name = serializers.CharField()
    state = serializers.CharField()
    memory_mib = serializers.IntegerField()
    reasons = serializers.ListField(child=serializers.CharField())


class EvacuationSerializer(serializers.Serializer):
    host_id = serializers.IntegerField()
    host = serializers.CharField()
    dry_run = serializers.BooleanField()
    maintenance = serializers.BooleanField(help_text="The host's maintenance state now.")
    migrations = _PlanRow(many=True, help_text="Largest memory first; see `order`, `wave`.")
    unmovable = _Unmovable(
        many=True,
        help_text="VMs that stay, and why: host devices, not running (shut-off VMs stay "
        "defined on the host), already moving, or no fit destination.",
    )
    batch = serializers.IntegerField(
        allow_null=True, help_text="The evacuation batch started (dry_run false), else null."
    )


def evacuation_data(*, evacuation: HostEvacuationPlan, dry_run: bool, batch_id=None) -> dict:
    host = evacuation.host
    return {
        "host_id": host.pk,
        "host": host.name,
        "dry_run": dry_run,
        "maintenance": host.maintenance,
        "migrations": [
            {
                "order": row.order,
                "wave": row.wave,
                "vm_uuid": row.vm.uuid,
                "vm_name": row.vm.name,
                "memory_mib": row.vm.memory_bytes // 2**20,
                "destination_id": row.destination.host_id,
                "destination": row.destination.name,
                "copies_storage": row.vm.local_disks > 0,
                "score": row.score,
                "reasons": row.reasons,
            }
            for row in evacuation.plan.rows
        ],
        "unmovable": [
            {
                "vm_uuid": item.vm.uuid,
                "vm_name": item.vm.name,
                "state": item.vm.state,
                "memory_mib": item.vm.memory_bytes // 2**20,
                "reasons": item.reasons,
            }
            for item in evacuation.plan.unmovable
        ],
        "batch": batch_id,
    }
