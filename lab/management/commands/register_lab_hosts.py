"""Register the running lab hosts over ssh, as an administrator would (`make demo`)."""

from django.core.management.base import BaseCommand, CommandError

from audit.services import Actor
from hosts import services
from hosts.access import ssh_services
from hosts.models import Host
from lab import layout, machines
from lab.management.commands.lab import config_from_settings
from vms.services import host_refresh


class Command(BaseCommand):
    help = "Register every running lab host (manage.py lab up) and refresh it."

    def handle(self, *args, **options):
        config = config_from_settings()
        lab_hosts = [h for h in machines.status(config) if h.running]
        if not lab_hosts:
            raise CommandError("no running lab hosts: run `manage.py lab up` first")
        actor = Actor.system("make demo")
        shared = [str(layout.shared_storage_dir(config))]
        for lab_host in lab_hosts:
            host = Host.objects.filter(address=lab_host.address).first()
            if host is None:
                host = services.host_create(
                    actor=actor,
                    name=lab_host.name,
                    address=lab_host.address,
                    transport="ssh",
                    ssh_user=lab_host.ssh_user,
                    shared_storage_paths=shared,
                )
            if not host.ssh_access_set_up_at:
                host = ssh_services.host_ssh_access_set_up(
                    host=host, user=lab_host.ssh_user, password=lab_host.ssh_password, actor=actor
                )
            host = host_refresh(host=host, actor=actor)
            running = host.vms.filter(state="running").count()
            self.stdout.write(
                f"{host.name:8} {host.libvirt_uri:40} {host.status:12} {running} running VM(s)"
            )
