from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.permissions import CanReadAudit
from audit.services import Actor
from core.api.lists import LeanListMixin
from hosts.access.ssh_services import host_ssh_access_set_up
from hosts.permissions import CanManageHosts
from hosts.selectors import host_find
from migrations_app import attention, batches, report_exports, reports, requests
from migrations_app.api.attention_serializers import AttentionSerializer, ResolveSerializer
from migrations_app.api.pagination import MigrationCursorPagination
from migrations_app.api.placement_serializers import ForecastSerializer
from migrations_app.api.report_serializers import MigrationReportSerializer
from migrations_app.api.serializers import (
    BatchCreateSerializer,
    DirtyRateQuerySerializer,
    MigrateRequestSerializer,
    MigrationChangeSerializer,
    TuneSerializer,
)
from migrations_app.filters import MigrationFilterSet, MigrationReportFilterSet
from migrations_app.permissions import CanMigrate, migrate_refusals
from migrations_app.selectors import (
    batches_visible_to,
    migrations_for_report,
    migrations_shown_to,
    migrations_visible_to,
)
from migrations_app.serializers import (
    MigrationBatchSerializer,
    MigrationRequestedSerializer,
    MigrationSampleSerializer,
    MigrationSerializer,
)
from migrations_app.streaming import download_response
from vms.api.views import VMByUUIDMixin
from vms.models import VM
from vms.services import host_resolve_or_register

# The body is the API's Error ({"detail": ...}), filled in by portal.openapi.
CONFLICT = OpenApiResponse(
    description="Conflicts with the current state (e.g. already ended, already moving)."
)

CHECKS_RESPONSE = inline_serializer(
    "MigrationChecks",
    {
        "ok": serializers.BooleanField(help_text="No check failed."),
        "checks": serializers.ListField(
            child=serializers.DictField(),
            help_text="{name, status: pass|fail|skipped, message} each; a destination "
            "that is not registered yet gives a skipped `destination_registered` check.",
        ),
        "notes": serializers.ListField(
            child=serializers.CharField(),
            help_text="What the check did not do, e.g. that user and password were ignored.",
        ),
        "warnings": serializers.ListField(
            child=serializers.CharField(),
            help_text="What may go wrong without failing a check (they never make `ok` "
            'false): e.g. "will not converge without a policy: ...; recommended: the policy '
            'postcopy_when_stalled".',
        ),
        "convergence": ForecastSerializer(
            allow_null=True,
            help_text="The forecast of a live migration (null: offline, or the destination "
            "not registered or not checked).",
        ),
    },
)

DIRTY_RATE_PARAMETER = OpenApiParameter(
    "dirty_rate_s",
    int,
    description="Seconds libvirt measures the guest's dirty rate for the convergence "
    "forecast (virDomainStartDirtyRateCalc, page sampling: the guest is not slowed), "
    "while the pre-checks run: 2 (default, steadier) or 1; 0: do not measure. A reading is "
    "reused for 60 s (per VM and host) whatever this says.",
)


