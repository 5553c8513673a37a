"""Audit and report API (filled by the audit-reports issue)."""

app_name = "audit-api"
urlpatterns: list = []
