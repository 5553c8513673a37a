from django.apps import AppConfig


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Hypervisor hosts"

    def ready(self) -> None:
        from audit.signals import ldap_groups_seen
        from hosts import system_checks  # noqa: F401  (registers the system checks)
        from hosts.ldap_grants import on_ldap_login

        ldap_groups_seen.connect(on_ldap_login, dispatch_uid="hosts.ldap_grants")