class MigrationViewSet(LeanListMixin, viewsets.ReadOnlyModelViewSet):
    """Migrations: history, live state, and control of the running ones."""

    serializer_class = MigrationSerializer
    filterset_class = MigrationFilterSet
    pagination_class = MigrationCursorPagination

    def get_queryset(self):
        if self.action in ("list", "retrieve"):
            return migrations_shown_to(self.request.user)
        return migrations_visible_to(self.request.user)

    def get_permissions(self):
        if self.action in ("cancel", "tune", "postcopy", "partial_update"):
            return [CanMigrate()]
        if self.action == "resolve":
            return [CanManageHosts()]
        return super().get_permissions()

    def _control(self, request: Request, call, **kwargs) -> Response:
        migration = call(migration=self.get_object(), actor=Actor.from_request(request), **kwargs)
        migration = self.get_queryset().get(pk=migration.pk)
        return Response(self.get_serializer(migration).data)

    @extend_schema(
        request=MigrationChangeSerializer, responses={200: MigrationSerializer, 409: CONFLICT}
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        """Change a scheduled migration's not_before, window_end and/or options; `409`
        once it has been queued or started. A not_before now due queues it at once."""
        serializer = MigrationChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._control(
            request, requests.migration_schedule_change, changes=serializer.validated_data
        )

    @extend_schema(request=None, responses={200: MigrationSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Take a scheduled or queued migration out of the queue, or abort a running one."""
        return self._control(request, requests.migration_cancel)

    @extend_schema(request=TuneSerializer, responses={200: MigrationSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def tune(self, request: Request, pk: str | None = None) -> Response:
        """Change max downtime and/or bandwidth (0: unlimited) of a running migration;
        libvirt's values are read back into `max_downtime_read_ms` and
        `bandwidth_read_mib_s` (8388607 or more: unlimited). Audited as migration.tuned."""
        serializer = TuneSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._control(request, requests.migration_tune, **serializer.validated_data)

    @extend_schema(request=None, responses={200: MigrationSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def postcopy(self, request: Request, pk: str | None = None) -> Response:
        """Switch a running migration that allows it to post-copy."""
        return self._control(request, requests.migration_start_postcopy)

    @extend_schema(responses={200: AttentionSerializer, 409: CONFLICT}, filters=False)
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def attention(self, request: Request, pk: str | None = None) -> Response:
        """What each host says now about a migration that needs attention, and which
        resolutions are safe for that; 409 if it does not need attention."""
        found = attention.migration_attention(migration=self.get_object())
        return Response(AttentionSerializer(found).data)

    @extend_schema(
        request=ResolveSerializer,
        responses={
            200: MigrationSerializer,
            409: CONFLICT,
            502: OpenApiResponse(description="A host refused or dropped an action."),
        },
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        """Resolve a migration that needs attention (host admin role): the hosts are
        asked again, and the action is refused (409, saying why) unless it is safe now.
        keep_destination ends it succeeded, keep_source and mark_resolved failed,
        resume_postcopy hands it back to a worker (migrating). Audited as
        migration.resolved with the action, the reason and what each host said."""
        serializer = ResolveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._control(
            request,
            attention.migration_resolve,
            resolution=serializer.validated_data["action"],
            reason=serializer.validated_data["reason"],
        )

    # Neither the list's filters nor its pages: every sample, in one list.
    @extend_schema(responses=MigrationSampleSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], pagination_class=None)
    def samples(self, request: Request, pk: str | None = None) -> Response:
        """Every progress sample, oldest first."""
        samples = self.get_object().samples.order_by("taken_at", "id")
        return Response(MigrationSampleSerializer(samples, many=True).data)


class MigrationBatchViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Migration batches: several VMs moved by one request, at most `max_parallel` at a
    time; each child is an ordinary migration (/api/migrations/{id}/)."""

    serializer_class = MigrationBatchSerializer

    def get_queryset(self):
        return batches_visible_to(self.request.user)

    def get_permissions(self):
        if self.action in ("create", "cancel"):
            return [CanMigrate()]
        return super().get_permissions()

    @extend_schema(
        request=BatchCreateSerializer, responses={202: MigrationBatchSerializer, 409: CONFLICT}
    )
    def create(self, request: Request) -> Response:
        """Queue a batch: answers 202 at once with the batch and its queued children.
        400 names the field (items[i].vm, items[i].destination, items[i].options.<option>,
        options.<option>, max_parallel); 409 if a VM already has an active migration
        (then nothing is created)."""
        serializer = BatchCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self._items_check(request.user, serializer.validated_data["items"])
        batch = batches.batch_create(actor=Actor.from_request(request), **serializer.validated_data)
        location = f"/api/migration-batches/{batch.pk}/"
        data = MigrationBatchSerializer(batch).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": location})

    @staticmethod
    def _items_check(user, items) -> None:
        """Each item as its own migrate request: 403 naming `items[i]` with the reason."""
        for index, item in enumerate(items):
            if item.destination is None:
                continue  # placed by the ranking, inside the VM's host group
            reasons = migrate_refusals(
                user,
                source=item.vm.host,
                remote_host=item.destination.name,
                destination=item.destination,
                credentials_given=False,
            )
            if reasons:
                raise PermissionDenied(f"items[{index}]: " + " ".join(reasons))

    @extend_schema(request=None, responses={200: MigrationBatchSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel the batch: queued children are cancelled, running ones are asked to
        cancel; the batch ends cancelled when none is active. 409 if it already ended."""
        batch = batches.batch_cancel(batch=self.get_object(), actor=Actor.from_request(request))
        return Response(MigrationBatchSerializer(batch).data)


class VMMigrateViewSet(VMByUUIDMixin, viewsets.GenericViewSet):
    """Migrating one VM: POST /api/vms/{uuid}/migrate/ and /api/vms/{uuid}/migrate/check/
    (the rest of /api/vms/ is vms.api.views.VMViewSet). The operator role."""

    queryset = VM.objects.all()
    permission_classes = [CanMigrate]
    # What OPTIONS describes.
    serializer_class = MigrateRequestSerializer

    def _request_input(self, request: Request):
        vm = self.get_object()
        serializer = MigrateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        reasons = migrate_refusals(
            request.user,
            source=vm.host,
            remote_host=data["remote_host"],
            destination=host_find(remote_host=data["remote_host"]),
            credentials_given=bool(data.get("user") or data.get("password")),
        )
        if reasons:
            raise PermissionDenied(" ".join(reasons))
        # Live or offline follows the VM's state when `live` is not given (400 on live).
        requested = requests.migration_options_for_vm(
            vm=vm, options=data["options"], given=data["given"]
        )
        return vm, data, Actor.from_request(request), requested

    @extend_schema(
        request=MigrateRequestSerializer,
        responses={202: MigrationRequestedSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def migrate(self, request: Request, uuid: str | None = None) -> Response:
        """Queue a migration of this VM; answers 202 at once with the record. A
        `remote_host` not registered yet is registered first (transport ssh); with
        `user` + `password`, password-less ssh access is set up first. Both are for host
        admins: anyone else gets 403 naming the field, and nothing changes."""
        vm, data, actor, requested = self._request_input(request)
        destination = host_resolve_or_register(
            remote_host=data["remote_host"], actor=actor, group_id=vm.host.group_id
        )
        user, password = data.get("user", ""), data.get("password", "")
        if user:
            # Used once, here, to set up password-less ssh; never queued or stored.
            destination = host_ssh_access_set_up(
                host=destination, user=user, password=password, actor=actor
            )
        migration = requests.migration_request(
            vm=vm,
            destination=destination,
            options=requested.options,
            actor=actor,
            not_before=data.get("not_before"),
            window_end=data.get("window_end"),
        )
        location = f"/api/migrations/{migration.pk}/"
        data = {**MigrationSerializer(migration).data, "live_from": requested.live_from.value}
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": location})

    @extend_schema(
        request=MigrateRequestSerializer,
        responses=CHECKS_RESPONSE,
        parameters=[DIRTY_RATE_PARAMETER],
    )
    @action(detail=True, methods=["post"], url_path="migrate/check")
    def migrate_check(self, request: Request, uuid: str | None = None) -> Response:
        """Run the pre-checks of a migration without migrating; changes nothing. A
        `remote_host` not registered yet is not registered nor contacted (a skipped
        check says so); `user` and `password` are never used (a note says so). As for
        the migration itself, an unregistered `remote_host` or a `user` is for host
        admins only (403 naming the field). For a live migration it also forecasts
        whether the copy converges (`convergence`): the guest's dirty rate, measured
        now by libvirt, against the bandwidth cap and the link between the hosts (the
        fastest uncapped migration between them, else 1 Gbit/s assumed). One that will
        not converge gives a warning and a recommended policy; the check still passes
        (docs/migration-policies.md)."""
        query = DirtyRateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        vm, data, _actor, requested = self._request_input(request)
        report = requests.migration_check(
            vm=vm,
            remote_host=data["remote_host"],
            options=requested.options,
            credentials_given=bool(data.get("user") or data.get("password")),
            user=data.get("user", ""),
            dirty_rate_s=query.validated_data["dirty_rate_s"],
            live_from=requested.live_from,
        )
        return Response(report.as_dict())


class _ReportScopeView(APIView):
    permission_classes = [CanReadAudit]
    filterset_class = MigrationReportFilterSet  # for the schema; migrations_for_report applies it


class MigrationReportView(_ReportScopeView):
    """Migration figures for a time range (default: the last 30 days) and filters."""

    @extend_schema(responses=MigrationReportSerializer)
    def get(self, request: Request) -> Response:
        migrations, scope = migrations_for_report(params=request.query_params)
        report = reports.migration_report_build(migrations=migrations)
        return Response({"scope": scope.as_dict(), **report})


class CSVRenderer(BaseRenderer):
    """Lets clients ask for text/csv; the export itself is a streamed response."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data)  # only errors get here


def _filename(scope, extension: str) -> str:
    return f"migrations_{scope.since:%Y%m%d}-{scope.until:%Y%m%d}.{extension}"


class MigrationExportCSVView(_ReportScopeView):
    """Every migration of the report's scope as CSV: one row per migration, every field
    of the record and libvirt's completed statistics (columns `stats.*`). Streamed."""

    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(responses={(200, "text/csv"): str})
    def get(self, request: Request):
        migrations, scope = migrations_for_report(params=request.query_params)
        return download_response(
            request,
            report_exports.migrations_csv_stream(migrations=migrations),
            content_type="text/csv; charset=utf-8",
            filename=_filename(scope, "csv"),
        )


class MigrationExportJSONView(_ReportScopeView):
    """The same as the CSV export, as JSON: {"scope": ..., "migrations": [...]}. Streamed."""

    @extend_schema(responses={(200, "application/json"): dict})
    def get(self, request: Request):
        migrations, scope = migrations_for_report(params=request.query_params)
        return download_response(
            request,
            report_exports.migrations_json_stream(migrations=migrations, scope=scope.as_dict()),
            content_type="application/json",
            filename=_filename(scope, "json"),
        )
