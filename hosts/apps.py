from django.apps import AppConfig


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Hypervisor hosts"

    def ready(self) -> None:
        from hosts import system_checks  # noqa: F401  (registers the system checks)
