from django.urls import path

from migrations_app import views

urlpatterns = [path("reports/migrations/", views.migration_report, name="reports-migrations")]
