from django.urls import path
from rest_framework.routers import SimpleRouter

from audit.api import views

app_name = "audit-api"

router = SimpleRouter()
router.register("audit", views.AuditEventViewSet, basename="audit-event")
urlpatterns = [
    path("audit/", views.AuditEventListView.as_view(), name="audit-event-list"),
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
    *router.urls,
]
