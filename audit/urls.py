"""Audit and report pages (filled by the audit-reports issue)."""

from django.urls import path

from audit import views

urlpatterns = [
    path("audit/", views.audit_list, name="audit-list"),
    path("reports/migrations/", views.migration_report, name="reports-migrations"),
]
