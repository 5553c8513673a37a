from django.apps import AppConfig


class MigrationsAppConfig(AppConfig):
    name = "migrations_app"
    label = "migrations_app"
    verbose_name = "Live migrations"
