"""The audit log page."""

from django.urls import path

from audit import views

urlpatterns = [
    path("audit/", views.audit_list, name="audit-list"),
]
