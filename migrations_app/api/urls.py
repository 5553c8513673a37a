from django.urls import path
from rest_framework.routers import DefaultRouter

from migrations_app.api import placement_views, views, webhook_views

app_name = "migrations-api"

router = DefaultRouter()
router.register("migrations", views.MigrationViewSet, basename="migration")
router.register("migration-batches", views.MigrationBatchViewSet, basename="migration-batch")
# Only vms/{uuid}/migrate/ and migrate/check/ (vms.api has the rest).
router.register("vms", views.VMMigrateViewSet, basename="vm")
# Only GET vms/{uuid}/destinations/ and POST hosts/{id}/evacuate/.
router.register("vms", placement_views.VMDestinationsViewSet, basename="vm-destinations")
router.register("hosts", placement_views.HostEvacuateViewSet, basename="host-evacuate")
router.register("webhooks", webhook_views.WebhookEndpointViewSet, basename="webhook")
router.register(
    "webhook-deliveries", webhook_views.WebhookDeliveryViewSet, basename="webhook-delivery"
)
urlpatterns = [
    *router.urls,
    path("reports/migrations/", views.MigrationReportView.as_view(), name="report-migrations"),
    path(
        "reports/migrations/export.csv",
        views.MigrationExportCSVView.as_view(),
        name="report-migrations-csv",
    ),
    path(
        "reports/migrations/export.json",
        views.MigrationExportJSONView.as_view(),
        name="report-migrations-json",
    ),
]
